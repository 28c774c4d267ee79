// An asynchronous HTTP client for the Kubernetes API on the controller's libuv
// loop: libcurl's multi "socket" interface driven by uv_poll and uv_timer, so
// every request (lists, watch streams, lease updates, status patches, token
// reviews) runs on the loop thread without worker threads, and every callback
// runs on the loop thread too.
//
//   auto client = Client::create(loop, cluster_config);     // Result<unique_ptr<Client>>
//   HttpRequest r; r.path = "/api/v1/pods?limit=500";
//   client->start(std::move(r), [](Result<HttpResponse> res) { ... });
//
//   // A watch: the body is handed over as it arrives while the status is 2xx.
//   HttpRequest w; w.path = "/api/v1/pods?watch=1&..."; w.stream = true;
//   CallId id = client->start(std::move(w), on_done, [](std::string_view bytes) { ... });
//   client->cancel(id);   // no callback after this
//
// Behaviour:
//   - Result errors are transport failures only (connect, TLS, timeout, a
//     stream cut before its end: Errc::kUnavailable / kTimeout / kTls). Any
//     HTTP status is a response; non-2xx bodies are buffered, never streamed.
//   - Authentication: "Authorization: Bearer <token>" from a TokenSource, which
//     re-reads the token file when its inode/size/mtime changed (checked
//     before each request). A 401 makes the client re-read the token file and
//     retry the request once, transparently (watches included).
//   - TLS: the cluster CA (file or PEM), or the system store; client
//     certificates; insecure-skip-tls-verify. http:// servers work too.
//   - HTTP/2 is used when the server offers it (curl's default for https), so
//     many watches share one connection on a real API server.
//   - User callbacks are never called from inside libcurl: data and results
//     are collected during curl's processing and delivered afterwards, so a
//     callback may start or cancel calls freely. It must not destroy the
//     Client.
//   - Destroying the Client drops every pending call without callbacks. Its
//     libuv handles close asynchronously: run the loop once more before
//     uv_loop_close().
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "k8s/kubeconfig.h"
#include "k8s/token_source.h"
#include "warren/result.h"

typedef struct uv_loop_s uv_loop_t;  // NOLINT: same declaration as uv.h

namespace warren::controller::k8s {

struct HttpRequest {
  std::string method = "GET";
  std::string path;  // with the query: "/api/v1/pods?limit=500"
  std::string body;
  std::string content_type;  // for the body: "application/json", "application/merge-patch+json"
  bool stream = false;       // hand 2xx bodies to the data callback as they arrive
  // Total time allowed; 0 = ClientOptions::request_timeout, or none for streams.
  std::chrono::milliseconds timeout{0};
};

struct HttpResponse {
  int status = 0;
  std::string body;  // empty for a streamed 2xx response
};

struct ClientOptions {
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds request_timeout{30'000};
  std::string user_agent = "warren-controller/0.1";
};

class Client {
 public:
  using CallId = uint64_t;
  using DoneFn = std::function<void(Result<HttpResponse>)>;
  using DataFn = std::function<void(std::string_view)>;

  // Checks the configuration (CA/cert files readable are checked by curl at
  // the first request, and failures come back as request errors).
  static Result<std::unique_ptr<Client>> create(uv_loop_t* loop, ClusterConfig cfg,
                                                ClientOptions opts = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Starts a request; `done` is called once (unless cancelled), on the loop
  // thread, never from inside start().
  CallId start(HttpRequest req, DoneFn done, DataFn data = {});
  // Stops a call; its callbacks will not run. Unknown or finished ids are ignored.
  void cancel(CallId id);
  size_t active_calls() const;

  const ClusterConfig& config() const;
  uv_loop_t* loop() const;
  TokenSource& tokens();

  struct Impl;

 private:
  explicit Client(Impl* impl) : impl_(impl) {}
  Impl* impl_;  // frees itself once its libuv handles have closed
};

}  // namespace warren::controller::k8s
