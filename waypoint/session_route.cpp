// A request: authentication, authorization, routing, the endpoint and each attempt.
#include "ext_authz_client.h"
#include "session_impl.h"
#include "upstream_protocol.h"

namespace warren::waypoint {

using namespace session_detail;

Session::Pick Session::pick_endpoint(const std::string& host, uint16_t port, const std::string& subset) {
  Pick p;
  const State& st = *state_;
  if (host.empty()) {  // a pod behind the waypoint, addressed directly
    p.ep = target_.pod;
    p.addr = SockAddr{target_.pod->ips[0], port};
    return p;
  }
  const config::Service* svc = st.mesh->service_by_hostname(host);
  if (!svc) {
    p.error = "no service " + host;
    return p;
  }
  uint16_t target = 0;
  bool found = false;
  for (const auto& sp : svc->ports)
    if (sp.port == port) {
      target = sp.target_port ? sp.target_port : sp.port;
      found = true;
    }
  if (!found && svc->ports.size() == 1) {
    target = svc->ports[0].target_port ? svc->ports[0].target_port : svc->ports[0].port;
    found = true;
  }
  if (!found) {
    p.error = "service " + host + " has no port " + std::to_string(port);
    return p;
  }
  const Subset* ss = subset.empty() ? nullptr : st.rules.subset(host, subset);
  if (!subset.empty() && !ss) {
    p.error = "no subset " + subset + " of " + host;
    return p;
  }
  const TrafficPolicy& policy = st.rules.policy(host, subset, port);
  Cluster& cl = p_.cluster(host, subset, policy);
  p.cluster = &cl;
  std::vector<const config::Workload*> ws;
  std::vector<std::string_view> keys;  // uids, alive with the snapshot
  for (std::string_view uid : svc->endpoints) {
    const auto* w = st.mesh->workload_by_uid(uid);
    if (!w || w->ips.empty()) continue;
    if (ss && !subset_matches(*ss, w->labels())) continue;
    ws.push_back(w);
    keys.push_back(uid);
  }
  if (ws.empty()) {
    p.error = "no endpoints";
    return p;
  }
  // The detector's endpoint set is rebuilt only when it changed, not per request.
  if (!std::equal(keys.begin(), keys.end(), cl.endpoints.begin(), cl.endpoints.end())) {
    cl.endpoints.assign(keys.begin(), keys.end());
    cl.outlier.set_endpoints(cl.endpoints);
  }
  auto now = std::chrono::steady_clock::now();
  std::vector<Endpoint> eps;
  eps.reserve(ws.size());
  for (size_t i = 0; i < ws.size(); ++i) {
    auto a = cl.active.find(keys[i]);
    eps.push_back({keys[i], a == cl.active.end() ? 0u : a->second, !cl.outlier.ejected(keys[i], now)});
  }
  std::optional<uint64_t> hash;
  if (policy.lb.kind == LbKind::kConsistentHash && ex_) {
    RequestView rv = view();
    std::string src = src_addr_.ip.to_string();
    hash = hash_key(policy.lb.hash, rv, src).hash;
  }
  Rng& rng = p_.rng();
  auto idx = cl.lb.pick(eps, [&rng] { return static_cast<uint32_t>(rng.next64() >> 32); }, hash);
  if (!idx) {
    p.error = "no healthy upstream";
    return p;
  }
  p.ep = ws[*idx];
  p.addr = SockAddr{p.ep->ips[0], target};
  return p;
}

bool Session::upstream_h2(const std::string& host, uint16_t port, const std::string& subset) const {
  bool client_h2 = mode_ == Mode::kH2Stream;
  bool upgrade = ex_ && ex_->head.upgrade;
  const TrafficPolicy& policy = state_->rules.policy(host, subset, port);
  if (host.empty()) return upstream_http2(nullptr, policy.pool, client_h2, upgrade);
  const config::Service* svc = state_->mesh->service_by_hostname(host);
  const config::ServicePort* sp = nullptr;
  if (svc) {
    for (const auto& p : svc->ports)
      if (p.port == port) sp = &p;
    if (!sp && svc->ports.size() == 1) sp = &svc->ports[0];
  }
  if (!sp) return upstream_http2(nullptr, policy.pool, client_h2, upgrade);
  PortProtocol proto = port_protocol(sp->name, sp->app_protocol);
  return upstream_http2(&proto, policy.pool, client_h2, upgrade);
}

RequestView Session::view() const {
  const auto& e = *ex_;
  RequestView rv;
  rv.method = e.head.method;
  rv.authority = e.authority;
  rv.path = e.np.path;
  rv.query = e.np.query;
  rv.headers = &e.head.headers;
  rv.port = authority_.port;
  if (src_) rv.source_namespace = src_->namespace_.str();
  return rv;
}

void Session::start_opaque() {
  mode_ = Mode::kOpaque;
  std::string host = target_.host;
  // L4 AuthorizationPolicy of the waypoint (Envoy's network RBAC filter on
  // the TCP chain): a deny closes the stream before any endpoint is dialled.
  if (state_->authz.size()) {
    RequestAttrs a = connection_attrs();
    a.tcp = true;
    service_key_ = target_.svc ? target_.svc->namespace_ + "/" + target_.svc->name : "";
    a.service = service_key_;
    Decision d = state_->authz.evaluate(a);
    p_.count_tcp_authz(d.kind != Decision::kDeny);
    if (d.kind == Decision::kDeny) {
      spdlog::info("waypoint: TCP from {} to {} denied: {} ({})", src_addr_.to_string(), authority_.to_string(),
                   d.reason, d.policy.empty() ? "none" : d.policy);
      return shutdown("rbac_access_denied_matched_policy[" + (d.policy.empty() ? "none" : d.policy) + "]");
    }
  }
  Pick pk = pick_endpoint(host, authority_.port, "");
  if (!pk.ep) {
    spdlog::info("waypoint: TCP to {}: {}", authority_.to_string(), pk.error);
    return shutdown(pk.error);
  }
  hbone::PoolKey key{state_->self.identity, pk.ep->identity, SockAddr{pk.addr.ip, 15008},
                     state_->self.address};
  auto* leg = new UpstreamLeg(p_, this, key, pk.addr.to_string(), src_addr_.to_string(), true);
  leg_ = leg;
  leg->open();
}

// ---- HTTP/1 requests ----

void Session::on_head(MessageHead head) {
  head_timer_.stop();
  head_timing_ = false;
  const char* protocol = head.version_minor == 0 ? "HTTP/1.0" : "HTTP/1.1";
  begin_exchange(std::move(head), protocol);
  dispatch();
}

void Session::begin_exchange(MessageHead head, const char* protocol) {
  ex_ = std::make_unique<Exchange>();
  auto& e = *ex_;
  e.t0 = std::chrono::steady_clock::now();
  e.rec.start = std::chrono::system_clock::now();
  e.rec.method = head.method;
  e.rec.path = head.target;
  e.rec.authority = header_of(head.headers, "host");
  e.rec.protocol = protocol;
  e.rec.user_agent = header_of(head.headers, "user-agent");
  e.rec.x_forwarded_for = header_of(head.headers, "x-forwarded-for");
  e.rec.downstream_local_address = authority_.to_string();
  e.rec.grpc = is_grpc_request(head.headers);
  e.rec.source.address = src_addr_.to_string();
  e.rec.source.principal = src_identity_;
  if (src_) {
    e.rec.source.workload = src_->name.str();
    e.rec.source.namespace_ = src_->namespace_.str();
    e.rec.source.canonical_service = src_->canonical_name.str();
    e.rec.source.canonical_revision = src_->canonical_revision.str();
  }
  e.down_keep_alive = head.keep_alive;
  e.head = std::move(head);
}

void Session::dispatch() {
  auto& e = *ex_;
  auto& h = e.head;
  auto np = normalize_target(h.target, h.method, state_->path);
  if (!np.ok()) {
    e.down_keep_alive = false;
    return local_reply(400, "bad request: " + np.error().message + "\n", "-", "path_normalization_failed");
  }
  e.np = std::move(*np);
  if (e.np.redirect)
    return local_reply(307, "", "-", "path_normalization_redirect", {{"location", e.np.target()}});

  e.authority = header_of(h.headers, "host");

  // RequestAuthentication: a token that is present must verify (401);
  // requiring one is AuthorizationPolicy's job (requestPrincipals).
  std::string service = target_.svc ? target_.svc->namespace_ + "/" + target_.svc->name : "";
  if (state_->authn.size()) {
    e.authn = state_->authn.authenticate(h.headers, e.np.query, std::chrono::system_clock::now(), service);
    if (e.authn.status == AuthnResult::kInvalid)
      return local_reply(401, e.authn.reason, "-", "jwt_authn_access_denied",
                         {{"www-authenticate", "Bearer realm=\"http://" + e.authority + "\", error=\"invalid_token\""}});
  }
  // L7 AuthorizationPolicy on the normalised path (CUSTOM, DENY, ALLOW).
  if (state_->authz.size()) {
    Decision d = state_->authz.evaluate(attrs(service));
    if (d.audit_evaluated) {
      // AUDIT (Envoy's RBAC LOG action): marks the access log entry, whatever the decision.
      p_.count_audit(d.audit);
      e.rec.audit = d.audit;
      e.rec.audit_policy = d.audit_policy;
    }
    if (d.kind == Decision::kCustom) return check_custom(d.provider);
    if (d.kind == Decision::kDeny)
      return local_reply(403, "RBAC: access denied", "-",
                         "rbac_access_denied_matched_policy[" + (d.policy.empty() ? "none" : d.policy) + "]");
  }
  route_request();
}

// What policy sees of the tunnel: the peer's identity and addresses.
RequestAttrs Session::connection_attrs() const {
  RequestAttrs a;
  std::string_view principal = src_identity_;
  if (principal.rfind("spiffe://", 0) == 0) principal.remove_prefix(9);
  a.source_principal = principal;
  if (src_) a.source_namespace = src_->namespace_.str();
  a.source_ip = src_ip_text_;
  a.destination_ip = dst_ip_text_;
  a.destination_port = authority_.port;
  return a;
}

RequestAttrs Session::attrs(const std::string& service) const {
  const auto& e = *ex_;
  RequestAttrs a = connection_attrs();
  a.method = e.head.method;
  a.host = e.authority;
  a.path = e.np.path;
  a.headers = &e.head.headers;
  a.auth = e.authn.status == AuthnResult::kValid ? &e.authn.info : nullptr;
  a.service = service_key_ = service;
  return a;
}

void Session::check_custom(const std::string& provider) {
  auto it = state_->providers.find(provider);
  if (it == state_->providers.end())
    return local_reply(403, "RBAC: access denied", "UAEX", "ext_authz_provider_unknown{" + provider + "}");
  const ExtAuthzProvider& prov = it->second;
  auto& e = *ex_;
  // Where the authorization service listens: a mesh service's endpoint, or an IP.
  std::optional<SockAddr> addr;
  if (const auto* svc = state_->mesh->service_by_hostname(prov.service)) {
    for (std::string_view uid : svc->endpoints)
      if (const auto* w = state_->mesh->workload_by_uid(uid); w && !w->ips.empty()) {
        uint16_t port = prov.port;
        for (const auto& sp : svc->ports)
          if (sp.port == prov.port && sp.target_port) port = sp.target_port;
        addr = SockAddr{w->ips[0], port};
        break;
      }
  } else if (auto ip = IpAddr::parse(prov.service)) {
    addr = SockAddr{*ip, prov.port};
  }
  Session* self = this;
  auto on_result = [self, prov](int status, Headers hs, std::string body, const std::string& err) {
    if (self->closed_ || !self->ex_) return;
    ExtAuthzVerdict v = err.empty() ? interpret(prov, status, hs, std::move(body)) : on_failure(prov);
    if (!err.empty()) spdlog::info("waypoint: ext-authz {}: {}", prov.name, err);
    if (!v.allow) return self->local_reply(v.status, v.body, "UAEX", "ext_authz_denied", v.downstream);
    auto& h = self->ex_->head.headers;
    for (const auto& r : v.upstream_remove)
      for (auto i = h.begin(); i != h.end();)
        i = iequals(i->name, r) ? h.erase(i) : i + 1;
    for (const auto& kv : v.upstream_set) set_header(h, kv.name, kv.value);
    Decision d = self->state_->authz.evaluate_after_custom(self->attrs(self->service_key_));
    if (d.kind != Decision::kAllow)
      return self->local_reply(403, "RBAC: access denied", "-", "rbac_access_denied_matched_policy[" + d.policy + "]");
    self->route_request();
    self->process();
  };
  if (!addr) return on_result(0, {}, "", "no address for " + prov.service);
  std::string req = build_check_request(prov, e.head.method, e.head.target, e.authority, e.head.headers,
                                        src_addr_.ip.to_string());
  ext_authz_ = ExtAuthzCall::start(p_.loop(), *addr, std::move(req), prov.timeout, std::move(on_result));
}

void Session::route_request() {
  auto& e = *ex_;
  auto& h = e.head;
  std::string& authority = e.authority;
  RequestView rv = view();

  e.host = target_.host;
  e.port = authority_.port;
  if (!target_.host.empty()) e.sel = state_->routes.select(target_.host, rv);
  const HttpRoute* route = e.sel.route;
  e.rec.route_name = route ? route->name : "default";
  (void)authority;
  if (e.sel.not_found) return local_reply(404, "", "NR", "route_not_found");
  if (route && route->redirect)
    return local_reply(route->redirect->code, "", "-", "redirect",
                       {{"location", redirect_location(*route, e.sel.matched_block, rv)}});
  if (route && route->direct_response)
    return local_reply(route->direct_response->status, route->direct_response->body, "-", "direct_response");

  // The destination: weighted among the route's, else the service itself.
  if (route && !route->destinations.empty()) {
    e.dest = &route->destinations[pick_weighted(route->destinations, rnd32(p_.rng()))];
    e.host = e.dest->host;
    e.subset = e.dest->subset;
    if (e.dest->port) e.port = *e.dest->port;
  }
  e.retry = route ? &route->retry_policy() : &default_retry_policy();
  start_grpc_deadline(route);
  e.up_h2 = upstream_h2(e.host, e.port, e.subset);

  // The head for the upstream.
  MessageHead fwd = h;
  fwd.target = route && (route->rewrite_uri || route->rewrite_regex || route->rewrite_full_path)
                   ? rewrite_path(*route, e.sel.matched_block, e.np.target())
                   : e.np.target();
  if (route) route->request_headers.apply(fwd.headers);
  if (e.dest) e.dest->request.apply(fwd.headers);
  if (route && route->rewrite_authority) set_header(fwd.headers, "host", *route->rewrite_authority);
  std::string xff = header_of(fwd.headers, "x-forwarded-for");
  set_header(fwd.headers, "x-forwarded-for",
             xff.empty() ? src_addr_.ip.to_string() : xff + ", " + src_addr_.ip.to_string());
  set_header(fwd.headers, "x-forwarded-proto", "http");
  e.rec.request_id = ensure_request_id(fwd.headers, p_.rng());
  TraceContext tc = extract(fwd.headers);
  e.span = start_span(&tc, p_.rng(), state_->sampling_percent);
  inject(fwd.headers, e.span);
  e.rec.trace_id = e.span.trace_id.hex();
  ForwardOptions o;
  o.framing = h.framing;
  // An HTTP/2 request body of unknown length goes to HTTP/1.1 chunked.
  if (o.framing == BodyFraming::kUntilClose) o.framing = BodyFraming::kChunked;
  o.content_length = h.content_length;
  o.upgrade = h.upgrade;
  e.chunked_up = !e.up_h2 && o.framing == BodyFraming::kChunked;
  // An HTTP/1.1 upstream gets the serialised head; an HTTP/2 one the same
  // checks (and the same request_header_bytes) without the serialising.
  if (!e.up_h2) {
    auto bytes = serialize_request_head(fwd, o);
    if (!bytes.ok()) {
      e.down_keep_alive = false;
      return local_reply(400, "bad request: " + bytes.error().message + "\n", "-", "invalid_header");
    }
    e.fwd_head = std::move(*bytes);
    e.rec.request_header_bytes = e.fwd_head.size();
  } else {
    auto size = request_head_size(fwd, o);
    if (!size.ok()) {
      e.down_keep_alive = false;
      return local_reply(400, "bad request: " + size.error().message + "\n", "-", "invalid_header");
    }
    e.rec.request_header_bytes = *size;
  }
  // Mirrors: a copy of the request, sent once it is whole, answers dropped.
  if (route)
    for (const auto& m : route->mirrors)
      if (percent_hit(m.percent, rnd32(p_.rng()))) {
        if (e.mirrors.empty()) e.mirror_head = fwd;
        e.mirrors.push_back(&m.dest);
      }
  if (e.up_h2) e.fwd = std::move(fwd);

  // Chaos: abort or delay.
  if (route && route->fault) {
    FaultDecision fd = decide_fault(*route->fault, rnd32(p_.rng()), rnd32(p_.rng()));
    if (fd.http_status) return local_reply(*fd.http_status, "fault filter abort", "FI", "fault_filter_abort");
    if (fd.grpc_status)
      return local_reply(200, "", "FI", "fault_filter_abort",
                         {{"content-type", "application/grpc"},
                          {"grpc-status", std::to_string(*fd.grpc_status)}});
    if (fd.delay) {
      e.rec.response_flags = "DI";
      Session* self = this;
      delay_timer_.start(fd.delay->count(), 0, [self] {
        if (self->ex_ && !self->closed_) self->start_attempt();
      });
      return;
    }
  }
  if (route && route->timeout && route->timeout->count() > 0) {
    Session* self = this;
    timeout_.start(route->timeout->count(), 0, [self] {
      if (!self->ex_ || self->closed_) return;
      if (self->ex_->response_started) return self->shutdown("route timeout");
      if (self->leg_) self->leg_->abandon();
      self->leg_ = nullptr;
      self->retry_timer_.stop();
      self->local_reply(504, "upstream request timeout", "UT", "upstream_response_timeout");
    });
  }
  start_attempt();
}

void Session::start_grpc_deadline(const HttpRoute* route) {
  // Istio sets every route's max_stream_duration.grpc_timeout_header_max to
  // the route timeout (0s without one): a grpc-timeout header bounds the
  // whole stream, from its start, capped by the route timeout when there is
  // one. Expiry: 408 (gRPC: DEADLINE_EXCEEDED), flag DT, or a reset once the
  // response started (Envoy's onStreamMaxDurationReached).
  auto& e = *ex_;
  std::string v = header_of(e.head.headers, "grpc-timeout");
  if (v.empty()) return;
  auto limit = parse_grpc_timeout(v);
  if (!limit) return;
  if (route && route->timeout && route->timeout->count() > 0 && *limit > *route->timeout) limit = *route->timeout;
  auto elapsed =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - e.t0);
  auto left = *limit > elapsed ? *limit - elapsed : std::chrono::milliseconds(0);
  Session* self = this;
  duration_timer_.start(static_cast<uint64_t>(left.count()), 0, [self] {
    if (!self->ex_ || self->closed_) return;
    Headers extra;
    if (self->ex_->rec.grpc) extra.push_back({"grpc-status", std::to_string(kGrpcDeadlineExceeded)});
    self->local_reply(408, "downstream duration timeout", "DT", "max_duration_timeout", extra);
  });
}

void Session::start_attempt() {
  auto& e = *ex_;
  // Mirrors of a request that is whole already (no body, or read during a
  // delay or ext-authz) go now; the others when it is (on_complete).
  if (e.request_complete && !e.mirrors.empty()) fire_mirrors();
  Pick pk = pick_endpoint(e.host, e.port, e.subset);
  if (!pk.ep) return local_reply(503, "no healthy upstream", "UH", pk.error);
  if (!e.cb && pk.cluster) {
    // Circuit breaking (DestinationRule connectionPool): over the limit, 503 UO.
    if (!pk.cluster->cb->admit_request())
      return local_reply(503, "upstream connect error or disconnect/reset before headers. reset reason: overflow",
                         "UO", "upstream_reset_before_response_started{overflow}");
    e.cb = pk.cluster->cb;
  }
  e.cluster = pk.cluster;
  e.uid = pk.ep->uid.str();
  if (e.cluster) e.cluster->active[e.uid]++;
  e.attempt_open = true;
  e.ep = pk.ep;
  e.ep_addr = pk.addr;
  ++e.attempts;
  auto& d = e.rec.destination;
  d.upstream_host = pk.addr.to_string();
  d.workload = pk.ep->name.str();
  d.namespace_ = pk.ep->namespace_.str();
  d.principal = pk.ep->identity.str();
  d.canonical_service = pk.ep->canonical_name.str();
  d.canonical_revision = pk.ep->canonical_revision.str();
  d.service_host = e.host.empty() ? authority_.ip.to_string() : e.host;
  if (target_.svc) {
    d.service_name = target_.svc->name;
    d.service_namespace = target_.svc->namespace_;
  }
  if (const auto* s = state_->mesh->service_by_hostname(e.host)) {
    d.service_name = s->name;
    d.service_namespace = s->namespace_;
  }
  d.upstream_cluster = "outbound|" + std::to_string(e.port) + "|" + e.subset + "|" + d.service_host;
  if (e.up_h2) return start_h2_attempt(*pk.ep, pk.addr);

  std::string auth = pk.addr.to_string();
  UpstreamLeg* idle = p_.take(auth, pk.ep->identity.str());
  if (idle && e.cb && !e.cb->connection_reusable(idle->requests)) {  // maxRequestsPerConnection
    idle->abandon();
    idle = nullptr;
  }
  UpstreamLeg* leg = nullptr;
  if (idle) {
    leg = idle;
    leg->set_owner(this);
  } else {
    hbone::PoolKey key{state_->self.identity, pk.ep->identity, SockAddr{pk.addr.ip, 15008},
                       state_->self.address};
    std::shared_ptr<CircuitBreaker> conn_cb;
    if (e.cb) {
      // At the limit with idle connections of this cluster to other pods:
      // close one of those rather than refuse.
      bool admitted = e.cb->admit_connection();
      while (!admitted && p_.evict_idle(e.cb.get())) admitted = e.cb->admit_connection();
      if (!admitted) {
        attempt_done(Outcome::connect_failure(), false);
        // http1MaxPendingRequests: wait for a connection (route timeout
        // permitting); past the limit, overflow.
        if (e.cb->admit_pending()) {
          --e.attempts;
          e.pending = true;
          p_.wait_for_connection(e.cb.get(), this, e.waited);
          return;
        }
        return local_reply(503, "upstream connect error or disconnect/reset before headers. reset reason: overflow",
                           "UO", "upstream_reset_before_response_started{overflow}");
      }
      conn_cb = e.cb;
    }
    leg = new UpstreamLeg(p_, this, key, auth, src_addr_.to_string(), false);
    leg->hold_connection(std::move(conn_cb));
    leg->open();
  }
  leg_ = leg;
  leg->expect_response(e.head.method);
  leg_->send(e.fwd_head);
  if (e.attempts > 1 || !e.body.empty()) {
    leg_->send(e.chunked_up && !e.body.empty() ? encode_chunk(e.body) : e.body);
  }
  if (e.request_complete && e.chunked_up) leg_->send(last_chunk());
  process();  // the request body may go on now
}

void Session::on_body(std::string_view data) {
  if (!ex_ || ex_->local) return;
  auto& e = *ex_;
  e.rec.request_body_bytes += data.size();
  if (e.body_kept && e.body.size() + data.size() <= kRetryBody && e.attempts <= 1) {
    e.body.append(data);
  } else {
    e.body_kept = false;
    e.body.clear();
  }
  if (leg_) leg_->send(e.chunked_up ? encode_chunk(data) : std::string(data));
}

std::string Session::last_chunk() const {
  // HTTP/2 request trailers are not written as HTTP/1.1 (Envoy's HTTP/1
  // codec drops them unless enable_trailers is set, which Istio does not).
  if (mode_ == Mode::kH2Stream) return "0\r\n\r\n";
  auto last = encode_last_chunk(ex_->trailers);
  return last.ok() ? *last : "0\r\n\r\n";
}

void Session::on_trailers(Headers trailers) {
  if (ex_) ex_->trailers = std::move(trailers);
}

void Session::on_complete() {
  if (!ex_) return;
  auto& e = *ex_;
  e.request_complete = true;
  if (e.local) return finish_exchange();
  if (leg_ && leg_->http2()) {
    static_cast<H2UpstreamStream*>(leg_)->end_with_trailers(e.trailers);
  } else if (leg_ && e.chunked_up) {
    leg_->send(last_chunk());
  }
  fire_mirrors();
}

void Session::fire_mirrors() {
  auto& e = *ex_;
  if (e.mirrors.empty() || !e.body_kept) return;  // a body too large to keep is not mirrored
  for (const RouteDestination* d : e.mirrors) {
    uint16_t port = d->port.value_or(e.port);
    Pick pk = pick_endpoint(d->host, port, d->subset);
    if (!pk.ep) {
      spdlog::debug("waypoint: mirror to {} skipped: {}", d->host, pk.error);
      continue;
    }
    MessageHead h = e.mirror_head;
    // Envoy's shadow host: "<authority>-shadow".
    std::string host = header_of(h.headers, "host");
    set_header(h.headers, "host", (host.empty() ? d->host : host) + "-shadow");
    if (upstream_h2(d->host, port, d->subset)) {
      mirror_h2(h, *pk.ep, pk.addr);
      continue;
    }
    ForwardOptions o;
    o.framing = e.body.empty() ? BodyFraming::kNone : BodyFraming::kContentLength;
    o.content_length = e.body.size();
    o.keep_alive = false;
    auto head = serialize_request_head(h, o);
    if (!head.ok()) continue;
    hbone::PoolKey key{state_->self.identity, pk.ep->identity, SockAddr{pk.addr.ip, 15008}, state_->self.address};
    auto* leg = new UpstreamLeg(p_, nullptr, key, pk.addr.to_string(), src_addr_.to_string(), false);
    leg->open();
    leg->send(*head);
    leg->send(e.body);
    leg->end();  // deletes itself when the stream is done
  }
  e.mirrors.clear();
}

// ---- responses ----

}  // namespace warren::waypoint
