// HTTP/2 (h2c, prior knowledge) on both ends of the waypoint tests, built on
// nghttp2 over blocking sockets: a threaded backend whose answers the test
// scripts per request (unary, gRPC with trailers, or streaming echo), and a
// client for one connection that multiplexes streams and can also write raw
// frames (bad headers, floods).
#pragma once

#include <nghttp2/nghttp2.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"
#include "http_backend.h"

namespace warren::e2e {

using H2Fields = std::vector<std::pair<std::string, std::string>>;

// One request (backend side) or response (client side).
struct H2Msg {
  std::string method, path, authority;  // requests
  int status = 0;                       // responses
  H2Fields headers;                     // regular fields, names lower case
  std::string body;
  H2Fields trailers;
  uint32_t reset_code = 0;  // RST_STREAM error code when the stream was reset
  bool ended = false;       // END_STREAM received
  bool closed = false;      // the stream is gone
  std::string header(const std::string& lower) const;
  std::string trailer(const std::string& lower) const;
};

struct H2Reply {
  int status = 200;
  H2Fields headers;
  std::string body;
  H2Fields trailers;           // sent after the body (gRPC status)
  bool trailers_only = false;  // headers (with END_STREAM) only, e.g. a gRPC error
};

// gRPC message framing: 1 byte compressed flag, 4 bytes length, payload.
std::string grpc_frame(const std::string& payload);

// Requests under /stream/ are echoed as they come: response headers at once,
// each DATA chunk sent back when received, trailers grpc-status 0 at the end.
// Anything else is answered by `handler` once the request ended (default:
// 200 "<name> <method> <path>\n", and for gRPC the request body echoed with
// grpc-status 0 in trailers). Every response carries x-backend: <name>.
class H2Backend : public ThreadedServer {
 public:
  using Handler = std::function<H2Reply(const H2Msg&)>;
  H2Backend(const std::string& ip, uint16_t port, std::string name, Handler h = {});
  ~H2Backend() override;
  H2Backend(const H2Backend&) = delete;
  H2Backend& operator=(const H2Backend&) = delete;
  uint64_t requests() const { return requests_.load(); }
  // The most streams open at once on one connection so far.
  uint64_t max_concurrent() const { return max_open_.load(); }
  std::vector<H2Msg> seen();

  struct Conn;  // one served connection (h2_backend.cpp)

 private:
  friend struct Conn;
  void serve(int fd) override;
  std::string name_;
  Handler handler_;
  std::atomic<uint64_t> requests_{0}, max_open_{0};
  std::vector<H2Msg> seen_;
};

// One h2c client connection (already connected, e.g. through SOCKS5). Not
// thread-safe: one test thread drives it.
class H2cClient {
 public:
  explicit H2cClient(Fd fd);
  ~H2cClient();
  H2cClient(const H2cClient&) = delete;
  H2cClient& operator=(const H2cClient&) = delete;

  // Opens a stream: :method, :scheme http, :authority, :path, then `headers`
  // (sent as given: upper case or invalid values are not refused here).
  // end: the request ends after `body` (else send() more later).
  int32_t request(const std::string& method, const std::string& path, const H2Fields& headers = {},
                  const std::string& body = "", bool end = true,
                  const std::string& authority = "echo");
  // More request DATA; end: END_STREAM after it (with trailers if given).
  void send(int32_t sid, const std::string& data, bool end, const H2Fields& trailers = {});
  void reset(int32_t sid);
  // Runs the connection until pred() or the timeout; false on timeout.
  bool run_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 10s);
  // Runs until the stream closed and returns its response.
  H2Msg get(int32_t sid, std::chrono::milliseconds timeout = 10s);
  // Convenience: one request, its whole response.
  H2Msg fetch(const std::string& method, const std::string& path, const H2Fields& headers = {},
              const std::string& body = "");
  const H2Msg& response(int32_t sid) { return streams_[sid].msg; }

  bool eof() const { return eof_; }
  bool goaway() const { return goaway_; }
  uint32_t goaway_code() const { return goaway_code_; }
  int fd() const { return fd_.get(); }

  struct Stream {
    H2Msg msg;
    std::string out;
    bool out_eof = false;
    H2Fields out_trailers;
    bool deferred = false;
  };

 private:
  bool pump(int timeout_ms);  // one read (or wait) and all pending writes
  Fd fd_;
  nghttp2_session* session_ = nullptr;
  std::map<int32_t, Stream> streams_;
  bool eof_ = false;
  bool goaway_ = false;
  uint32_t goaway_code_ = 0;
  friend struct H2cClientCallbacks;
};

// Raw frames for what a well-behaved library would not send.
std::string h2_frame(uint8_t type, uint8_t flags, int32_t sid, const std::string& payload);
// A stateless HPACK block (static-table and literal-without-indexing fields
// only) for a GET of `path` to `authority`, plus `extra` literal fields as given.
std::string hpack_request(const std::string& path, const std::string& authority,
                          const H2Fields& extra = {});
struct H2RawFrame {
  uint8_t type = 0, flags = 0;
  int32_t sid = 0;
  std::string payload;
};
// Reads exactly one frame (false on EOF or timeout; sets the fd's receive timeout).
bool read_frame(int fd, H2RawFrame* f, std::chrono::milliseconds timeout = 10s);
// Reads frames until EOF or the timeout; true if a GOAWAY was among them
// (its error code in *code) and the peer then closed.
bool read_until_goaway_and_close(int fd, uint32_t* code, std::chrono::milliseconds timeout = 10s);

}  // namespace warren::e2e
