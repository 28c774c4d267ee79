// warren-waypoint, the process: the HBONE server nodes send traffic to
// (TLS with the waypoint's own identity, HTTP/2 CONNECT), the per-stream
// sessions that parse and route it (session.h), the HBONE pool it forwards
// through, configuration reloads, admin, metrics and the access log.
#pragma once

#include <uv.h>

#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>

#include "controller_source.h"
#include "load_balancer.h"
#include "resilience.h"
#include "state.h"
#include "telemetry.h"
#include "trace.h"
#include "zipkin.h"
#include "warren/certs.h"
#include "warren/h2_conn.h"
#include "warren/hbone_pool.h"
#include "warren/http_server.h"
#include "warren/metrics.h"
#include "warren/tcp.h"
#include "warren/tls_context.h"

namespace warren::waypoint {

struct ProxyOptions {
  std::string config_path;  // file mode
  // Controller mode when controller.address is set (controller_source.h):
  // the listeners open once the first configuration and certificate arrived.
  ControllerSourceOptions controller;
  std::string access_log = "-";  // file, "-" stdout, "" none
  uint32_t connect_timeout_ms = 10000;
  uint32_t config_poll_ms = 500;
};

class Session;
class UpstreamLeg;
class H2UpstreamPool;

// What the proxy keeps per destination (host, subset) across requests and
// reloads: its load balancer, outlier detector, circuit breaker and the
// requests in flight per endpoint (least request).
struct Cluster {
  LoadBalancer lb;
  LbKind lb_kind = LbKind::kLeastRequest;
  OutlierDetector outlier;
  std::shared_ptr<CircuitBreaker> cb = std::make_shared<CircuitBreaker>();
  std::map<std::string, uint32_t, std::less<>> active;
  std::vector<std::string> endpoints;  // the outlier detector's set, as last given
};

class Proxy : public h2::H2Conn::Owner, public hbone::PoolEnv {
 public:
  Proxy(uv_loop_t* loop, ProxyOptions opts);
  ~Proxy() override;
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  // Loads configuration and certificates, opens the HBONE listener on
  // <address>:15008 and the admin, metrics and readiness servers. On error
  // nothing is left listening. Controller mode: starts the subscription; the
  // rest happens when the configuration and certificate arrive.
  Result<void> start();
  void stop();
  // Re-reads the file; keeps the current state on any error.
  Result<void> reload();

  const StatePtr& state() const { return state_; }
  hbone::Pool& pool() { return *pool_; }
  RequestMetrics& request_metrics() { return *req_metrics_; }
  // A request some AUDIT policy applied to: whether one matched (logged).
  void count_audit(bool logged) { (logged ? audit_logged_ : audit_not_logged_)->inc(); }
  // Opaque TCP streams the waypoint's L4 AuthorizationPolicy allowed or denied.
  void count_tcp_authz(bool allowed) { (allowed ? tcp_allowed_ : tcp_denied_)->inc(); }
  Rng& rng() { return rng_; }
  uint32_t next_rr() { return rr_++; }
  // The cluster for (host, subset), its settings brought up to `policy`.
  Cluster& cluster(const std::string& host, const std::string& subset, const TrafficPolicy& policy);
  void write_access_log(const RequestRecord& r);
  // A sampled request's span to the Zipkin collector, when one is configured.
  void export_span(const RequestRecord& r, const Span& span);

  // Per downstream connection (from a node, or any HBONE client).
  struct PeerInfo {
    SockAddr local, peer;
    std::string identity;  // SPIFFE id from the client certificate
  };
  const PeerInfo* peer(h2::H2Conn* c) const;
  void session_gone(Session* s);

  // Idle upstream legs (HTTP/1.1 keep-alive connections to an endpoint,
  // each one HBONE stream), shared by all sessions as Envoy's per-host
  // connection pool: park() after a complete exchange, take() for the next
  // request to the same endpoint (nullptr: none idle).
  void park(UpstreamLeg* leg);
  UpstreamLeg* take(const std::string& authority, const std::string& identity);
  void unpark(UpstreamLeg* leg);  // the leg is going away
  // http1MaxPendingRequests: requests waiting for a connection of a full
  // cluster (`cb`), in order; `front` for one that was woken and still found
  // none. wake_pending (a connection slot freed or an idle one appeared)
  // resumes the first, from the loop.
  void wait_for_connection(const CircuitBreaker* cb, Session* s, bool front);
  void stop_waiting(const CircuitBreaker* cb, Session* s);
  void wake_pending(const CircuitBreaker* cb);
  // Closes one idle leg counted by `cb` (a connection slot of a full cluster
  // is better spent on the endpoint a request is waiting for); false if none.
  bool evict_idle(const CircuitBreaker* cb);
  size_t idle_legs() const { return idle_count_; }
  // Multiplexed HTTP/2 connections to endpoints (requests that came in over HTTP/2).
  H2UpstreamPool& h2_upstreams();

  // hbone::PoolEnv
  uv_loop_t* loop() override { return loop_; }
  Result<SSL_CTX*> client_ctx(const std::string& identity) override;
  uint32_t connect_timeout_ms() const override { return opts_.connect_timeout_ms; }

  // h2::H2Conn::Owner (downstream)
  h2::StreamHandler* on_new_stream(h2::H2Conn* c, int32_t sid) override;
  void on_ready(h2::H2Conn* c) override;
  void on_conn_close(h2::H2Conn* c, const std::string& reason) override;

 private:
  static void on_accept(void* ctx, uv_stream_t* server);
  void accept(uv_stream_t* server);
  Result<void> load_certs(const config::Snapshot& mesh, const std::string& identity);
  void setup_admin();
  // Listeners, admin servers and signals for state_ (certificates loaded).
  Result<void> open();
  void apply_zipkin();
  // Controller mode: a State from the source; the certificates changed.
  Result<void> start_controller();
  Result<void> install(StatePtr st);
  void refresh_tls();

  uv_loop_t* loop_;
  ProxyOptions opts_;
  StatePtr state_;
  certs::IdentityStore store_;
  tls::SslCtxPtr server_ctx_, client_ctx_;
  metrics::Registry registry_;
  std::unique_ptr<RequestMetrics> req_metrics_;
  metrics::Counter *reloads_ok_ = nullptr, *reloads_failed_ = nullptr;
  metrics::Counter *audit_logged_ = nullptr, *audit_not_logged_ = nullptr;
  metrics::Counter *tcp_allowed_ = nullptr, *tcp_denied_ = nullptr;
  metrics::Gauge* sessions_gauge_ = nullptr;
  std::unique_ptr<hbone::Pool> pool_;
  std::unique_ptr<H2UpstreamPool> h2_up_;  // after pool_: goes first
  net::TcpListener* listener_ = nullptr;
  std::unique_ptr<http::Server> admin_, metrics_srv_, ready_srv_;
  std::unordered_map<h2::H2Conn*, std::pair<std::unique_ptr<h2::H2Conn>, PeerInfo>> conns_;
  std::map<Session*, bool> sessions_;
  std::unique_ptr<ZipkinExporter> zipkin_;
  std::string zipkin_addr_;
  std::FILE* access_ = nullptr;
  bool own_access_ = false;
  DefaultRng rng_;
  uint32_t rr_ = 0;
  std::map<std::string, std::unique_ptr<Cluster>> clusters_;
  std::map<std::string, std::vector<UpstreamLeg*>> idle_;  // by "authority|identity", newest last
  size_t idle_count_ = 0;
  std::map<const CircuitBreaker*, std::deque<Session*>> pending_;
  static constexpr size_t kIdlePerEndpoint = 64;
  uv_fs_poll_t config_poll_{};
  uv_signal_t sighup_{}, sigterm_{}, sigint_{};
  bool polling_ = false, signals_ = false;
  std::unique_ptr<ControllerSource> source_;
  bool stopped_ = false;
};

}  // namespace warren::waypoint
