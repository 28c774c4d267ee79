// List and watch of one kind (client-go's reflector, reduced to what the
// controller needs), feeding a Sink on the loop thread.
//
//   KindWatcher w(client, *find_kind("Pod"), WatchOptions{}, hooks);
//   w.start();
//
// Protocol:
//   LIST  GET <collection>?limit=<page_size>[&continue=<token>] page by page.
//         Items come without kind/apiVersion: both are set from the kind
//         before the Sink sees them. After the last page, keys held from
//         before that the list did not return are removed (the deletes missed
//         while away). The list's metadata.resourceVersion is kept.
//   WATCH GET <collection>?watch=1&allowWatchBookmarks=true
//             &resourceVersion=<rv>&timeoutSeconds=<t, random in [t, 2t)>
//         A stream of newline-separated JSON events {type, object}:
//         ADDED/MODIFIED -> upsert, DELETED -> remove, BOOKMARK -> only the
//         resourceVersion moves, ERROR -> see below. Every event's
//         object.metadata.resourceVersion becomes the version to resume from.
//   410 Gone (the watch's HTTP status, or an ERROR event whose Status has
//         code 410, or a list continue token that expired) -> relist at once.
//   A watch the server ends cleanly (its timeout) -> watch again from the last
//         resourceVersion, at once when the watch lasted at least
//         min_healthy_watch or delivered an event, else after a backoff.
//   A dropped connection, a transport error, another ERROR event or a 5xx ->
//         watch again from the last resourceVersion after a backoff (no relist).
//   List failures -> retry the list after a backoff. A 403 (RBAC missing for
//         a kind) is such a failure: it is logged at each retry and that kind
//         holds up synced() until the permission is granted.
//   Backoff: initial, doubling to max, each delay jittered by +-20%; reset by
//         a successful list and by a watch that delivered events.
//   404 on the list (a CRD not installed): logged once (warn), treated as an
//         empty list (so synced() is not held up, and objects held from an
//         uninstalled CRD are removed) and listed again every absent_retry.
//
// Memory: no object is kept. Per object only its key ("ns/name") and a hash
// of its resourceVersion (to skip re-upserting unchanged objects on a
// relist) are held, about 100 bytes per object.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <random>
#include <string>
#include <unordered_map>

#include "k8s/api.h"
#include "k8s/http_client.h"
#include "source.h"

typedef struct uv_timer_s uv_timer_t;  // NOLINT: same declaration as uv.h

namespace warren::controller::k8s {

struct WatchOptions {
  int page_size = 500;
  // timeoutSeconds asked of the server: random in [t, 2t), 5-10 min as client-go.
  int watch_timeout_seconds = 300;
  std::chrono::milliseconds backoff_initial{500};
  std::chrono::milliseconds backoff_max{30'000};
  std::chrono::milliseconds absent_retry{60'000};  // relist period for a 404 kind
  std::chrono::milliseconds min_healthy_watch{1'000};
  // Narrows the collection: one namespace (empty: all), and a fieldSelector
  // ("metadata.name=istio"; empty: none).
  std::string ns;
  std::string field_selector;
};

struct WatcherStats {
  uint64_t lists = 0;        // list requests (pages)
  uint64_t relists = 0;      // complete lists after the first
  uint64_t watches = 0;      // watch requests
  uint64_t events = 0;       // watch events handled (bookmarks included)
  uint64_t errors = 0;       // failed requests, dropped streams, ERROR events
};

class KindWatcher {
 public:
  struct Hooks {
    Sink* sink = nullptr;
    // The first complete list is in (also after a 404).
    std::function<void()> on_listed;
    // Called with each object right before sink->upsert (status_writer peeks
    // at the existing status), and with the key before sink->remove.
    std::function<void(const nlohmann::json&)> before_upsert;
    std::function<void(const ObjectKey&)> before_remove;
  };

  KindWatcher(Client* client, const KindInfo& kind, WatchOptions opts, Hooks hooks);
  ~KindWatcher();
  KindWatcher(const KindWatcher&) = delete;
  KindWatcher& operator=(const KindWatcher&) = delete;

  void start();
  // Cancels requests and timers; nothing reaches the Sink afterwards.
  void stop();

  const KindInfo& kind() const { return kind_; }
  bool listed_once() const { return listed_once_; }
  bool absent() const { return absent_; }
  bool watching() const { return state_ == State::kWatching; }
  const std::string& resource_version() const { return rv_; }
  size_t object_count() const { return objects_.size(); }
  const WatcherStats& stats() const { return stats_; }

 private:
  enum class State { kIdle, kListing, kWatching, kWaiting, kStopped };
  struct Entry {
    uint64_t rv_hash = 0;
    uint32_t gen = 0;  // the list generation that last saw the object
  };

  void list_page(const std::string& cont);
  void on_list(Result<HttpResponse> r);
  void finish_list(const std::string& rv);
  void watch();
  void on_watch_data(std::string_view bytes);
  void on_watch_done(Result<HttpResponse> r);
  // Returns false when the watch must end (410 or another ERROR).
  bool handle_event(std::string_view line);
  void end_watch_relist();
  void upsert(nlohmann::json obj);
  void remove(const std::string& map_key);
  void retry_later(bool relist, std::chrono::milliseconds delay);
  std::chrono::milliseconds next_backoff();
  void arm(std::chrono::milliseconds delay, void (*fn)(uv_timer_t*));
  static std::string map_key(const nlohmann::json& obj);
  // The collection's path with its selectors, ending in '?' or '&'.
  std::string collection() const;

  Client* client_;
  const KindInfo& kind_;
  WatchOptions opts_;
  Hooks hooks_;
  std::string api_version_;
  State state_ = State::kIdle;
  Client::CallId call_ = 0;
  uv_timer_t* timer_ = nullptr;  // heap: closes asynchronously
  std::unordered_map<std::string, Entry> objects_;
  uint32_t gen_ = 0;
  std::string rv_;
  std::string line_;  // a watch event not complete yet
  bool listed_once_ = false;
  bool absent_ = false;
  bool absent_logged_ = false;
  bool watch_had_events_ = false;
  std::chrono::steady_clock::time_point watch_started_;
  std::chrono::milliseconds backoff_{0};
  std::mt19937 rng_;
  WatcherStats stats_;
};

}  // namespace warren::controller::k8s
