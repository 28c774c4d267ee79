// A small HTTP/1.1 server on a libuv loop for the admin (15000), Prometheus
// (15020) and readiness (15021) endpoints. Not for the data path.
//
//   warren::http::Server s(loop);
//   s.route("GET", "/healthz/ready", [](const Request&) { return Response{200, ..., "ready\n"}; });
//   auto bound = s.listen(*SockAddr::parse("127.0.0.1:15021"));
//
// Behaviour:
//   - exact path match; unknown path -> 404 listing the endpoints; known path
//     with another method -> 405 with Allow. HEAD is served by the GET route
//     without the body.
//   - keep-alive and pipelining (responses in request order); HTTP/1.0 and
//     "Connection: close" close after the response.
//   - request head over Options::max_head_bytes -> 431, body over
//     max_body_bytes -> 413, malformed -> 400; each then closes.
//   - each request must arrive in full within idle_timeout of the connection
//     becoming idle, or the connection is closed (slowloris).
//   - a handler that throws yields 500; nothing throws into libuv.
// Everything runs on the loop's thread: call listen()/close() there (or
// before the loop runs), and handlers run there.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "warren/ip.h"
#include "warren/result.h"

typedef struct uv_loop_s uv_loop_t;  // NOLINT: same declaration as uv.h

namespace warren::http {

struct Request {
  std::string method;                          // "GET"
  std::string path;                            // "/stats", not decoded
  std::string query;                           // "a=1&b=2", without '?'
  std::map<std::string, std::string> headers;  // lower-cased names; repeats joined by ", "
  std::string body;

  // The percent-decoded ('+' = space) value of the first `name` parameter,
  // "" when absent.
  std::string query_param(std::string_view name) const;
  bool has_query_param(std::string_view name) const;
  // Header by lower-case name, "" when absent.
  std::string header(std::string_view lower_name) const;
};

struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  // Extra headers; Content-Length, Content-Type and Connection are set by the server.
  std::vector<std::pair<std::string, std::string>> headers;
};

using Handler = std::function<Response(const Request&)>;

struct Options {
  size_t max_head_bytes = 16 * 1024;
  size_t max_body_bytes = 1024 * 1024;
  uint64_t idle_timeout_ms = 10'000;
  size_t max_connections = 128;  // further connections are accepted and closed at once
  // Reading pauses while this much response data waits for a slow reader.
  size_t max_pending_write_bytes = 4 * 1024 * 1024;
};

class Server {
 public:
  explicit Server(uv_loop_t* loop, Options opts = {});
  // Closes everything; handles finish closing on the next loop iteration
  // (run the loop once more before uv_loop_close()).
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  void route(std::string method, std::string path, Handler handler);
  // Binds and listens; returns the bound address (port 0 picks one). One
  // listener per server.
  Result<SockAddr> listen(const SockAddr& addr);
  // Stops listening and closes all connections (pending responses dropped).
  void close();

  size_t connection_count() const;

  struct Impl;

 private:
  Impl* impl_;  // frees itself once its last libuv handle has closed
};

const char* reason_phrase(int status);

}  // namespace warren::http
