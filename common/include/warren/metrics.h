// Prometheus metrics: counters, gauges and histograms with label sets,
// rendered in the text exposition format 0.0.4.
//
// Hot path: resolve a label set ONCE (per connection, per workload...) to a
// handle and keep the pointer; an increment is then a relaxed atomic add,
// with no lookup, lock or allocation:
//
//   auto& opened = reg.counter("istio_tcp_connections_opened_total",
//                              "Connections opened.", {"reporter", "source_workload"});
//   metrics::Counter* c = opened.with({{"reporter", "destination"},
//                                      {"source_workload", "productpage-v1"}});
//   c->inc();
//
// Handles stay valid for the life of the Registry (series are never removed).
//
// Conventions (callers' job, see REFERENCE.md "Metrics and logs"):
//   - A label value that is not known is written "unknown", never "".
//     with() fills missing named labels (and missing trailing positional
//     values) with "unknown" itself.
//   - Counter names end in "_total" and use base units, or `promtool check
//     metrics` complains. (Istio's istio_request_duration_milliseconds is the
//     one deliberate exception: dashboards expect that name.)
//
// Registering a family with an invalid name, invalid label names, unsorted
// histogram buckets, or a name already registered with a different type or
// labels is a programming error and throws std::invalid_argument; do it at
// start-up, never inside a libuv callback. Re-registering an identical family
// returns the existing one. Nothing on the data path (with(), inc(), set(),
// observe()) throws except std::bad_alloc.
//
// Thread safety: increments from any thread; with() and render() take a
// per-family mutex; callback gauges are invoked by render() under that mutex
// and must not call back into the Registry.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace warren::metrics {

// Written by callers for label values they do not know.
inline constexpr std::string_view kUnknown = "unknown";

class Counter {
 public:
  void inc(uint64_t n = 1) { v_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

// Integer gauge (connections, pool sizes, bytes): may go negative.
class Gauge {
 public:
  void set(int64_t v) { v_.store(v, std::memory_order_relaxed); }
  void inc(int64_t n = 1) { v_.fetch_add(n, std::memory_order_relaxed); }
  void dec(int64_t n = 1) { v_.fetch_sub(n, std::memory_order_relaxed); }
  int64_t value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> v_{0};
};

class Histogram {
 public:
  // `bounds` must outlive the histogram (the family owns it).
  explicit Histogram(const std::vector<double>* bounds);
  void observe(double v);

  struct Snapshot {
    std::vector<uint64_t> cumulative;  // one per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;  // == cumulative.back()
  };
  Snapshot snapshot() const;

 private:
  const std::vector<double>* bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_->size() + 1, not cumulative
  std::atomic<double> sum_{0};
};

// Label values by name, in any order; names the family does not have are ignored.
using NamedLabels = std::initializer_list<std::pair<std::string_view, std::string_view>>;

class Family {
 public:
  enum class Type { kCounter, kGauge, kHistogram };
  Family(std::string name, std::string help, std::vector<std::string> label_names, Type type);
  virtual ~Family() = default;
  Family(const Family&) = delete;
  Family& operator=(const Family&) = delete;

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  Type type() const { return type_; }

  // Appends "# HELP", "# TYPE" and every series.
  void render(std::string& out) const;

 protected:
  // Positional values, padded with "unknown" / truncated to the label count.
  std::vector<std::string> normalize(const std::vector<std::string>& values) const;
  std::vector<std::string> by_name(NamedLabels labels) const;
  // Appends `name{l1="v1",...extra}` (no braces when there are no labels).
  void write_series_name(std::string& out, std::string_view suffix,
                         const std::vector<std::string>& values, std::string_view extra_label = {},
                         std::string_view extra_value = {}) const;
  virtual void render_series(std::string& out) const = 0;

  mutable std::mutex mu_;

 private:
  std::string name_, help_;
  std::vector<std::string> label_names_;
  Type type_;
};

class CounterFamily final : public Family {
 public:
  CounterFamily(std::string name, std::string help, std::vector<std::string> label_names);
  // Stable pointer to the series for these label values (created at 0).
  Counter* with(const std::vector<std::string>& values);
  Counter* with(NamedLabels labels) { return with(by_name(labels)); }

 private:
  void render_series(std::string& out) const override;
  std::map<std::vector<std::string>, Counter> series_;
};

class GaugeFamily final : public Family {
 public:
  GaugeFamily(std::string name, std::string help, std::vector<std::string> label_names);
  Gauge* with(const std::vector<std::string>& values);
  Gauge* with(NamedLabels labels) { return with(by_name(labels)); }

  // A series whose value is computed at scrape time (pool sizes, RSS...).
  // Replaces any earlier callback for the same values; if a plain Gauge has
  // the same values too, the callback's value is the one rendered.
  void set_callback(const std::vector<std::string>& values, std::function<double()> fn);
  // After this returns the callback is not called again.
  void remove_callback(const std::vector<std::string>& values);

 private:
  void render_series(std::string& out) const override;
  std::map<std::vector<std::string>, Gauge> series_;
  std::map<std::vector<std::string>, std::function<double()>> callbacks_;
};

class HistogramFamily final : public Family {
 public:
  HistogramFamily(std::string name, std::string help, std::vector<std::string> label_names,
                  std::vector<double> buckets);
  Histogram* with(const std::vector<std::string>& values);
  Histogram* with(NamedLabels labels) { return with(by_name(labels)); }
  const std::vector<double>& buckets() const { return buckets_; }

 private:
  void render_series(std::string& out) const override;
  std::vector<double> buckets_;  // strictly increasing, finite; +Inf implied
  std::map<std::vector<std::string>, Histogram> series_;
};

// Istio's bucket boundaries for istio_request_duration_milliseconds.
std::vector<double> istio_duration_ms_buckets();
// Istio's bucket boundaries for istio_request_bytes / istio_response_bytes.
std::vector<double> istio_bytes_buckets();

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  CounterFamily& counter(std::string name, std::string help,
                         std::vector<std::string> label_names = {});
  GaugeFamily& gauge(std::string name, std::string help, std::vector<std::string> label_names = {});
  HistogramFamily& histogram(std::string name, std::string help,
                             std::vector<std::string> label_names, std::vector<double> buckets);
  // Shorthand for an unlabelled callback gauge.
  void gauge_callback(std::string name, std::string help, std::function<double()> fn);

  // Text exposition format 0.0.4, families sorted by name.
  std::string render() const;
  static constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

 private:
  template <typename F, typename... Args>
  F& get_or_add(Family::Type type, std::string name, std::string help,
                std::vector<std::string> label_names, Args&&... args);

  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Family>, std::less<>> families_;
};

// Helpers exposed for tests and for other exposition code.
bool valid_metric_name(std::string_view name);
bool valid_label_name(std::string_view name);
std::string escape_label_value(std::string_view v);  // \ " newline
std::string escape_help(std::string_view v);         // \ newline
std::string format_value(double v);                  // shortest round-trip, +Inf, -Inf, NaN

}  // namespace warren::metrics
