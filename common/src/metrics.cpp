#include "warren/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <stdexcept>

namespace warren::metrics {

namespace {

bool name_char(char c, bool first, bool colon_ok) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') return true;
  if (colon_ok && c == ':') return true;
  return !first && c >= '0' && c <= '9';
}

std::string_view type_name(Family::Type t) {
  switch (t) {
    case Family::Type::kCounter:
      return "counter";
    case Family::Type::kGauge:
      return "gauge";
    case Family::Type::kHistogram:
      return "histogram";
  }
  return "untyped";
}

void append_uint(std::string& out, uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, end);
}

void append_int(std::string& out, int64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, end);
}

std::vector<double> checked_buckets(const std::string& name, std::vector<double> b) {
  if (!b.empty() && std::isinf(b.back()) && b.back() > 0) b.pop_back();  // +Inf is implied
  for (size_t i = 0; i < b.size(); ++i) {
    if (!std::isfinite(b[i]) || (i > 0 && !(b[i - 1] < b[i]))) {
      throw std::invalid_argument(name + ": buckets must be finite and strictly increasing");
    }
  }
  return b;
}

}  // namespace

bool valid_metric_name(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (!name_char(name[i], i == 0, true)) return false;
  }
  return true;
}

bool valid_label_name(std::string_view name) {
  if (name.empty() || name.substr(0, 2) == "__") return false;  // "__" is reserved
  for (size_t i = 0; i < name.size(); ++i) {
    if (!name_char(name[i], i == 0, false)) return false;
  }
  return true;
}

std::string escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string escape_help(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, end);
}

// ---------------------------------------------------------------- Histogram

Histogram::Histogram(const std::vector<double>* bounds)
    : bounds_(bounds), counts_(new std::atomic<uint64_t>[bounds->size() + 1]) {
  for (size_t i = 0; i <= bounds_->size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::observe(double v) {
  if (std::isnan(v)) return;  // would poison _sum forever
  // Buckets are "less than or equal": the first bound >= v.
  size_t i = std::lower_bound(bounds_->begin(), bounds_->end(), v) - bounds_->begin();
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.cumulative.reserve(bounds_->size() + 1);
  uint64_t acc = 0;
  for (size_t i = 0; i <= bounds_->size(); ++i) {
    acc += counts_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(acc);
  }
  // _count is derived from the buckets so that _count == +Inf bucket even
  // while other threads observe.
  s.count = acc;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

// ---------------------------------------------------------------- Family

Family::Family(std::string name, std::string help, std::vector<std::string> label_names, Type type)
    : name_(std::move(name)),
      help_(std::move(help)),
      label_names_(std::move(label_names)),
      type_(type) {
  if (!valid_metric_name(name_)) throw std::invalid_argument("invalid metric name: " + name_);
  for (size_t i = 0; i < label_names_.size(); ++i) {
    const auto& l = label_names_[i];
    if (!valid_label_name(l)) {
      throw std::invalid_argument(name_ + ": invalid label name: " + l);
    }
    if (type_ == Type::kHistogram && l == "le") {
      throw std::invalid_argument(name_ + ": histogram cannot have label \"le\"");
    }
    for (size_t j = 0; j < i; ++j) {
      if (label_names_[j] == l) throw std::invalid_argument(name_ + ": duplicate label " + l);
    }
  }
}

std::vector<std::string> Family::normalize(const std::vector<std::string>& values) const {
  std::vector<std::string> v(values.begin(),
                             values.begin() + std::min(values.size(), label_names_.size()));
  while (v.size() < label_names_.size()) v.emplace_back(kUnknown);
  return v;
}

std::vector<std::string> Family::by_name(NamedLabels labels) const {
  std::vector<std::string> v(label_names_.size(), std::string(kUnknown));
  for (const auto& [k, val] : labels) {
    for (size_t i = 0; i < label_names_.size(); ++i) {
      if (label_names_[i] == k) {
        v[i] = std::string(val);
        break;
      }
    }
  }
  return v;
}

void Family::write_series_name(std::string& out, std::string_view suffix,
                               const std::vector<std::string>& values, std::string_view extra_label,
                               std::string_view extra_value) const {
  out += name_;
  out += suffix;
  if (label_names_.empty() && extra_label.empty()) return;
  out += '{';
  bool first = true;
  for (size_t i = 0; i < label_names_.size(); ++i) {
    if (!first) out += ',';
    first = false;
    out += label_names_[i];
    out += "=\"";
    out += escape_label_value(values[i]);
    out += '"';
  }
  if (!extra_label.empty()) {
    if (!first) out += ',';
    out += extra_label;
    out += "=\"";
    out += extra_value;  // only "le" values we format ourselves
    out += '"';
  }
  out += '}';
}

void Family::render(std::string& out) const {
  out += "# HELP ";
  out += name_;
  out += ' ';
  out += escape_help(help_);
  out += "\n# TYPE ";
  out += name_;
  out += ' ';
  out += type_name(type_);
  out += '\n';
  std::lock_guard lk(mu_);
  render_series(out);
}

// ---------------------------------------------------------------- Counter

CounterFamily::CounterFamily(std::string name, std::string help,
                             std::vector<std::string> label_names)
    : Family(std::move(name), std::move(help), std::move(label_names), Type::kCounter) {
  if (this->label_names().empty()) series_.try_emplace({});  // render 0 from the start
}

Counter* CounterFamily::with(const std::vector<std::string>& values) {
  auto key = normalize(values);
  std::lock_guard lk(mu_);
  return &series_.try_emplace(std::move(key)).first->second;
}

void CounterFamily::render_series(std::string& out) const {
  for (const auto& [values, c] : series_) {
    write_series_name(out, "", values);
    out += ' ';
    append_uint(out, c.value());
    out += '\n';
  }
}

// ---------------------------------------------------------------- Gauge

GaugeFamily::GaugeFamily(std::string name, std::string help, std::vector<std::string> label_names)
    : Family(std::move(name), std::move(help), std::move(label_names), Type::kGauge) {
  if (this->label_names().empty()) series_.try_emplace({});
}

Gauge* GaugeFamily::with(const std::vector<std::string>& values) {
  auto key = normalize(values);
  std::lock_guard lk(mu_);
  return &series_.try_emplace(std::move(key)).first->second;
}

void GaugeFamily::set_callback(const std::vector<std::string>& values, std::function<double()> fn) {
  auto key = normalize(values);
  std::lock_guard lk(mu_);
  callbacks_[std::move(key)] = std::move(fn);
}

void GaugeFamily::remove_callback(const std::vector<std::string>& values) {
  auto key = normalize(values);
  std::lock_guard lk(mu_);
  callbacks_.erase(key);
}

void GaugeFamily::render_series(std::string& out) const {
  // Merge the two sorted maps so the output stays sorted by label values.
  auto g = series_.begin();
  auto cb = callbacks_.begin();
  while (g != series_.end() || cb != callbacks_.end()) {
    bool take_cb = cb != callbacks_.end() && (g == series_.end() || !(g->first < cb->first));
    if (take_cb) {
      if (g != series_.end() && g->first == cb->first) ++g;  // callback wins
      double v;
      try {
        v = cb->second ? cb->second() : std::nan("");
      } catch (...) {
        v = std::nan("");  // a scrape must not fail because one callback did
      }
      write_series_name(out, "", cb->first);
      out += ' ';
      out += format_value(v);
      out += '\n';
      ++cb;
    } else {
      write_series_name(out, "", g->first);
      out += ' ';
      append_int(out, g->second.value());
      out += '\n';
      ++g;
    }
  }
}

// ---------------------------------------------------------------- Histogram family

HistogramFamily::HistogramFamily(std::string name, std::string help,
                                 std::vector<std::string> label_names, std::vector<double> buckets)
    : Family(std::move(name), std::move(help), std::move(label_names), Type::kHistogram),
      buckets_(checked_buckets(this->name(), std::move(buckets))) {
  if (this->label_names().empty()) series_.try_emplace({}, &buckets_);
}

Histogram* HistogramFamily::with(const std::vector<std::string>& values) {
  auto key = normalize(values);
  std::lock_guard lk(mu_);
  return &series_.try_emplace(std::move(key), &buckets_).first->second;
}

void HistogramFamily::render_series(std::string& out) const {
  std::vector<std::string> les;
  les.reserve(buckets_.size() + 1);
  for (double b : buckets_) les.push_back(format_value(b));
  les.emplace_back("+Inf");
  for (const auto& [values, h] : series_) {
    auto s = h.snapshot();
    for (size_t i = 0; i < les.size(); ++i) {
      write_series_name(out, "_bucket", values, "le", les[i]);
      out += ' ';
      append_uint(out, s.cumulative[i]);
      out += '\n';
    }
    write_series_name(out, "_sum", values);
    out += ' ';
    out += format_value(s.sum);
    out += '\n';
    write_series_name(out, "_count", values);
    out += ' ';
    append_uint(out, s.count);
    out += '\n';
  }
}

std::vector<double> istio_duration_ms_buckets() {
  return {0.5,  1,    5,     10,    25,    50,     100,    250,     500,    1000,
          2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000};
}

std::vector<double> istio_bytes_buckets() {
  return {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000};
}

// ---------------------------------------------------------------- Registry

template <typename F, typename... Args>
F& Registry::get_or_add(Family::Type type, std::string name, std::string help,
                        std::vector<std::string> label_names, Args&&... args) {
  std::lock_guard lk(mu_);
  auto it = families_.find(name);
  if (it != families_.end()) {
    auto* f = dynamic_cast<F*>(it->second.get());
    if (f == nullptr || f->type() != type || f->label_names() != label_names) {
      throw std::invalid_argument("metric " + name +
                                  " already registered with another type or labels");
    }
    return *f;
  }
  auto fam = std::make_unique<F>(name, std::move(help), std::move(label_names),
                                 std::forward<Args>(args)...);
  F& ref = *fam;
  families_.emplace(std::move(name), std::move(fam));
  return ref;
}

CounterFamily& Registry::counter(std::string name, std::string help,
                                 std::vector<std::string> label_names) {
  return get_or_add<CounterFamily>(Family::Type::kCounter, std::move(name), std::move(help),
                                   std::move(label_names));
}

GaugeFamily& Registry::gauge(std::string name, std::string help,
                             std::vector<std::string> label_names) {
  return get_or_add<GaugeFamily>(Family::Type::kGauge, std::move(name), std::move(help),
                                 std::move(label_names));
}

HistogramFamily& Registry::histogram(std::string name, std::string help,
                                     std::vector<std::string> label_names,
                                     std::vector<double> buckets) {
  auto& f = get_or_add<HistogramFamily>(Family::Type::kHistogram, name, std::move(help),
                                        std::move(label_names), buckets);
  if (checked_buckets(name, std::move(buckets)) != f.buckets()) {
    throw std::invalid_argument("metric " + name + " already registered with other buckets");
  }
  return f;
}

void Registry::gauge_callback(std::string name, std::string help, std::function<double()> fn) {
  gauge(std::move(name), std::move(help)).set_callback({}, std::move(fn));
}

std::string Registry::render() const {
  std::string out;
  std::lock_guard lk(mu_);
  for (const auto& [name, fam] : families_) fam->render(out);
  return out;
}

}  // namespace warren::metrics
