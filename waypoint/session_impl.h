// Internals shared by session.cpp (the downstream stream), session_route.cpp
// (a request: authentication, authorization, routing, attempts) and
// session_response.cpp (responses, local replies, the end of an exchange).
#pragma once

#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>
#include <string>

#include "grpc.h"
#include "headers.h"
#include "path.h"
#include "proxy.h"
#include "session.h"
#include "trace.h"
#include "upstream.h"
#include "upstream_h2.h"

namespace warren::waypoint {
namespace session_detail {
inline constexpr size_t kHigh = 256 << 10;
inline constexpr size_t kRetryBody = 64 << 10;  // request bodies up to this are kept for retries
inline constexpr char kH2Preface[] = "PRI * HTTP/2.0\r\n";

inline uint32_t rnd32(Rng& r) { return static_cast<uint32_t>(r.next64() >> 32); }

inline std::string header_of(const Headers& h, std::string_view name) {
  std::string v;
  header_value(h, name, v);
  return v;
}

inline void set_header(Headers& h, std::string_view name, std::string value) {
  for (auto it = h.begin(); it != h.end();)
    if (iequals(it->name, name)) it = h.erase(it);
    else ++it;
  h.push_back({std::string(name), std::move(value)});
}

// Whether the first bytes can still become an HTTP/1 request line
// ("METHOD SP"), must be one, or cannot.
enum class Sniff { kMore, kHttp1, kOther };
inline Sniff sniff_http1(std::string_view s) {
  for (size_t i = 0; i < s.size() && i < 24; ++i) {
    unsigned char c = s[i];
    if (c == ' ') return i > 0 ? Sniff::kHttp1 : Sniff::kOther;
    if (!(c >= 'A' && c <= 'Z') && c != '-' && c != '_') return Sniff::kOther;
  }
  return s.size() < 24 ? Sniff::kMore : Sniff::kOther;
}

inline std::optional<SockAddr> forwarded_for(const h2::Headers& h) {
  const std::string* f = h2::find_header(h, "forwarded");
  if (!f) return std::nullopt;
  auto p = f->find("for=");
  if (p == std::string::npos) return std::nullopt;
  std::string v = f->substr(p + 4);
  if (auto semi = v.find_first_of(";,"); semi != std::string::npos) v.resize(semi);
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  return SockAddr::parse(v);
}
}  // namespace session_detail

struct Session::Exchange : Recycled<Session::Exchange> {
  MessageHead head;
  NormalizedPath np;
  std::string host;  // destination service FQDN ("" for a pod)
  uint16_t port = 0;
  std::string subset;
  RouteSelection sel;
  const RouteDestination* dest = nullptr;
  std::string fwd_head;  // the serialised head for the upstream
  MessageHead fwd;       // the head for an HTTP/2 upstream
  bool up_h2 = false;    // the upstream speaks HTTP/2 (upstream_protocol.h), else HTTP/1.1
  bool h2_resp_body = false;  // HTTP/2: the response HEADERS left the stream open
  bool chunked_up = false;
  const config::Workload* ep = nullptr;
  SockAddr ep_addr;
  bool request_complete = false;
  bool body_kept = true;
  std::string body;
  Headers trailers;
  uint32_t attempts = 0;
  const RetryPolicy* retry = nullptr;
  bool response_started = false;
  bool chunk_down = false;
  bool down_keep_alive = true;
  bool local = false;  // answered here; the rest of the request body is dropped
  Headers resp_trailers;
  RequestRecord rec;
  std::chrono::steady_clock::time_point t0;
  std::string authority;  // Host as received
  std::shared_ptr<CircuitBreaker> cb;  // admitted request (released at the end)
  Cluster* cluster = nullptr;          // of the attempt in flight
  std::string uid;                     // its endpoint
  bool attempt_open = false;
  bool pending = false;      // waiting for a connection slot (holds a pending-request slot)
  bool waited = false;       // has waited: back at the head of the queue if still none
  bool retry_held = false;   // holds a retry slot (maxRetries / retryBudget) for the retry in flight
  AuthnResult authn;
  Span span;  // this hop's span (exported when sampled)
  std::vector<const RouteDestination*> mirrors;  // to fire once the request is whole
  MessageHead mirror_head;
  ~Exchange() {
    if (cb && retry_held) cb->release_retry();
    if (cb) cb->release_request();
  }
};

namespace session_detail {
// The inner server's limits: windows small enough that many tunnelled
// connections stay cheap, large enough for bulk transfers.
inline h2::H2Limits inner_server_limits() {
  h2::H2Limits l;
  l.max_concurrent_streams = 100;
  l.stream_window = 1 << 20;
  l.conn_window = 4 << 20;
  l.max_frame = 16384;
  l.max_header_list = 64 << 10;
  return l;
}
}  // namespace session_detail

// The inner server connection of one HTTP/2 session (Mode::kH2): its
// output goes into the CONNECT stream, each of its streams is a Session.
class H2Downstream : public h2::H2Conn::Owner, public h2::H2Conn::Output {
 public:
  explicit H2Downstream(Session& s)
      : s_(s), conn_(nullptr, nullptr, /*server=*/true, this, session_detail::inner_server_limits()) {
    conn_.set_output(this);
  }
  h2::H2Conn& conn() { return conn_; }
  h2::StreamHandler* on_new_stream(h2::H2Conn* c, int32_t sid) override { return new Session(s_, c, sid); }
  void on_conn_close(h2::H2Conn*, const std::string& reason) override { s_.h2_closed(reason); }
  void write(std::string&& data) override { s_.h2_output(std::move(data)); }
  size_t queued() const override { return s_.h2_output_queued(); }

 private:
  Session& s_;
  h2::H2Conn conn_;
};

}  // namespace warren::waypoint
