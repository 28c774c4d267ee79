#include "k8s/watcher.h"

#include <spdlog/spdlog.h>
#include <uv.h>

#include <vector>

namespace warren::controller::k8s {

namespace {
constexpr size_t kMaxEventBytes = 64u << 20;
}  // namespace

KindWatcher::KindWatcher(Client* client, const KindInfo& kind, WatchOptions opts, Hooks hooks)
    : client_(client),
      kind_(kind),
      opts_(opts),
      hooks_(std::move(hooks)),
      api_version_(kind.api_version()),
      rng_(std::random_device{}()) {
  timer_ = new uv_timer_t;
  uv_timer_init(client_->loop(), timer_);
  timer_->data = this;
}

KindWatcher::~KindWatcher() {
  stop();
  timer_->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(timer_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
}

void KindWatcher::start() {
  if (state_ != State::kIdle) return;
  list_page("");
}

void KindWatcher::stop() {
  state_ = State::kStopped;
  if (call_) client_->cancel(call_);
  call_ = 0;
  uv_timer_stop(timer_);
}

std::string KindWatcher::map_key(const nlohmann::json& obj) {
  std::string name = meta_string(obj, "name");
  if (name.empty()) return {};
  std::string ns = meta_string(obj, "namespace");
  return ns.empty() ? name : ns + "/" + name;
}

std::string KindWatcher::collection() const {
  std::string p = collection_path(kind_, opts_.ns) + "?";
  if (!opts_.field_selector.empty()) p += "fieldSelector=" + url_encode(opts_.field_selector) + "&";
  return p;
}

// ---- list -------------------------------------------------------------------------------

void KindWatcher::list_page(const std::string& cont) {
  if (state_ == State::kStopped) return;
  state_ = State::kListing;
  if (cont.empty()) ++gen_;
  ++stats_.lists;
  HttpRequest req;
  req.path = collection() + "limit=" + std::to_string(opts_.page_size);
  if (!cont.empty()) req.path += "&continue=" + url_encode(cont);
  call_ = client_->start(std::move(req), [this](Result<HttpResponse> r) {
    call_ = 0;
    on_list(std::move(r));
  });
}

void KindWatcher::on_list(Result<HttpResponse> r) {
  if (!r) {
    ++stats_.errors;
    spdlog::warn("kubernetes: list {}: {}", kind_.plural, r.error().message);
    retry_later(true, next_backoff());
    return;
  }
  int status = r->status;
  if (status == 404) {
    if (!absent_logged_) {
      spdlog::warn(
          "kubernetes: {} ({}) is not served (CRD not installed?); treating it as empty and "
          "listing again every {} ms",
          kind_.kind, api_version_, opts_.absent_retry.count());
      absent_logged_ = true;
    }
    absent_ = true;
    finish_list("");
    return;
  }
  if (status == 410) {  // the continue token expired: list again from the start
    spdlog::info("kubernetes: list {}: continue token expired, listing again", kind_.plural);
    list_page("");
    return;
  }
  if (status != 200) {
    ++stats_.errors;
    spdlog::warn("kubernetes: {}", http_error("list " + std::string(kind_.plural), status,
                                              r->body).message);
    retry_later(true, next_backoff());
    return;
  }
  auto doc = nlohmann::json::parse(r->body, nullptr, false);
  std::string().swap(r->body);
  if (!doc.is_object()) {
    ++stats_.errors;
    spdlog::warn("kubernetes: list {}: response is not a JSON object", kind_.plural);
    retry_later(true, next_backoff());
    return;
  }
  if (absent_) {
    spdlog::info("kubernetes: {} ({}) is served now", kind_.kind, api_version_);
    absent_ = false;
    absent_logged_ = false;
  }
  if (auto items = doc.find("items"); items != doc.end() && items->is_array()) {
    for (auto& item : *items) {
      if (item.is_object()) upsert(std::move(item));
    }
  }
  std::string cont = meta_string(doc, "continue");
  std::string rv = meta_string(doc, "resourceVersion");
  if (!cont.empty()) {
    list_page(cont);
  } else {
    finish_list(rv);
  }
}

void KindWatcher::finish_list(const std::string& rv) {
  std::vector<std::string> gone;
  for (const auto& [k, e] : objects_) {
    if (e.gen != gen_) gone.push_back(k);
  }
  if (!gone.empty() && listed_once_)
    spdlog::info("kubernetes: {}: {} deleted while the watch was away", kind_.plural, gone.size());
  for (const auto& k : gone) remove(k);
  rv_ = rv;
  if (listed_once_) {
    ++stats_.relists;
  } else {
    listed_once_ = true;
    if (hooks_.on_listed) hooks_.on_listed();
    if (state_ == State::kStopped) return;
  }
  if (absent_) {
    retry_later(true, opts_.absent_retry);
    return;
  }
  backoff_ = std::chrono::milliseconds{0};
  watch();
}

// ---- watch ------------------------------------------------------------------------------

void KindWatcher::watch() {
  if (state_ == State::kStopped) return;
  state_ = State::kWatching;
  line_.clear();
  watch_had_events_ = false;
  watch_started_ = std::chrono::steady_clock::now();
  ++stats_.watches;
  // Spread over [t, 2t) as client-go does, so watches do not all end at once.
  std::uniform_int_distribution<int> spread(0, std::max(0, opts_.watch_timeout_seconds - 1));
  int timeout_s = opts_.watch_timeout_seconds + spread(rng_);
  HttpRequest req;
  req.path = collection() + "watch=1&allowWatchBookmarks=true&resourceVersion=" +
             url_encode(rv_) + "&timeoutSeconds=" + std::to_string(timeout_s);
  req.stream = true;
  // The server ends the watch after timeoutSeconds; a connection that goes
  // silent (no FIN) is given up a little later.
  req.timeout = std::chrono::milliseconds((timeout_s + 30) * 1000LL);
  call_ = client_->start(
      std::move(req),
      [this](Result<HttpResponse> r) {
        call_ = 0;
        on_watch_done(std::move(r));
      },
      [this](std::string_view bytes) { on_watch_data(bytes); });
}

void KindWatcher::on_watch_data(std::string_view bytes) {
  if (state_ != State::kWatching) return;
  size_t scan = line_.size();
  line_.append(bytes);
  size_t start = 0;
  while (true) {
    size_t nl = line_.find('\n', scan);
    if (nl == std::string::npos) break;
    std::string_view line(line_.data() + start, nl - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    start = scan = nl + 1;
    if (line.empty()) continue;
    if (!handle_event(line)) return;  // the watch was ended (and line_ cleared)
    if (state_ != State::kWatching) return;
  }
  line_.erase(0, start);
  if (line_.size() > kMaxEventBytes) {
    ++stats_.errors;
    spdlog::warn("kubernetes: watch {}: event larger than {} bytes, watching again", kind_.plural,
                 kMaxEventBytes);
    client_->cancel(call_);
    call_ = 0;
    line_.clear();
    retry_later(false, next_backoff());
  }
}

bool KindWatcher::handle_event(std::string_view line) {
  auto ev = nlohmann::json::parse(line, nullptr, false);
  auto end_watch = [this](bool relist) {
    client_->cancel(call_);
    call_ = 0;
    line_.clear();
    if (relist) {
      list_page("");
    } else {
      retry_later(false, next_backoff());
    }
    return false;
  };
  if (!ev.is_object() || !ev.contains("type") || !ev["type"].is_string()) {
    ++stats_.errors;
    spdlog::warn("kubernetes: watch {}: malformed event, watching again", kind_.plural);
    return end_watch(false);
  }
  ++stats_.events;
  watch_had_events_ = true;
  const std::string type = ev["type"].get<std::string>();
  nlohmann::json obj = ev.contains("object") ? std::move(ev["object"]) : nlohmann::json();
  if (type == "ERROR") {
    ++stats_.errors;
    ApiStatus s = parse_status(obj);
    if (s.code == 410) {
      spdlog::info("kubernetes: watch {}: resourceVersion {} expired ({}), relisting",
                   kind_.plural, rv_, s.message);
      return end_watch(true);
    }
    spdlog::warn("kubernetes: watch {}: error event {} {}: {}; watching again", kind_.plural,
                 s.code, s.reason, s.message);
    return end_watch(false);
  }
  std::string rv = meta_string(obj, "resourceVersion");
  if (type == "BOOKMARK") {
    if (!rv.empty()) rv_ = rv;
    return true;
  }
  if (type == "ADDED" || type == "MODIFIED") {
    upsert(std::move(obj));
  } else if (type == "DELETED") {
    std::string k = map_key(obj);
    if (objects_.count(k)) remove(k);
  } else {
    spdlog::debug("kubernetes: watch {}: ignoring event type {}", kind_.plural, type);
  }
  if (!rv.empty()) rv_ = rv;
  return true;
}

void KindWatcher::on_watch_done(Result<HttpResponse> r) {
  if (state_ == State::kStopped) return;
  line_.clear();
  if (watch_had_events_) backoff_ = std::chrono::milliseconds{0};
  if (!r) {
    ++stats_.errors;
    spdlog::info("kubernetes: watch {} ended: {}; resuming from resourceVersion {}", kind_.plural,
                 r.error().message, rv_);
    retry_later(false, next_backoff());
    return;
  }
  int status = r->status;
  if (status == 200) {
    auto lasted = std::chrono::steady_clock::now() - watch_started_;
    spdlog::debug("kubernetes: watch {} ended by the server, resuming from {}", kind_.plural, rv_);
    if (watch_had_events_ || lasted >= opts_.min_healthy_watch) {
      watch();
    } else {
      retry_later(false, next_backoff());
    }
    return;
  }
  if (status == 410 || status == 404) {
    spdlog::info("kubernetes: watch {}: HTTP {} at resourceVersion {}, relisting", kind_.plural,
                 status, rv_);
    list_page("");
    return;
  }
  ++stats_.errors;
  spdlog::warn("kubernetes: {}; watching again",
               http_error("watch " + std::string(kind_.plural), status, r->body).message);
  retry_later(false, next_backoff());
}

// ---- objects ----------------------------------------------------------------------------

void KindWatcher::upsert(nlohmann::json obj) {
  std::string k = map_key(obj);
  if (k.empty()) {
    spdlog::warn("kubernetes: {}: object without metadata.name ignored", kind_.plural);
    return;
  }
  std::string rv = meta_string(obj, "resourceVersion");
  uint64_t h = std::hash<std::string>{}(rv);
  auto [it, added] = objects_.try_emplace(std::move(k));
  bool unchanged = !added && !rv.empty() && it->second.rv_hash == h;
  it->second.rv_hash = h;
  it->second.gen = gen_;
  if (unchanged) return;
  auto kind = obj.find("kind");
  if (kind == obj.end() || !kind->is_string() || kind->get_ref<const std::string&>().empty())
    obj["kind"] = kind_.kind;
  auto av = obj.find("apiVersion");
  if (av == obj.end() || !av->is_string() || av->get_ref<const std::string&>().empty())
    obj["apiVersion"] = api_version_;
  if (hooks_.before_upsert) hooks_.before_upsert(obj);
  if (hooks_.sink) hooks_.sink->upsert("kubernetes", std::move(obj));
}

void KindWatcher::remove(const std::string& k) {
  objects_.erase(k);
  ObjectKey key;
  key.kind = kind_.kind;
  size_t slash = k.find('/');
  if (slash == std::string::npos) {
    key.name = k;
  } else {
    key.ns = k.substr(0, slash);
    key.name = k.substr(slash + 1);
  }
  if (hooks_.before_remove) hooks_.before_remove(key);
  if (hooks_.sink) hooks_.sink->remove(key);
}

// ---- timers -----------------------------------------------------------------------------

std::chrono::milliseconds KindWatcher::next_backoff() {
  backoff_ = backoff_.count() == 0 ? opts_.backoff_initial
                                   : std::min(opts_.backoff_max, backoff_ * 2);
  std::uniform_real_distribution<double> jitter(0.8, 1.2);
  return std::chrono::milliseconds(
      static_cast<long long>(static_cast<double>(backoff_.count()) * jitter(rng_)));
}

void KindWatcher::arm(std::chrono::milliseconds delay, void (*fn)(uv_timer_t*)) {
  uv_timer_start(timer_, fn, static_cast<uint64_t>(std::max<int64_t>(0, delay.count())), 0);
}

void KindWatcher::retry_later(bool relist, std::chrono::milliseconds delay) {
  if (state_ == State::kStopped) return;
  state_ = State::kWaiting;
  if (relist) {
    arm(delay, [](uv_timer_t* t) {
      if (auto* w = static_cast<KindWatcher*>(t->data)) w->list_page("");
    });
  } else {
    arm(delay, [](uv_timer_t* t) {
      if (auto* w = static_cast<KindWatcher*>(t->data)) w->watch();
    });
  }
}

}  // namespace warren::controller::k8s
