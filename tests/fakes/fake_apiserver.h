// A fake Kubernetes API server for the controller's tests and demos: real
// wire format over HTTPS (or plain HTTP), on its own thread and libuv loop, so
// a test drives the controller's loop on the main thread while this answers.
//
//   auto api = FakeApiServer::start({});             // https://127.0.0.1:<port>
//   api->create(load_json("testdata/pod.json"));     // watches see ADDED
//   ClusterConfig cfg{.server = api->url(), .ca_pem = api->ca_pem(), .token = "test-token"};
//   ...
//   api->compact(); api->expire_watches("Pod");      // force a relist
//
// Served (see fake_store.h for the object semantics):
//   GET    <collection>[?limit=&continue=]           list ({kind: PodList, metadata: {resourceVersion, continue}, items})
//   GET    <collection>?watch=1&resourceVersion=R[&allowWatchBookmarks=true][&timeoutSeconds=T]
//          chunked stream, one JSON event per line; events after R replayed first
//   GET/PUT/PATCH/DELETE <collection>/<name>, POST <collection>
//   PATCH  <collection>/<name>/status               (merge patch; successful ones recorded, see status_patches())
//   POST   /apis/authentication.k8s.io/v1/tokenreviews   (answers from set_token_review())
//   anything else, or a kind switched off with set_served(kind, false): 404 Status.
// Authentication: "Authorization: Bearer <t>" with t among set_tokens(), or
// a client certificate signed by the fake's CA (issue_client_cert()); else
// 401 with an Unauthorized Status.
//
// Faults on demand: compact() (watches from older versions and old continue
// tokens get 410), fail_next_watch() (HTTP error at watch start),
// expire_watches() (in-stream ERROR event, Status code 410, then the stream
// ends), drop_watches() (connection closed mid-stream, no final chunk),
// end_watches() (clean end, as the server's watch timeout), send_bookmarks(),
// set_event_delay() (slow streams), set_tokens() (expire/rotate tokens),
// set_expired_watch_as_event(), fail_requests() (any status for any request).
//
// Every public method is thread-safe and synchronous: it runs on the server
// thread and waits. Do not call it from the server's own thread.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "warren/result.h"

namespace warren::fakes {

struct FakeApiServerOptions {
  std::string listen = "127.0.0.1:0";
  bool tls = true;
  std::vector<std::string> tokens = {"test-token"};
  // Server-side cap on a watch's duration (0: only the client's timeoutSeconds).
  std::chrono::milliseconds max_watch{0};
  // Periodic BOOKMARK events on every watch that allows them (0: only on demand).
  std::chrono::milliseconds bookmark_interval{0};
  uint64_t first_resource_version = 1000;
};

struct RecordedRequest {
  std::string method, path, query;
  int status = 0;  // the response status (200 for a watch that started)
  // The value of a query parameter, "" when absent.
  std::string param(const std::string& name) const;
  bool is_watch() const { return param("watch") == "1" || param("watch") == "true"; }
};

struct StatusPatch {
  std::string kind, ns, name;
  std::string content_type;
  nlohmann::json patch;
};

class FakeApiServer {
 public:
  static Result<std::unique_ptr<FakeApiServer>> start(FakeApiServerOptions opts = {});
  ~FakeApiServer();
  FakeApiServer(const FakeApiServer&) = delete;
  FakeApiServer& operator=(const FakeApiServer&) = delete;

  std::string url() const;      // "https://127.0.0.1:43121"
  std::string ca_pem() const;   // the CA the server certificate chains to
  uint16_t port() const;
  // A kubeconfig (current-context "fake") for this server and `token`.
  std::string kubeconfig(const std::string& token) const;
  // A client certificate (PEM cert, PEM key) with CN=<user>, signed by the CA.
  std::pair<std::string, std::string> issue_client_cert(const std::string& user) const;

  // ---- objects (watches see the events) ----
  // The object's kind must be a served type; returns the stored object or the
  // Status of the failure (AlreadyExists, ...).
  Result<nlohmann::json> create(nlohmann::json obj);
  // Replaces the object, status included (unlike PUT over HTTP).
  Result<nlohmann::json> update(nlohmann::json obj);
  // Creates or replaces.
  Result<nlohmann::json> apply(nlohmann::json obj);
  Result<void> remove(const std::string& kind, const std::string& ns, const std::string& name);
  std::optional<nlohmann::json> get(const std::string& kind, const std::string& ns,
                                    const std::string& name);
  uint64_t resource_version();

  // ---- API surface ----
  void set_served(const std::string& kind, bool served);
  void set_tokens(std::vector<std::string> tokens);
  // TokenReview: `token` authenticates as `user_info` ({username, uid,
  // groups, extra}); unknown tokens are answered authenticated=false.
  void set_token_review(const std::string& token, nlohmann::json user_info);

  // ---- faults ----
  void compact();
  void fail_next_watch(const std::string& kind, int http_status = 410);
  void expire_watches(const std::string& kind);
  void drop_watches(const std::string& kind);
  void end_watches(const std::string& kind);
  void send_bookmarks(const std::string& kind);
  void set_event_delay(std::chrono::milliseconds d);
  // The next `times` requests with this method and exact path are answered
  // with `http_status` and a Status (after authentication).
  void fail_requests(const std::string& method, const std::string& path, int http_status,
                     int times = 1);
  // How a watch from a compacted resourceVersion is refused: HTTP 410 (false,
  // the default) or, as kube-apiserver's watch cache does, 200 and then an
  // ERROR event with a 410 Status, ending the stream (true).
  void set_expired_watch_as_event(bool as_event);

  // ---- observation ----
  std::vector<RecordedRequest> requests();
  void clear_requests();
  size_t open_watches(const std::string& kind);
  std::vector<StatusPatch> status_patches();
  size_t connection_count();

  struct Impl;

 private:
  explicit FakeApiServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace warren::fakes
