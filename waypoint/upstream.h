// One HBONE stream from the waypoint to an endpoint (CONNECT to
// <pod ip>:<target port> through the pool, with the waypoint's identity).
// In HTTP mode it carries request bytes out and parses responses; in raw
// mode it relays bytes. Owned by itself: it deletes itself (deferred) once
// its stream is gone or it was abandoned; the session only detaches.
#pragma once

#include <memory>
#include <string>

#include "http1.h"
#include "warren/h2_conn.h"
#include "warren/hbone_pool.h"

namespace warren::waypoint {

class Proxy;
class Session;

// One attempt's way to an endpoint, as the session drives it: request bytes
// out (HTTP/1 bytes for an UpstreamLeg, DATA for an H2UpstreamStream),
// backpressure, and letting go. Responses come back through Session::up_*.
class Leg {
 public:
  virtual void send(std::string_view data) = 0;
  virtual void end() = 0;                // the request is whole
  virtual void abandon() = 0;            // reset and forget (the session is done with it)
  virtual size_t buffered() const = 0;   // request bytes not yet gone
  virtual void resume() = 0;             // the downstream drained: deliver again
  virtual bool http2() const { return false; }

 protected:
  virtual ~Leg() = default;
};

class UpstreamLeg : public Leg, public h2::StreamHandler, public Http1Handler {
 public:
  static constexpr size_t kHigh = 256 << 10;

  UpstreamLeg(Proxy& p, Session* owner, hbone::PoolKey key, std::string authority,
              std::string forwarded_for, bool raw);
  // Asks the pool for a stream; the outcome comes back to the session.
  void open();
  void set_owner(Session* s) { owner_ = s; }
  // A circuit breaker connection slot this leg holds until it is gone.
  void hold_connection(std::shared_ptr<class CircuitBreaker> cb) { cb_ = std::move(cb); }
  // Request bytes; queued until the tunnel is open.
  void send(std::string_view data) override;
  void end() override;                   // END_STREAM once sent
  void abandon() override;               // reset and forget (the session is done with it)
  size_t buffered() const override;
  void resume() override;                // the downstream drained: read again
  // HTTP mode: the method of the request the next response answers.
  void expect_response(std::string_view method);
  // Open, its last response complete and keep-alive (may be asked from
  // inside the response's on_complete).
  bool reusable() const;
  bool open_ok() const { return state_ == State::kOpen; }
  const std::string& authority() const { return authority_; }
  const hbone::PoolKey& key() const { return key_; }
  uint64_t requests = 0;
  bool parked = false;  // in the proxy's idle pool (Proxy::park)
  const CircuitBreaker* breaker() const { return cb_.get(); }

  // h2::StreamHandler
  void on_headers(h2::H2Conn* c, int32_t sid, h2::Headers&& h, bool end_stream) override;
  void on_data(h2::H2Conn* c, int32_t sid, const uint8_t* data, size_t len) override;
  void on_end_stream(h2::H2Conn* c, int32_t sid) override;
  void on_stream_close(h2::H2Conn* c, int32_t sid, uint32_t code) override;
  void on_send_drain(h2::H2Conn* c, int32_t sid) override;
  // Http1Handler (responses)
  void on_head(MessageHead head) override;
  void on_body(std::string_view data) override;
  void on_trailers(Headers trailers) override;
  void on_complete() override;

 private:
  enum class State { kNew, kOpening, kConnecting, kOpen, kDone };
  ~UpstreamLeg() override;
  void fail(int kind, const std::string& why);
  void die();
  void pump();

  Proxy& p_;
  Session* owner_;
  hbone::PoolKey key_;
  std::string authority_, forwarded_;
  bool raw_;
  State state_ = State::kNew;
  uint64_t ticket_ = 0;
  h2::H2Conn* conn_ = nullptr;
  int32_t sid_ = -1;
  std::string queued_;
  bool end_queued_ = false;
  bool ended_ = false;
  bool peer_ended_ = false;
  bool dying_ = false;
  bool response_keep_alive_ = true;
  bool in_response_ = false;
  std::unique_ptr<Http1Parser> parser_;
  std::string unparsed_;  // response bytes held while the downstream is full
  size_t unconsumed_ = 0;
  std::shared_ptr<CircuitBreaker> cb_;
};

}  // namespace warren::waypoint
