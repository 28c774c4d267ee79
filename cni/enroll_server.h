// warren-node's side of pod enrollment: a Unix socket (libuv pipe) that
// warren-cni connects to. Each line is one EnrollRequest; the handler's
// result becomes the reply line. A client may send several requests in turn;
// several clients are served concurrently. A line that is not a valid request
// (bad JSON, a field out of range, longer than kMaxLineBytes) gets an error
// reply and the connection is closed. Clients idle for kIdleTimeoutMs are
// closed. Everything, the handler included, runs on the loop's thread: the
// handler should answer quickly (it blocks the loop while it runs).
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "enroll_proto.h"
#include "warren/result.h"

namespace warren::cni {

class EnrollServer {
 public:
  using Handler = std::function<Result<void>(const EnrollRequest&)>;
  static constexpr uint64_t kIdleTimeoutMs = 30'000;
  static constexpr size_t kMaxClients = 128;

  EnrollServer(uv_loop_t* loop, std::string path, Handler handler);
  ~EnrollServer();  // close()
  EnrollServer(const EnrollServer&) = delete;
  EnrollServer& operator=(const EnrollServer&) = delete;

  // Creates the parent directory (0755) if needed, removes a stale socket
  // file (refuses when a live server answers on it or the path is not a
  // socket), binds, sets mode 0600 before listening.
  Result<void> start();
  // Stops listening, closes every client, removes the socket file. Idempotent.
  void close();

  const std::string& path() const { return path_; }
  size_t clients() const;
  // Default kIdleTimeoutMs; checked once a second.
  void set_idle_timeout_ms(uint64_t ms);
  uint64_t requests_served() const;

  struct State;  // shared with the libuv callbacks

 private:
  uv_loop_t* loop_;
  std::string path_;
  std::shared_ptr<State> state_;
};

}  // namespace warren::cni
