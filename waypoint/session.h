// One CONNECT stream into the waypoint: a client's TCP connection to a
// service (or pod) behind it, carried by the client's node over HBONE.
//
// The first bytes decide the protocol: an HTTP/1 request line makes it an
// HTTP/1.1 session (requests parsed, normalised, routed one at a time, each
// forwarded over an HBONE stream to the chosen endpoint, the response parsed
// and relayed back); the HTTP/2 preface makes it an HTTP/2 session (an inner
// cleartext HTTP/2 server over the tunnelled bytes, session_h2.cpp, each of
// its streams a request of its own); anything else is carried opaquely to
// one endpoint of the service (L4 only). Backpressure both ways: downstream
// bytes are only acknowledged to HTTP/2 flow control once forwarded,
// upstream response bytes only once the downstream stream took them.
//
// A request goes through the same pipeline whatever its protocol (one
// Exchange: authentication, authorization, routing, faults, attempts,
// retries, timeouts, mirrors, telemetry); what differs is how its response
// is written (HTTP/1 bytes on the CONNECT stream, or HEADERS/DATA/trailers
// on an inner HTTP/2 stream) and how it goes upstream (an UpstreamLeg with
// HTTP/1.1, or an H2UpstreamStream on a multiplexed HTTP/2 connection). For
// HTTP/2 each inner stream is a Session of its own (Mode::kH2Stream) that
// shares the CONNECT stream's context.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "authz.h"
#include "http1.h"
#include "request_authn.h"
#include "resilience.h"
#include "http1_forward.h"
#include "route_table.h"
#include "state.h"
#include "telemetry.h"
#include "warren/defer.h"
#include "warren/h2_conn.h"
#include "warren/recycle.h"

namespace warren::waypoint {

class Proxy;
class Leg;
class H2Downstream;

// Why an upstream attempt ended without a usable response.
enum class UpFailure { kConnect, kReset, kRefused };

class Session : public h2::StreamHandler, public Http1Handler, public Recycled<Session> {
 public:
  Session(Proxy& p, h2::H2Conn* c, int32_t sid);
  // One stream of the inner HTTP/2 connection of `parent` (an HTTP/2 session).
  Session(Session& parent, h2::H2Conn* inner, int32_t sid);
  ~Session() override;

  // h2::StreamHandler (the downstream CONNECT stream)
  void on_headers(h2::H2Conn* c, int32_t sid, h2::Headers&& h, bool end_stream) override;
  void on_data(h2::H2Conn* c, int32_t sid, const uint8_t* data, size_t len) override;
  void on_trailers(h2::H2Conn* c, int32_t sid, h2::Headers&& h) override;
  void on_end_stream(h2::H2Conn* c, int32_t sid) override;
  void on_stream_close(h2::H2Conn* c, int32_t sid, uint32_t code) override;
  void on_send_drain(h2::H2Conn* c, int32_t sid) override;

  // Http1Handler (requests from the client)
  void on_head(MessageHead head) override;
  void on_body(std::string_view data) override;
  void on_trailers(Headers trailers) override;
  void on_complete() override;

  // From the upstream leg.
  void up_open(Leg* l);
  void up_failed(Leg* l, UpFailure f, const std::string& why);
  void up_response_head(Leg* l, MessageHead& h);
  void up_response_body(Leg* l, std::string_view data);
  void up_response_trailers(Leg* l, Headers& t);
  void up_response_complete(Leg* l);
  void up_raw(Leg* l, std::string_view data);  // opaque mode
  void up_raw_end(Leg* l);
  void up_drained(Leg* l);
  bool downstream_full() const;

  void shutdown(const std::string& why);
  // A request waiting for a connection (http1MaxPendingRequests) may try again.
  void connection_available();

  // HTTP/2 session (session_h2.cpp), from its inner connection.
  void h2_output(std::string&& data);  // frames for the client
  size_t h2_output_queued() const;
  void h2_closed(const std::string& reason);
  void h2_stream_gone();

 private:
  enum class Mode {
    kConnect,
    kDetect,
    kHttp1,
    kH2,        // the CONNECT stream carries HTTP/2: an inner server runs over it
    kH2Stream,  // one stream of that inner server: one request
    kOpaque,
    kDone
  };
  struct Exchange;
  struct Pick {
    const config::Workload* ep = nullptr;
    SockAddr addr;
    struct Cluster* cluster = nullptr;
    std::string error;
  };
  Pick pick_endpoint(const std::string& host, uint16_t port, const std::string& subset);
  // Whether a request to (host, port, subset) goes upstream as HTTP/2.
  bool upstream_h2(const std::string& host, uint16_t port, const std::string& subset) const;
  RequestView view() const;
  // The attempt in flight ended with `o`: in-flight count, outlier detection.
  void attempt_done(const Outcome& o, bool record = true);
  void route_request();           // after authentication and authorization
  void check_custom(const std::string& provider);
  void fire_mirrors();
  RequestAttrs connection_attrs() const;
  RequestAttrs attrs(const std::string& service) const;

  void refuse(int status, const std::string& why);
  void process();
  void process_once();
  void start_opaque();
  // The first request fields of an exchange, whatever the protocol.
  void begin_exchange(MessageHead head, const char* protocol);
  // HTTP/2 (session_h2.cpp).
  void start_h2();
  void process_h2();
  void process_h2_stream();
  void h2_request(h2::Headers&& h, bool end_stream);
  void h2_head_timeout();  // the stream's header block did not end in time
  void h2_response_head(MessageHead& h);
  void h2_response_end();
  void h2_local_reply(int status, const std::string& body, const std::string& details, const Headers& extra);
  void start_h2_attempt(const config::Workload& ep, const SockAddr& addr);
  void mirror_h2(const MessageHead& h, const config::Workload& ep, const SockAddr& addr);
  void dispatch();                 // route the parsed head and start an attempt
  void start_attempt();
  void start_grpc_deadline(const HttpRoute* route);  // grpc-timeout
  // Schedules another attempt when the policy allows (status: an upstream
  // response status, else a failure of kind f).
  bool maybe_retry(UpFailure f, int status, const std::string& why);
  void retry_or_fail(UpFailure f, const std::string& why);
  void local_reply(int status, std::string body, const std::string& flags,
                   const std::string& details, const Headers& extra = {});
  void send_down(std::string_view data);
  std::string last_chunk() const;  // the end of a chunked request body for an HTTP/1.1 upstream
  void finish_exchange();
  void leave_pending();  // no longer waiting for a connection (answered, gone)
  void end_down();

  Proxy& p_;
  h2::H2Conn* conn_;
  int32_t sid_;
  StatePtr state_;
  Mode mode_ = Mode::kConnect;
  bool closed_ = false;   // the downstream stream is gone
  bool down_eof_ = false;
  bool down_ended_ = false;
  SockAddr authority_;
  Target target_;
  std::string src_identity_;
  SockAddr src_addr_;
  const config::Workload* src_ = nullptr;
  std::string in_;          // downstream bytes not yet processed
  size_t unconsumed_ = 0;   // received, not yet acknowledged to flow control
  std::unique_ptr<Http1Parser> parser_;
  std::unique_ptr<Exchange> ex_;
  Leg* leg_ = nullptr;               // the attempt in flight (or the opaque leg)
  std::unique_ptr<H2Downstream> h2_;  // kH2: the inner HTTP/2 server
  Session* parent_ = nullptr;         // kH2Stream: the HTTP/2 session
  Timer timeout_, retry_timer_, delay_timer_, head_timer_;
  Timer duration_timer_;  // grpc-timeout (Envoy's max stream duration from the header)
  bool head_timing_ = false;  // a request head has started and not ended
  bool in_process_ = false, again_ = false;
  std::string src_ip_text_, dst_ip_text_;
  mutable std::string service_key_;
  std::unique_ptr<class ExtAuthzCall> ext_authz_;
};

}  // namespace warren::waypoint
