// HTTP/2 to endpoints: for a request that came in over HTTP/2 (gRPC
// included), the waypoint speaks h2c with prior knowledge inside an HBONE
// stream to the endpoint (CONNECT :authority = <pod ip>:<target port>, as
// UpstreamLeg does), and multiplexes many requests on that one connection.
//
//   H2UpstreamPool    per proxy: the connections by endpoint and identity
//   H2UpstreamConn    one HBONE stream carrying one client H2Conn (its
//                     Output), holding a circuit-breaker connection slot
//   H2UpstreamStream  one request (a Leg): headers, DATA, trailers out; the
//                     response back to the session through Session::up_*
//
// Flow control: response DATA is acknowledged upstream only while the
// downstream stream is under its high watermark (resume() acknowledges the
// rest); bytes of the HBONE stream are acknowledged only as far as the inner
// connection took them. Objects delete themselves (deferred) when done.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "headers.h"
#include "session.h"
#include "upstream.h"
#include "warren/defer.h"
#include "warren/recycle.h"
#include "warren/h2_conn.h"
#include "warren/hbone_pool.h"

namespace warren::waypoint {

class H2UpstreamConn;
class H2UpstreamPool;
class CircuitBreaker;

class H2UpstreamStream : public Leg, public h2::StreamHandler, public Recycled<H2UpstreamStream> {
 public:
  // `head`: the request's HTTP/2 header list (h2_request_headers); with_body
  // false sends it with END_STREAM. A null owner drops the answer (mirrors).
  H2UpstreamStream(Proxy& p, Session* owner, h2::Headers head, bool with_body);

  // Leg
  void send(std::string_view data) override;
  void end() override;
  void abandon() override;
  size_t buffered() const override;
  void resume() override;
  bool http2() const override { return true; }
  // Ends the request with trailers (none: END_STREAM on the last DATA).
  void end_with_trailers(const Headers& trailers);

  // h2::StreamHandler (the stream on the inner connection)
  void on_headers(h2::H2Conn* c, int32_t sid, h2::Headers&& h, bool end_stream) override;
  void on_data(h2::H2Conn* c, int32_t sid, const uint8_t* data, size_t len) override;
  void on_trailers(h2::H2Conn* c, int32_t sid, h2::Headers&& h) override;
  void on_end_stream(h2::H2Conn* c, int32_t sid) override;
  void on_stream_close(h2::H2Conn* c, int32_t sid, uint32_t code) override;
  void on_send_drain(h2::H2Conn* c, int32_t sid) override;

 private:
  friend class H2UpstreamConn;
  friend class H2UpstreamPool;
  ~H2UpstreamStream() override = default;
  // From the connection: it is ready (submit now), or it failed first.
  void attach(h2::H2Conn* inner);
  void conn_failed(UpFailure f, const std::string& why);
  void fail(UpFailure f, const std::string& why);
  void die();

  Proxy& p_;
  Session* owner_;
  h2::Headers head_;
  bool with_body_;
  H2UpstreamConn* conn_ = nullptr;  // until the stream closes or fails
  h2::H2Conn* inner_ = nullptr;     // once submitted
  int32_t sid_ = -1;
  std::string pending_;  // DATA before the stream exists
  bool end_pending_ = false;
  h2::Headers trailers_;
  bool ended_ = false;     // our END_STREAM is queued
  bool complete_ = false;  // the response ended
  bool dying_ = false;
  bool waiting_ = false;  // in the pool's queue for a connection (holds a pending slot)
  size_t unacked_ = 0;
};

class H2UpstreamConn : public h2::StreamHandler,
                       public h2::H2Conn::Owner,
                       public h2::H2Conn::Output {
 public:
  static constexpr uint64_t kIdleMs = 60 * 1000;
  H2UpstreamConn(Proxy& p, H2UpstreamPool& pool, hbone::PoolKey key, std::string authority,
                 std::string forwarded_for, std::shared_ptr<CircuitBreaker> cb);
  void open();
  // May take another request: not failed or draining, under its stream limit
  // and maxRequestsPerConnection.
  bool accepts() const;
  void add(H2UpstreamStream* s);
  void remove(H2UpstreamStream* s);
  size_t load() const { return streams_.size(); }
  const std::string& pool_key() const { return pool_key_; }
  const CircuitBreaker* breaker() const { return cb_.get(); }
  void close(const std::string& why);

  // h2::StreamHandler (the HBONE stream)
  void on_headers(h2::H2Conn* c, int32_t sid, h2::Headers&& h, bool end_stream) override;
  void on_data(h2::H2Conn* c, int32_t sid, const uint8_t* data, size_t len) override;
  void on_end_stream(h2::H2Conn* c, int32_t sid) override;
  void on_stream_close(h2::H2Conn* c, int32_t sid, uint32_t code) override;
  void on_send_drain(h2::H2Conn* c, int32_t sid) override;
  // h2::H2Conn::Owner (the inner client connection)
  void on_ready(h2::H2Conn* c) override;
  void on_conn_close(h2::H2Conn* c, const std::string& reason) override;
  void on_stream_count(h2::H2Conn* c) override;
  // h2::H2Conn::Output
  void write(std::string&& data) override;
  size_t queued() const override;

 private:
  friend class H2UpstreamPool;
  ~H2UpstreamConn() override;
  enum class State { kOpening, kConnecting, kOpen, kDone };
  void feed();
  void fail_all(UpFailure f, const std::string& why);

  Proxy& p_;
  H2UpstreamPool& pool_;
  hbone::PoolKey key_;
  std::string authority_, forwarded_, pool_key_;
  std::shared_ptr<CircuitBreaker> cb_;
  State state_ = State::kOpening;
  uint64_t ticket_ = 0;
  h2::H2Conn* hbone_ = nullptr;
  int32_t hsid_ = -1;
  std::unique_ptr<h2::H2Conn> inner_;
  std::string held_;  // HBONE bytes the inner connection did not take yet
  std::set<H2UpstreamStream*> streams_;
  uint64_t requests_ = 0;
  bool dead_ = false;
  Timer idle_timer_;  // closes the connection after kIdleMs without a stream
};

class H2UpstreamPool {
 public:
  explicit H2UpstreamPool(Proxy& p);
  ~H2UpstreamPool();
  H2UpstreamPool(const H2UpstreamPool&) = delete;
  H2UpstreamPool& operator=(const H2UpstreamPool&) = delete;
  // Puts `s` on a connection to `authority` (<pod ip>:<port>) with room, or
  // on a new one. When the circuit breaker `cb` admits no new connection
  // (tcp.maxConnections) and none has room, `s` waits in a queue while
  // http1MaxPendingRequests (it applies to HTTP/2 too, as in Envoy) admits
  // it, and goes on the first connection a finished stream or a closed
  // connection makes room for. False: not even that (the caller answers 503
  // UO and abandons s).
  bool assign(H2UpstreamStream* s, const hbone::PoolKey& key, const std::string& authority,
              const std::string& forwarded_for, const std::shared_ptr<CircuitBreaker>& cb);
  // A stream or a connection ended: the queue is tried on the next turn.
  void wake();
  // A waiting stream goes away (abandoned): it leaves the queue.
  void unwait(H2UpstreamStream* s);
  size_t waiting() const { return waiting_.size(); }
  // A connection has no stream left: one idle per endpoint stays for
  // H2UpstreamConn::kIdleMs, the others for a second (a burst's extra
  // connections serve the next burst), retired ones close now.
  void idle(H2UpstreamConn* c);
  void gone(H2UpstreamConn* c);
  void close_all();
  size_t connections() const;

 private:
  struct Waiter {
    H2UpstreamStream* s;
    hbone::PoolKey key;
    std::string authority, forwarded;
    std::shared_ptr<CircuitBreaker> cb;
  };
  bool place(H2UpstreamStream* s, const hbone::PoolKey& key, const std::string& authority,
             const std::string& forwarded_for, const std::shared_ptr<CircuitBreaker>& cb);
  void try_waiting();

  Proxy& p_;
  std::map<std::string, std::vector<H2UpstreamConn*>> conns_;
  std::deque<Waiter> waiting_;  // in arrival order
  Timer wake_timer_;
  bool wake_armed_ = false;
};

}  // namespace warren::waypoint
