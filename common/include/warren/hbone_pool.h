// Outbound HBONE connections, pooled per {source identity, destination
// identity, destination address, source IP}; at most min(100, peer's
// MAX_CONCURRENT_STREAMS) CONNECT streams each; idle ones close after 5 min;
// HTTP/2 PING keepalive every 10 s with a 20 s deadline (DESIGN.md §4).
// warren-node dials from the source pod's netns; warren-waypoint from its own
// address with its own identity. What differs is the PoolEnv.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "warren/defer.h"
#include "warren/h2_conn.h"
#include "warren/ip.h"
#include "warren/metrics.h"
#include "warren/result.h"
#include "warren/tcp.h"

namespace warren::hbone {

using h2::H2Conn;
using h2::Headers;
using h2::StreamHandler;

struct PoolKey {
  std::string src_identity;
  std::string dst_identity;
  SockAddr dst;
  IpAddr src_ip;
  bool operator<(const PoolKey& o) const {
    return std::tie(src_identity, dst_identity, dst, src_ip) <
           std::tie(o.src_identity, o.dst_identity, o.dst, o.src_ip);
  }
};

// What the pool needs from its process.
class PoolEnv {
 public:
  virtual ~PoolEnv() = default;
  virtual uv_loop_t* loop() = 0;
  // The client TLS context presenting `identity`'s certificate.
  virtual Result<SSL_CTX*> client_ctx(const std::string& identity) = 0;
  // How to dial from `src` (bound address, netns, mark). When the dial fails
  // and the options name no netns, the pool retries unbound (a shared
  // loopback in tests).
  virtual net::DialOptions dial_options(const IpAddr& src) {
    net::DialOptions d;
    d.bind_src = src;
    return d;
  }
  virtual uint32_t connect_timeout_ms() const = 0;
};

// Optional counters and gauges (null: not counted).
struct PoolMetrics {
  metrics::Counter* connects = nullptr;
  metrics::Counter* reuses = nullptr;
  metrics::Gauge* connections = nullptr;
  metrics::Gauge* streams = nullptr;
};

class Pool : public H2Conn::Owner {
 public:
  static constexpr uint32_t kMaxStreams = 100;
  static constexpr uint64_t kIdleMs = 5 * 60 * 1000;
  static constexpr uint64_t kPingEveryMs = 10 * 1000;
  static constexpr uint64_t kPingTimeoutMs = 20 * 1000;

  using OpenFn = std::function<void(H2Conn* conn, int32_t sid)>;
  using FailFn = std::function<void(const std::string& why)>;

  Pool(PoolEnv& env, PoolMetrics m = {});
  ~Pool() override;
  // Opens a CONNECT stream with `headers` for `handler`; calls `opened` once the
  // stream exists (the response comes to handler->on_headers), or `failed` if no
  // connection could be made. Returns a ticket usable with cancel().
  uint64_t open(const PoolKey& key, Headers headers, StreamHandler* handler, OpenFn opened,
                FailFn failed);
  // Forget a waiter that has not been opened yet (its client went away).
  void cancel(uint64_t ticket);
  void close_all();
  void stop_timer() { tick_.stop(); }
  size_t connections() const { return conns_.size(); }

  // H2Conn::Owner
  void on_ready(H2Conn* c) override;
  void on_conn_close(H2Conn* c, const std::string& reason) override;
  void on_stream_count(H2Conn* c) override;

 private:
  struct Waiter {
    uint64_t ticket;
    Headers headers;
    StreamHandler* handler;
    OpenFn opened;
    FailFn failed;
  };
  struct Entry {
    PoolKey key;
    std::unique_ptr<H2Conn> conn;
    std::vector<Waiter> waiters;
    uint64_t idle_since = 0;
    uint64_t ping_sent = 0;
  };
  Entry* find_slot(const PoolKey& key);
  void tick();
  void update_gauges();

  PoolEnv& env_;
  PoolMetrics m_;
  std::map<H2Conn*, Entry> conns_;
  std::multimap<PoolKey, H2Conn*> by_key_;
  Timer tick_;
  uint64_t next_ticket_ = 1;
};

}  // namespace warren::hbone
