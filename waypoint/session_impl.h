// Internals shared by session.cpp (the downstream stream), session_route.cpp
// (a request: authentication, authorization, routing, attempts) and
// session_response.cpp (responses, local replies, the end of an exchange).
#pragma once

#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>
#include <string>

#include "headers.h"
#include "path.h"
#include "proxy.h"
#include "session.h"
#include "trace.h"
#include "upstream.h"

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

struct Session::Exchange {
  MessageHead head;
  NormalizedPath np;
  std::string host;  // destination service FQDN ("" for a pod)
  uint16_t port = 0;
  std::string subset;
  RouteSelection sel;
  const RouteDestination* dest = nullptr;
  std::string fwd_head;  // the serialised head for the upstream
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
  AuthnResult authn;
  Span span;  // this hop's span (exported when sampled)
  std::vector<const RouteDestination*> mirrors;  // to fire once the request is whole
  MessageHead mirror_head;
  ~Exchange() {
    if (cb) cb->release_request();
  }
};


}  // namespace warren::waypoint
