#include "proxy.h"

#include <spdlog/spdlog.h>

#include "session.h"
#include "upstream_h2.h"
#include "upstream.h"
#include "warren/defer.h"

namespace warren::waypoint {

Proxy::Proxy(uv_loop_t* loop, ProxyOptions opts) : loop_(loop), opts_(std::move(opts)) {
  req_metrics_ = std::make_unique<RequestMetrics>(registry_);
  auto& reloads = registry_.counter("warren_waypoint_config_reloads_total",
                                    "Configuration loads by result", {"result"});
  reloads_ok_ = reloads.with({"success"});
  reloads_failed_ = reloads.with({"failure"});
  // Envoy's RBAC LOG filter (Istio AUDIT policies): rbac.logged / rbac.not_logged.
  auto& audit = registry_.counter("warren_waypoint_rbac_audit_total",
                                  "Requests an AUDIT AuthorizationPolicy applied to, by whether one matched",
                                  {"result"});
  audit_logged_ = audit.with({"logged"});
  audit_not_logged_ = audit.with({"not_logged"});
  // Envoy's network RBAC filter stats (rbac.allowed / rbac.denied) for opaque TCP.
  auto& tcp_rbac = registry_.counter("warren_waypoint_tcp_rbac_total",
                                     "Opaque TCP streams by the L4 AuthorizationPolicy decision", {"result"});
  tcp_allowed_ = tcp_rbac.with({"allowed"});
  tcp_denied_ = tcp_rbac.with({"denied"});
  sessions_gauge_ = registry_.gauge("warren_waypoint_sessions", "Open CONNECT streams from clients").with(
      std::vector<std::string>{});
  auto& pc = registry_.counter("warren_waypoint_upstream_connects_total", "HBONE connections dialled");
  auto& pr = registry_.counter("warren_waypoint_upstream_reuses_total", "HBONE streams on pooled connections");
  auto& pg = registry_.gauge("warren_waypoint_upstream_connections", "Open upstream HBONE connections");
  auto& ps = registry_.gauge("warren_waypoint_upstream_streams", "Open upstream HBONE streams");
  pool_ = std::make_unique<hbone::Pool>(
      *this, hbone::PoolMetrics{pc.with(std::vector<std::string>{}), pr.with(std::vector<std::string>{}),
                                pg.with(std::vector<std::string>{}), ps.with(std::vector<std::string>{})});
  if (opts_.access_log == "-") {
    access_ = stdout;
  } else if (!opts_.access_log.empty()) {
    access_ = std::fopen(opts_.access_log.c_str(), "a");
    own_access_ = access_ != nullptr;
    if (!access_) spdlog::warn("access log {}: cannot open", opts_.access_log);
  }
}

Proxy::~Proxy() {
  stop();
  if (own_access_) std::fclose(access_);
}

Result<SSL_CTX*> Proxy::client_ctx(const std::string& identity) {
  if (!state_ || identity != state_->self.identity || !client_ctx_)
    return make_error(Errc::kNotFound, "no certificate for " + identity);
  return client_ctx_.get();
}

Result<void> Proxy::load_certs(const config::Snapshot& mesh, const std::string& identity) {
  if (mesh.certificates.dir.empty())
    return make_error(Errc::kInvalidArgument, "/certificates/dir: is required");
  if (auto r = store_.load(mesh.certificates.dir, mesh.certificates.root_cert); !r.ok())
    return r.error().wrap("loading certificates from " + mesh.certificates.dir);
  auto id = store_.get(identity);
  if (!id) return make_error(Errc::kNotFound, "no certificate for the waypoint's identity " + identity);
  auto s = tls::make_server_ctx(*id, store_.root_ptrs(), mesh.trust_domain);
  if (!s.ok()) return s.error();
  auto c = tls::make_client_ctx(*id, store_.root_ptrs());
  if (!c.ok()) return c.error();
  server_ctx_ = std::move(*s);
  client_ctx_ = std::move(*c);
  return {};
}

Result<void> Proxy::start() {
  if (opts_.controller.enabled()) return start_controller();
  auto st = load_state(opts_.config_path);
  if (!st.ok()) return st.error();
  for (const auto& w : (*st)->warnings) spdlog::warn("{}: {}", opts_.config_path, w);
  if (auto r = load_certs(*(*st)->mesh, (*st)->self.identity); !r.ok()) return r;
  state_ = *st;
  if (auto r = open(); !r) return r;
  uv_fs_poll_init(loop_, &config_poll_);
  config_poll_.data = this;
  polling_ = true;
  uv_fs_poll_start(
      &config_poll_,
      [](uv_fs_poll_t* h, int status, const uv_stat_t*, const uv_stat_t*) {
        if (status == 0) (void)static_cast<Proxy*>(h->data)->reload();
      },
      opts_.config_path.c_str(), opts_.config_poll_ms);
  return {};
}

Result<void> Proxy::open() {
  const auto& self = state_->self;
  auto l = net::TcpListener::listen(loop_, SockAddr{self.address, state_->mesh->listeners.hbone_port},
                                    &Proxy::on_accept, this);
  if (!l.ok()) return l.error();
  listener_ = *l;
  setup_admin();
  const auto& ls = state_->mesh->listeners;
  auto a = admin_->listen(ls.admin);
  if (!a.ok()) return a.error();
  auto m = metrics_srv_->listen(ls.metrics);
  if (!m.ok()) return m.error();
  auto rd = ready_srv_->listen(ls.readiness);
  if (!rd.ok()) return rd.error();
  reloads_ok_->inc();
  apply_zipkin();
  uv_signal_init(loop_, &sighup_);
  sighup_.data = this;
  uv_signal_start(
      &sighup_, [](uv_signal_t* h, int) { (void)static_cast<Proxy*>(h->data)->reload(); }, SIGHUP);
  for (auto* sig : {&sigterm_, &sigint_}) {
    uv_signal_init(loop_, sig);
    sig->data = this;
    uv_signal_start(
        sig,
        [](uv_signal_t* h, int signum) {
          spdlog::info("signal {}: shutting down", signum);
          static_cast<Proxy*>(h->data)->stop();
        },
        sig == &sigterm_ ? SIGTERM : SIGINT);
  }
  signals_ = true;
  spdlog::info(
      "warren-waypoint {}/{} ({}) ready on {}:{}: {} routes, {} destination rules, admin {}, metrics {}",
      self.namespace_, self.name, self.identity, self.address.to_string(), ls.hbone_port,
      state_->routes.size(), state_->rules.size(), a->to_string(), m->to_string());
  return {};
}

void Proxy::apply_zipkin() {
  if (state_->zipkin == zipkin_addr_ && (zipkin_ || zipkin_addr_.empty())) return;
  if (zipkin_) zipkin_->close();
  zipkin_.reset();
  zipkin_addr_ = state_->zipkin;
  if (!zipkin_addr_.empty()) zipkin_ = std::make_unique<ZipkinExporter>(loop_, zipkin_addr_);
}

// ---- controller mode (controller_source.h) -------------------------------------------------

Result<void> Proxy::start_controller() {
  source_ = std::make_unique<ControllerSource>(loop_, opts_.controller, store_);
  return source_->start([this](StatePtr st) { return install(std::move(st)); },
                        [this](const certs::IdentityStore::ReloadReport&) { refresh_tls(); });
}

Result<void> Proxy::install(StatePtr st) {
  if (stopped_) return make_error(Errc::kUnavailable, "the waypoint is stopping");
  if (state_ && (st->self.identity != state_->self.identity || st->self.address != state_->self.address)) {
    reloads_failed_->inc();
    return make_error(Errc::kInvalidArgument,
                      "the waypoint's identity and address cannot change while running (" + state_->self.identity +
                          " at " + state_->self.address.to_string() + ")");
  }
  bool first = !state_;
  state_ = std::move(st);
  if (listener_) {
    reloads_ok_->inc();
    apply_zipkin();
    spdlog::info("configuration from the controller: {} routes, {} destination rules", state_->routes.size(),
                 state_->rules.size());
  } else if (first) {
    spdlog::info("first configuration from the controller ({}); waiting for the certificate of {}",
                 state_->self.address.to_string(), state_->self.identity);
  }
  if (!server_ctx_ || !listener_) refresh_tls();  // else only a new certificate rebuilds the contexts
  return {};
}

void Proxy::refresh_tls() {
  if (!state_ || stopped_) return;
  auto id = store_.get(state_->self.identity);
  if (!id) return;
  auto s = tls::make_server_ctx(*id, store_.root_ptrs(), state_->mesh->trust_domain);
  auto c = tls::make_client_ctx(*id, store_.root_ptrs());
  if (!s.ok() || !c.ok()) {
    spdlog::error("certificate for {} unusable: {}", state_->self.identity,
                  (!s.ok() ? s.error() : c.error()).message);
    return;
  }
  server_ctx_ = std::move(*s);
  client_ctx_ = std::move(*c);
  if (listener_) return;
  if (auto r = open(); !r) {
    spdlog::error("warren-waypoint cannot open its listeners (retrying with the next update): {}",
                  r.error().message);
    if (listener_) listener_->close();
    listener_ = nullptr;
    for (auto* srv : {&admin_, &metrics_srv_, &ready_srv_})
      if (*srv) (*srv)->close();
  }
}

Result<void> Proxy::reload() {
  if (stopped_ || source_) return {};  // controller mode: nothing to re-read
  auto st = load_state(opts_.config_path);
  if (!st.ok()) {
    reloads_failed_->inc();
    spdlog::error("configuration rejected, keeping version in force: {}", st.error().message);
    return st.error();
  }
  const auto& cur = state_->self;
  const auto& nw = (*st)->self;
  if (nw.identity != cur.identity || nw.address != cur.address) {
    reloads_failed_->inc();
    spdlog::error("configuration rejected: the waypoint's identity and address cannot change while running");
    return make_error(Errc::kInvalidArgument, "identity or address changed");
  }
  if (auto r = load_certs(*(*st)->mesh, nw.identity); !r.ok()) {
    reloads_failed_->inc();
    spdlog::error("certificates rejected, keeping the current ones: {}", r.error().message);
  }
  for (const auto& w : (*st)->warnings) spdlog::warn("{}: {}", opts_.config_path, w);
  state_ = *st;
  apply_zipkin();
  reloads_ok_->inc();
  spdlog::info("configuration reloaded: {} routes, {} destination rules", state_->routes.size(),
               state_->rules.size());
  return {};
}

void Proxy::setup_admin() {
  admin_ = std::make_unique<http::Server>(loop_);
  metrics_srv_ = std::make_unique<http::Server>(loop_);
  ready_srv_ = std::make_unique<http::Server>(loop_);
  auto ready = [this](const http::Request&) {
    http::Response r;
    r.status = stopped_ ? 503 : 200;
    r.body = stopped_ ? "not ready\n" : "ready\n";
    return r;
  };
  auto metrics = [this](const http::Request&) {
    http::Response r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = registry_.render();
    return r;
  };
  admin_->route("GET", "/healthz/ready", ready);
  ready_srv_->route("GET", "/healthz/ready", ready);
  metrics_srv_->route("GET", "/metrics", metrics);
  admin_->route("GET", "/stats/prometheus", metrics);
  admin_->route("GET", "/config_dump", [this](const http::Request&) {
    http::Response r;
    r.content_type = "application/json";
    nlohmann::json j;
    j["waypoint"] = {{"name", state_->self.name},
                     {"namespace", state_->self.namespace_},
                     {"identity", state_->self.identity},
                     {"address", state_->self.address.to_string()}};
    j["mesh"] = config::to_json(*state_->mesh);
    j["routing"] = state_->source;
    j["warnings"] = state_->warnings;
    j["sessions"] = sessions_.size();
    j["upstreamConnections"] = pool_->connections();
    j["idleUpstreamStreams"] = idle_count_;
    if (source_) j["source"] = source_->status_json();
    r.body = j.dump(2);
    return r;
  });
  admin_->route("POST", "/quitquitquit", [this](const http::Request&) {
    defer(loop_, [this] { stop(); });
    http::Response r;
    r.body = "stopping\n";
    return r;
  });
}

void Proxy::stop() {
  if (stopped_) return;
  stopped_ = true;
  if (listener_) listener_->close();
  listener_ = nullptr;
  std::vector<h2::H2Conn*> all;
  for (auto& [c, e] : conns_) all.push_back(c);
  for (auto* c : all) c->close("shutting down");
  std::vector<UpstreamLeg*> idle;
  for (auto& [k, v] : idle_) idle.insert(idle.end(), v.begin(), v.end());
  for (auto* l : idle) l->abandon();
  if (h2_up_) h2_up_->close_all();
  pool_->close_all();
  pool_->stop_timer();
  if (zipkin_) {
    zipkin_->flush();
    zipkin_->close();
  }
  if (admin_) admin_->close();
  if (metrics_srv_) metrics_srv_->close();
  if (ready_srv_) ready_srv_->close();
  if (source_) source_->stop();
  if (polling_) uv_close(reinterpret_cast<uv_handle_t*>(&config_poll_), nullptr);
  if (signals_)
    for (auto* s : {&sighup_, &sigterm_, &sigint_}) uv_close(reinterpret_cast<uv_handle_t*>(s), nullptr);
  polling_ = signals_ = false;
}

void Proxy::on_accept(void* ctx, uv_stream_t* server) { static_cast<Proxy*>(ctx)->accept(server); }

void Proxy::accept(uv_stream_t* server) {
  auto* tcp = net::TcpConn::create(loop_);
  if (tcp->accept_from(server) != 0 || !server_ctx_) {
    tcp->close();
    return;
  }
  PeerInfo info{tcp->local(), tcp->peer(), ""};
  auto conn = std::make_unique<h2::H2Conn>(tcp, server_ctx_.get(), true, this);
  h2::H2Conn* c = conn.get();
  conns_[c] = {std::move(conn), info};
  c->start();
}

void Proxy::on_ready(h2::H2Conn* c) {
  auto id = tls::peer_spiffe_id(c->tls().ssl());
  if (!id.ok()) {
    c->close("client identity: " + id.error().message);
    return;
  }
  conns_.at(c).second.identity = *id;
}

const Proxy::PeerInfo* Proxy::peer(h2::H2Conn* c) const {
  auto it = conns_.find(c);
  return it == conns_.end() ? nullptr : &it->second.second;
}

h2::StreamHandler* Proxy::on_new_stream(h2::H2Conn* c, int32_t sid) {
  auto* s = new Session(*this, c, sid);
  sessions_[s] = true;
  sessions_gauge_->set(static_cast<int64_t>(sessions_.size()));
  return s;
}

void Proxy::session_gone(Session* s) {
  sessions_.erase(s);
  sessions_gauge_->set(static_cast<int64_t>(sessions_.size()));
  defer(loop_, [s] { delete s; });
}

void Proxy::on_conn_close(h2::H2Conn* c, const std::string& reason) {
  auto it = conns_.find(c);
  if (it == conns_.end()) return;
  spdlog::debug("waypoint: connection from {} closed: {}", it->second.second.peer.to_string(), reason);
  auto owned = std::make_shared<std::unique_ptr<h2::H2Conn>>(std::move(it->second.first));
  conns_.erase(it);
  defer(loop_, [owned] { owned->reset(); });
}

Cluster& Proxy::cluster(const std::string& host, const std::string& subset, const TrafficPolicy& policy) {
  auto& c = clusters_[host + "|" + subset];
  if (!c) c = std::make_unique<Cluster>();
  if (c->lb_kind != policy.lb.kind || c->lb.policy().hash.name != policy.lb.hash.name) {
    c->lb = LoadBalancer(policy.lb);
    c->lb_kind = policy.lb.kind;
  }
  c->outlier.set_policy(policy.outlier);
  c->cb->set_limits(policy.pool);
  c->cb->set_retry_budget(policy.retry_budget);
  return *c;
}

H2UpstreamPool& Proxy::h2_upstreams() {
  if (!h2_up_) h2_up_ = std::make_unique<H2UpstreamPool>(*this);
  return *h2_up_;
}

void Proxy::park(UpstreamLeg* leg) {
  auto& v = idle_[leg->authority() + "|" + leg->key().dst_identity];
  if (v.size() >= kIdlePerEndpoint || stopped_) {
    leg->abandon();
    return;
  }
  leg->set_owner(nullptr);
  leg->parked = true;
  v.push_back(leg);
  ++idle_count_;
  if (const CircuitBreaker* cb = leg->breaker()) wake_pending(cb);  // a request may take it
}

UpstreamLeg* Proxy::take(const std::string& authority, const std::string& identity) {
  auto it = idle_.find(authority + "|" + identity);
  while (it != idle_.end() && !it->second.empty()) {
    UpstreamLeg* leg = it->second.back();
    it->second.pop_back();
    --idle_count_;
    leg->parked = false;
    if (leg->reusable()) return leg;
    leg->abandon();
  }
  return nullptr;
}

bool Proxy::evict_idle(const CircuitBreaker* cb) {
  for (auto& [k, v] : idle_)
    for (auto* leg : v)
      if (leg->breaker() == cb) {
        unpark(leg);
        leg->abandon();
        return true;
      }
  return false;
}

void Proxy::wait_for_connection(const CircuitBreaker* cb, Session* s, bool front) {
  auto& q = pending_[cb];
  if (front) q.push_front(s);
  else q.push_back(s);
}

void Proxy::stop_waiting(const CircuitBreaker* cb, Session* s) {
  auto it = pending_.find(cb);
  if (it == pending_.end()) return;
  auto& q = it->second;
  for (auto i = q.begin(); i != q.end(); ++i)
    if (*i == s) {
      q.erase(i);
      break;
    }
  if (q.empty()) pending_.erase(it);
}

void Proxy::wake_pending(const CircuitBreaker* cb) {
  if (pending_.find(cb) == pending_.end() || stopped_) return;
  // From the loop: the caller may be in the middle of releasing the connection.
  defer(loop_, [this, cb] {
    auto it = pending_.find(cb);
    if (it == pending_.end() || stopped_) return;
    Session* s = it->second.front();
    it->second.pop_front();
    if (it->second.empty()) pending_.erase(it);
    s->connection_available();
  });
}

void Proxy::unpark(UpstreamLeg* leg) {
  auto it = idle_.find(leg->authority() + "|" + leg->key().dst_identity);
  if (it == idle_.end()) return;
  auto& v = it->second;
  for (auto i = v.begin(); i != v.end(); ++i)
    if (*i == leg) {
      v.erase(i);
      --idle_count_;
      break;
    }
  leg->parked = false;
  if (v.empty()) idle_.erase(it);
}

void Proxy::export_span(const RequestRecord& r, const Span& span) {
  if (!zipkin_ || !span.sampled) return;
  ZipkinEndpoint self{"warren-waypoint." + state_->self.namespace_, state_->self.address.to_string(), 15008};
  zipkin_->enqueue(server_span(r, span, self));
}

void Proxy::write_access_log(const RequestRecord& r) {
  if (!access_) return;
  std::string line = access_log_json(r);
  line.push_back('\n');
  std::fwrite(line.data(), 1, line.size(), access_);
  std::fflush(access_);
}

}  // namespace warren::waypoint
