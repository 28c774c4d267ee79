// HTTP/1.1 on both ends of the waypoint tests: a small threaded backend whose
// answers the test scripts per request, and a keep-alive client that reads
// Content-Length and chunked responses.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace warren::e2e {

struct HttpReq {
  std::string method, target, body;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string header(const std::string& lower) const;
};

struct HttpResp {
  int status = 200;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  std::chrono::milliseconds delay{0};  // before answering
  bool reset = false;                  // close the connection instead of answering
  std::string header(const std::string& lower) const;
};

// A test server on threads of its own: one accepts, one serves each
// connection (serve(fd), which ends with finish(fd)). The derived class calls
// start() at the end of its constructor and stop() first in its destructor,
// so no thread runs serve() while the derived object is incomplete.
class ThreadedServer {
 public:
  ThreadedServer(const std::string& ip, uint16_t port, const char* what);
  virtual ~ThreadedServer();
  uint64_t connections() const { return accepted_.load(); }

 protected:
  void start();
  void stop();
  bool stopping() const { return stop_.load(); }
  virtual void serve(int fd) = 0;
  // The connection is done: forgotten and closed.
  void finish(int fd);
  std::mutex mu_;

 private:
  void loop();
  Fd listen_fd_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> accepted_{0};
  std::vector<std::thread> workers_;
  std::vector<int> fds_;
  std::thread thread_;
};

// Answers every request with `handler(req)` (default: 200 "<name> <method> <target>").
// Adds "x-backend: <name>". Keep-alive unless the request says close.
class HttpBackend : public ThreadedServer {
 public:
  using Handler = std::function<HttpResp(const HttpReq&)>;
  HttpBackend(const std::string& ip, uint16_t port, std::string name, Handler h = {});
  ~HttpBackend() override;
  HttpBackend(const HttpBackend&) = delete;
  HttpBackend& operator=(const HttpBackend&) = delete;
  uint64_t requests() const { return requests_.load(); }
  std::vector<HttpReq> seen();  // every request so far

 private:
  void serve(int fd) override;
  std::string name_;
  Handler handler_;
  std::atomic<uint64_t> requests_{0};
  std::vector<HttpReq> seen_;
};

// One client connection (already connected, e.g. through SOCKS5).
class HttpClientConn {
 public:
  explicit HttpClientConn(Fd fd) : fd_(std::move(fd)) {}
  // Sends one request and reads its response (status 0: connection closed or
  // timed out first).
  HttpResp request(const std::string& method, const std::string& target,
                   const std::vector<std::pair<std::string, std::string>>& headers = {},
                   const std::string& body = "", std::chrono::milliseconds timeout = 10s);
  bool send_raw(const std::string& bytes);
  HttpResp read_response(bool head_request = false, std::chrono::milliseconds timeout = 10s);
  bool closed_by_peer() const { return closed_; }
  int fd() const { return fd_.get(); }

 private:
  bool fill(std::chrono::steady_clock::time_point deadline);
  Fd fd_;
  std::string buf_;
  bool closed_ = false;
};

}  // namespace warren::e2e
