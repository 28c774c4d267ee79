#include "session.h"

#include <spdlog/spdlog.h>

#include "headers.h"
#include "path.h"
#include "proxy.h"
#include "trace.h"
#include "ext_authz_client.h"
#include "upstream.h"

namespace warren::waypoint {

namespace {
constexpr size_t kHigh = 256 << 10;
constexpr size_t kRetryBody = 64 << 10;  // request bodies up to this are kept for retries
const char kH2Preface[] = "PRI * HTTP/2.0\r\n";

uint32_t rnd32(Rng& r) { return static_cast<uint32_t>(r.next64() >> 32); }

std::string header_of(const Headers& h, std::string_view name) {
  std::string v;
  header_value(h, name, v);
  return v;
}

void set_header(Headers& h, std::string_view name, std::string value) {
  for (auto it = h.begin(); it != h.end();)
    if (iequals(it->name, name)) it = h.erase(it);
    else ++it;
  h.push_back({std::string(name), std::move(value)});
}

// Whether the first bytes can still become an HTTP/1 request line
// ("METHOD SP"), must be one, or cannot.
enum class Sniff { kMore, kHttp1, kOther };
Sniff sniff_http1(std::string_view s) {
  for (size_t i = 0; i < s.size() && i < 24; ++i) {
    unsigned char c = s[i];
    if (c == ' ') return i > 0 ? Sniff::kHttp1 : Sniff::kOther;
    if (!(c >= 'A' && c <= 'Z') && c != '-' && c != '_') return Sniff::kOther;
  }
  return s.size() < 24 ? Sniff::kMore : Sniff::kOther;
}

std::optional<SockAddr> forwarded_for(const h2::Headers& h) {
  const std::string* f = h2::find_header(h, "forwarded");
  if (!f) return std::nullopt;
  auto p = f->find("for=");
  if (p == std::string::npos) return std::nullopt;
  std::string v = f->substr(p + 4);
  if (auto semi = v.find_first_of(";,"); semi != std::string::npos) v.resize(semi);
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  return SockAddr::parse(v);
}
}  // namespace

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
  ~Exchange() {
    if (cb) cb->release_request();
  }
};

void Session::attempt_done(const Outcome& o, bool record) {
  if (!ex_ || !ex_->attempt_open) return;
  auto& e = *ex_;
  e.attempt_open = false;
  if (!e.cluster) return;
  if (auto a = e.cluster->active.find(e.uid); a != e.cluster->active.end() && a->second > 0) a->second--;
  if (record && e.cluster->outlier.record(e.uid, o, std::chrono::steady_clock::now()))
    spdlog::info("waypoint: endpoint {} ejected (outlier detection)", e.uid);
}

Session::Session(Proxy& p, h2::H2Conn* c, int32_t sid)
    : p_(p), conn_(c), sid_(sid), timeout_(p.loop()), retry_timer_(p.loop()), delay_timer_(p.loop()),
      head_timer_(p.loop()) {}

Session::~Session() = default;

// ---- downstream stream ----

void Session::on_headers(h2::H2Conn* c, int32_t sid, h2::Headers&& h, bool end_stream) {
  if (mode_ != Mode::kConnect) return;
  const auto* peer = p_.peer(c);
  state_ = p_.state();
  const std::string* method = h2::find_header(h, ":method");
  const std::string* auth = h2::find_header(h, ":authority");
  if (!method || *method != "CONNECT") return refuse(400, "method is not CONNECT");
  if (h2::find_header(h, ":path") || h2::find_header(h, ":scheme") || h2::find_header(h, ":protocol"))
    return refuse(400, "CONNECT must not carry :path, :scheme or :protocol");
  auto a = auth ? SockAddr::parse(*auth) : std::nullopt;
  if (!a || a->port == 0) return refuse(400, "malformed :authority (want ip:port)");
  std::string why;
  auto t = state_->target(*a, &why);
  if (!t) return refuse(400, why);
  if (end_stream) return refuse(400, "CONNECT stream ended before the tunnel opened");
  authority_ = *a;
  target_ = *t;
  src_identity_ = peer ? peer->identity : "";
  src_addr_ = peer ? peer->peer : SockAddr{};
  if (auto f = forwarded_for(h)) src_addr_ = *f;
  src_ = state_->mesh->workload_by_ip(src_addr_.ip);
  src_ip_text_ = src_addr_.ip.to_string();
  dst_ip_text_ = authority_.ip.to_string();
  mode_ = Mode::kDetect;
  conn_->submit_response(sid_, 200, true);
}

void Session::refuse(int status, const std::string& why) {
  spdlog::info("waypoint: refused CONNECT ({}): {}", status, why);
  mode_ = Mode::kDone;
  conn_->submit_response(sid_, status, false);
}

void Session::on_data(h2::H2Conn*, int32_t, const uint8_t* data, size_t len) {
  if (mode_ == Mode::kDone || mode_ == Mode::kConnect) {
    conn_->consume(sid_, len);
    return;
  }
  in_.append(reinterpret_cast<const char*>(data), len);
  unconsumed_ += len;
  process();
}

void Session::on_end_stream(h2::H2Conn*, int32_t) {
  down_eof_ = true;
  process();
}

void Session::on_stream_close(h2::H2Conn*, int32_t, uint32_t) {
  closed_ = true;
  mode_ = Mode::kDone;
  if (leg_) leg_->abandon();
  if (idle_leg_) idle_leg_->abandon();
  leg_ = idle_leg_ = nullptr;
  timeout_.stop();
  retry_timer_.stop();
  delay_timer_.stop();
  head_timer_.stop();
  ext_authz_.reset();
  attempt_done(Outcome::reset(), false);
  if (ex_ && !ex_->local) {
    ex_->rec.response_flags = ex_->response_started ? "DC" : "DC";
    ex_->rec.response_code = ex_->response_started ? ex_->rec.response_code : 0;
  }
  ex_.reset();
  p_.session_gone(this);
}

void Session::on_send_drain(h2::H2Conn*, int32_t) {
  if (leg_) leg_->resume();
}

bool Session::downstream_full() const { return closed_ || conn_->buffered(sid_) > kHigh; }

void Session::send_down(std::string_view d) {
  if (closed_ || down_ended_ || d.empty()) return;
  conn_->send_data(sid_, d.data(), d.size());
}

void Session::end_down() {
  if (closed_ || down_ended_) return;
  down_ended_ = true;
  conn_->end_stream(sid_);
}

void Session::shutdown(const std::string& why) {
  if (closed_) return;
  spdlog::debug("waypoint: session to {} reset: {}", authority_.to_string(), why);
  mode_ = Mode::kDone;
  if (leg_) leg_->abandon();
  leg_ = nullptr;
  conn_->reset_stream(sid_, NGHTTP2_CANCEL);
}

void Session::process() {
  if (in_process_) {
    again_ = true;  // called from inside a parser callback: run again after it
    return;
  }
  in_process_ = true;
  do {
    again_ = false;
    process_once();
  } while (again_ && !closed_);
  in_process_ = false;
}

void Session::process_once() {
  if (closed_) return;
  if (mode_ == Mode::kDetect && !in_.empty()) {
    const size_t plen = sizeof(kH2Preface) - 1;
    size_t n = std::min(in_.size(), plen);
    if (in_.compare(0, n, kH2Preface, n) == 0) {
      if (n < plen) return;  // could still be the HTTP/2 preface
      start_opaque();        // HTTP/2 is carried opaquely for now (L4 only)
    } else {
      Sniff k = sniff_http1(in_);
      if (k == Sniff::kMore) return;
      if (k == Sniff::kHttp1) {
        mode_ = Mode::kHttp1;
        parser_ = std::make_unique<Http1Parser>(Http1Parser::Kind::kRequest, *this);
        parser_->set_one_message_per_feed(true);
      } else {
        start_opaque();
      }
    }
  }
  if (mode_ == Mode::kDetect && down_eof_ && in_.empty()) return end_down();
  if (mode_ == Mode::kHttp1) {
    if (!ex_ && !in_.empty() && !head_timing_ && state_->request_headers_timeout.count() > 0) {
      // Slowloris: a request head must arrive whole within the timeout.
      head_timing_ = true;
      Session* self = this;
      head_timer_.start(state_->request_headers_timeout.count(), 0, [self] {
        if (self->closed_ || self->ex_) return;
        self->in_.clear();
        self->ex_ = std::make_unique<Exchange>();
        self->ex_->down_keep_alive = false;
        self->local_reply(408, "request header timeout\n", "-", "request_header_timeout");
      });
    }
    while (!in_.empty() && !closed_ && mode_ == Mode::kHttp1) {
      if (ex_ && ex_->request_complete) break;  // one request at a time
      if (ex_ && !ex_->local && !leg_) break;    // delayed or between attempts
      if (leg_ && leg_->buffered() > kHigh) break;
      auto r = parser_->feed(in_);
      if (!r.ok()) {
        const auto& f = parser_->failure();
        in_.clear();
        if (!ex_) ex_ = std::make_unique<Exchange>();
        ex_->down_keep_alive = false;
        local_reply(f.status ? f.status : 400, "bad request: " + f.detail + "\n", "-",
                    std::string("http1.") + http1_reason_name(f.reason));
        break;
      }
      in_.erase(0, *r);
      if (*r == 0 || parser_->upgraded() || parser_->closed()) break;
    }
    if (mode_ == Mode::kHttp1 && down_eof_ && !ex_ && (in_.empty() || parser_->closed())) end_down();
  }
  if (mode_ == Mode::kOpaque && leg_ && !in_.empty() && leg_->buffered() < kHigh) {
    leg_->send(in_);
    in_.clear();
  }
  if (mode_ == Mode::kOpaque && down_eof_ && in_.empty() && leg_) leg_->end();
  if (!closed_ && unconsumed_ && in_.size() < kHigh) {
    conn_->consume(sid_, unconsumed_);
    unconsumed_ = 0;
  }
}

// ---- choosing an endpoint ----

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
  std::vector<std::string> keys;
  for (std::string_view uid : svc->endpoints) {
    const auto* w = st.mesh->workload_by_uid(uid);
    if (!w || w->ips.empty()) continue;
    if (ss && !subset_matches(*ss, w->labels())) continue;
    ws.push_back(w);
    keys.emplace_back(uid);
  }
  if (ws.empty()) {
    p.error = "no endpoints";
    return p;
  }
  cl.outlier.set_endpoints(keys);
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
  Pick pk = pick_endpoint(host, authority_.port, "");
  if (!pk.ep) {
    spdlog::info("waypoint: TCP to {}: {}", authority_.to_string(), pk.error);
    return shutdown(pk.error);
  }
  hbone::PoolKey key{state_->self.identity, pk.ep->identity, SockAddr{pk.addr.ip, 15008},
                     state_->self.address};
  leg_ = new UpstreamLeg(p_, this, key, pk.addr.to_string(), src_addr_.to_string(), true);
  leg_->open();
}

// ---- HTTP/1 requests ----

void Session::on_head(MessageHead head) {
  head_timer_.stop();
  head_timing_ = false;
  ex_ = std::make_unique<Exchange>();
  auto& e = *ex_;
  e.t0 = std::chrono::steady_clock::now();
  e.rec.start = std::chrono::system_clock::now();
  e.rec.method = head.method;
  e.rec.path = head.target;
  e.rec.authority = header_of(head.headers, "host");
  e.rec.protocol = head.version_minor == 0 ? "HTTP/1.0" : "HTTP/1.1";
  e.rec.user_agent = header_of(head.headers, "user-agent");
  e.rec.x_forwarded_for = header_of(head.headers, "x-forwarded-for");
  e.rec.downstream_local_address = authority_.to_string();
  e.rec.grpc = header_of(head.headers, "content-type").rfind("application/grpc", 0) == 0;
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
  dispatch();
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
    if (d.kind == Decision::kCustom) return check_custom(d.provider);
    if (d.kind == Decision::kDeny)
      return local_reply(403, "RBAC: access denied", "-",
                         "rbac_access_denied_matched_policy[" + (d.policy.empty() ? "none" : d.policy) + "]");
  }
  route_request();
}

RequestAttrs Session::attrs(const std::string& service) const {
  const auto& e = *ex_;
  RequestAttrs a;
  a.method = e.head.method;
  a.host = e.authority;
  a.path = e.np.path;
  a.headers = &e.head.headers;
  std::string_view principal = src_identity_;
  if (principal.rfind("spiffe://", 0) == 0) principal.remove_prefix(9);
  a.source_principal = principal;
  if (src_) a.source_namespace = src_->namespace_.str();
  a.source_ip = src_ip_text_;
  a.destination_ip = dst_ip_text_;
  a.destination_port = authority_.port;
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
  Span span = start_span(&tc, p_.rng());
  inject(fwd.headers, span);
  e.rec.trace_id = span.trace_id.hex();
  ForwardOptions o;
  o.framing = h.framing == BodyFraming::kChunked ? BodyFraming::kChunked : h.framing;
  o.content_length = h.content_length;
  o.upgrade = h.upgrade;
  e.chunked_up = o.framing == BodyFraming::kChunked;
  auto bytes = serialize_request_head(fwd, o);
  if (!bytes.ok()) {
    e.down_keep_alive = false;
    return local_reply(400, "bad request: " + bytes.error().message + "\n", "-", "invalid_header");
  }
  e.fwd_head = std::move(*bytes);
  e.rec.request_header_bytes = e.fwd_head.size();

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

void Session::start_attempt() {
  auto& e = *ex_;
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

  std::string auth = pk.addr.to_string();
  if (idle_leg_ && (!idle_leg_->reusable() || idle_leg_->authority() != auth ||
                    (e.cb && !e.cb->connection_reusable(idle_leg_->requests)))) {
    idle_leg_->abandon();
    idle_leg_ = nullptr;
  }
  if (idle_leg_) {
    leg_ = idle_leg_;
    idle_leg_ = nullptr;
  } else {
    hbone::PoolKey key{state_->self.identity, pk.ep->identity, SockAddr{pk.addr.ip, 15008},
                       state_->self.address};
    std::shared_ptr<CircuitBreaker> conn_cb;
    if (e.cb) {
      if (!e.cb->admit_connection()) {
        attempt_done(Outcome::connect_failure(), false);
        return local_reply(503, "upstream connect error or disconnect/reset before headers. reset reason: overflow",
                           "UO", "upstream_reset_before_response_started{overflow}");
      }
      conn_cb = e.cb;
    }
    leg_ = new UpstreamLeg(p_, this, key, auth, src_addr_.to_string(), false);
    leg_->hold_connection(std::move(conn_cb));
    leg_->open();
  }
  leg_->expect_response(e.head.method);
  leg_->send(e.fwd_head);
  if (e.attempts > 1 || !e.body.empty()) {
    leg_->send(e.chunked_up && !e.body.empty() ? encode_chunk(e.body) : e.body);
  }
  if (e.request_complete && e.chunked_up) {
    auto last = encode_last_chunk(e.trailers);
    leg_->send(last.ok() ? *last : "0\r\n\r\n");
  }
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

void Session::on_trailers(Headers trailers) {
  if (ex_) ex_->trailers = std::move(trailers);
}

void Session::on_complete() {
  if (!ex_) return;
  auto& e = *ex_;
  e.request_complete = true;
  if (e.local) return finish_exchange();
  if (leg_ && e.chunked_up) {
    auto last = encode_last_chunk(e.trailers);
    leg_->send(last.ok() ? *last : "0\r\n\r\n");
  }
}

// ---- responses ----

void Session::up_open(UpstreamLeg*) {}

void Session::up_drained(UpstreamLeg* l) {
  if (l == leg_) process();
}

void Session::up_failed(UpstreamLeg* l, UpFailure f, const std::string& why) {
  if (l == idle_leg_) {
    idle_leg_ = nullptr;
    return;
  }
  if (l != leg_) return;
  leg_ = nullptr;
  if (closed_) return;
  if (mode_ == Mode::kOpaque) {
    if (why.empty()) return end_down();
    return shutdown(why);
  }
  if (!ex_) return;
  if (ex_->response_started) {
    if (why.empty()) return;  // the response was complete
    return shutdown(why);
  }
  attempt_done(f == UpFailure::kConnect ? Outcome::connect_failure()
               : f == UpFailure::kRefused ? Outcome::refused_stream()
                                          : Outcome::reset());
  retry_or_fail(f, why);
}

bool Session::maybe_retry(UpFailure f, int status, const std::string& why) {
  auto& e = *ex_;
  const RetryPolicy& rp = *e.retry;
  Outcome o = status ? Outcome::response(status)
              : f == UpFailure::kConnect ? Outcome::connect_failure()
              : f == UpFailure::kRefused ? Outcome::refused_stream()
                                         : Outcome::reset();
  if (!should_retry(rp, o, e.attempts - 1) || !e.body_kept || !e.request_complete || closed_) return false;
  if (e.cb && !e.cb->admit_retry()) return false;  // http.maxRetries
  if (e.cb) e.cb->release_retry();
  auto wait = backoff(e.attempts, static_cast<uint32_t>(p_.rng().next64()), rp.backoff_base);
  spdlog::debug("waypoint: retry {} of {} in {} ms: {}", e.attempts, rp.attempts, wait.count(),
                why.empty() ? std::to_string(status) : why);
  Session* self = this;
  retry_timer_.start(static_cast<uint64_t>(wait.count()), 0, [self] {
    if (self->ex_ && !self->closed_ && !self->ex_->response_started) self->start_attempt();
  });
  return true;
}

void Session::retry_or_fail(UpFailure f, const std::string& why) {
  if (maybe_retry(f, 0, why)) return;
  const char* flag = f == UpFailure::kConnect ? "UF" : "UC";
  if (ex_->attempts > 1) flag = "URX";
  local_reply(503, "upstream connect error or disconnect/reset before headers. reset reason: " + why, flag,
              f == UpFailure::kConnect ? "upstream_reset_before_response_started{connection_failure}"
                                       : "upstream_reset_before_response_started{remote_reset}");
}

void Session::up_response_head(UpstreamLeg* l, MessageHead& h) {
  if (l != leg_ || !ex_ || closed_) return;
  auto& e = *ex_;
  {
    std::optional<int> grpc;
    if (auto gs = header_of(h.headers, "grpc-status"); !gs.empty()) grpc = std::atoi(gs.c_str());
    attempt_done(Outcome::response(h.status, grpc));
  }
  if (!e.response_started && maybe_retry(UpFailure::kReset, h.status, "")) {
    leg_->abandon();  // the rest of this response is not wanted
    leg_ = nullptr;
    return;
  }
  e.response_started = true;
  timeout_.stop();
  e.rec.response_code = h.status;
  e.rec.upstream_service_time =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - e.t0);
  if (e.attempts > 1 && e.rec.response_flags == "-" && h.status >= 500) e.rec.response_flags = "URX";
  e.rec.response_code_details = "via_upstream";
  if (e.sel.route) e.sel.route->response_headers.apply(h.headers);
  if (e.dest) e.dest->response.apply(h.headers);
  if (auto gs = header_of(h.headers, "grpc-status"); !gs.empty()) e.rec.grpc_status = std::atoi(gs.c_str());
  ForwardOptions o;
  o.framing = h.framing;
  o.content_length = h.content_length;
  bool head_req = e.head.method == "HEAD";
  if (h.framing == BodyFraming::kUntilClose) {
    if (e.head.version_minor >= 1) o.framing = BodyFraming::kChunked;
    else e.down_keep_alive = false;
  }
  if (h.status == 101) {
    o.upgrade = true;
    e.down_keep_alive = true;
  }
  if (!h.keep_alive && h.status != 101) {
    // The upstream connection ends; the client's may go on.
  }
  o.keep_alive = e.down_keep_alive;
  if (head_req && h.framing == BodyFraming::kUntilClose) o.framing = BodyFraming::kNone;
  // No body (Content-Length: 0 parses as none): say so, or an HTTP/1.1 client
  // reads until close.
  bool bodiless_status = h.status / 100 == 1 || h.status == 204 || h.status == 304;
  if (o.framing == BodyFraming::kNone && !bodiless_status && !head_req && h.status != 101) {
    o.framing = BodyFraming::kContentLength;
    o.content_length = 0;
  }
  e.chunk_down = o.framing == BodyFraming::kChunked && !head_req;
  auto bytes = serialize_response_head(h, o);
  if (!bytes.ok()) {
    e.response_started = false;
    leg_->abandon();
    leg_ = nullptr;
    return local_reply(502, "invalid response from upstream: " + bytes.error().message, "UPE",
                       "upstream_response_invalid");
  }
  e.rec.response_header_bytes = bytes->size();
  send_down(*bytes);
  if (h.status == 101) mode_ = Mode::kOpaque;
}

void Session::up_response_body(UpstreamLeg* l, std::string_view data) {
  if (l != leg_ || !ex_) return;
  ex_->rec.response_body_bytes += data.size();
  if (ex_->chunk_down) send_down(encode_chunk(data));
  else send_down(data);
}

void Session::up_response_trailers(UpstreamLeg* l, Headers& t) {
  if (l != leg_ || !ex_) return;
  if (auto gs = header_of(t, "grpc-status"); !gs.empty()) ex_->rec.grpc_status = std::atoi(gs.c_str());
  ex_->resp_trailers = std::move(t);
}

void Session::up_response_complete(UpstreamLeg* l) {
  if (l != leg_ || !ex_) return;
  if (ex_->chunk_down) {
    auto last = encode_last_chunk(ex_->resp_trailers);
    send_down(last.ok() ? *last : "0\r\n\r\n");
  }
  if (mode_ == Mode::kOpaque) {  // 101: from here on bytes flow as they come
    ex_.reset();
    return process();
  }
  finish_exchange();
}

void Session::up_raw(UpstreamLeg* l, std::string_view data) {
  if (l == leg_) send_down(data);
}

void Session::up_raw_end(UpstreamLeg* l) {
  if (l == leg_) end_down();
}

// ---- local replies and the end of an exchange ----

void Session::local_reply(int status, std::string body, const std::string& flags,
                          const std::string& details, const Headers& extra) {
  if (closed_) return;
  auto& e = *ex_;
  if (e.response_started) return shutdown(details);
  attempt_done(Outcome::timeout(), details == "upstream_response_timeout");
  if (leg_) leg_->abandon();
  leg_ = nullptr;
  timeout_.stop();
  retry_timer_.stop();
  delay_timer_.stop();
  e.local = true;
  e.response_started = true;
  e.rec.response_code = status;
  e.rec.response_flags = flags;
  e.rec.response_code_details = details;
  MessageHead r;
  r.request = false;
  r.status = status;
  r.reason = http::reason_phrase(status);
  r.headers = extra;
  bool has_ct = false;
  for (const auto& hd : extra) has_ct |= iequals(hd.name, "content-type");
  if (!body.empty() && !has_ct) r.headers.push_back({"content-type", "text/plain"});
  r.headers.push_back({"server", "warren-waypoint"});
  // A body still to come is not read: the connection closes after the reply.
  if (!e.request_complete && e.head.framing != BodyFraming::kNone) e.down_keep_alive = false;
  ForwardOptions o;
  o.framing = BodyFraming::kContentLength;
  o.content_length = body.size();
  o.keep_alive = e.down_keep_alive;
  o.strip_internal = false;
  auto head = serialize_response_head(r, o);
  if (!head.ok()) return shutdown(head.error().message);
  e.rec.response_header_bytes = head->size();
  e.rec.response_body_bytes = body.size();
  send_down(*head);
  if (e.head.method != "HEAD") send_down(body);
  if (e.request_complete || !e.down_keep_alive) finish_exchange();
}

void Session::finish_exchange() {
  if (!ex_) return;
  auto& e = *ex_;
  timeout_.stop();
  retry_timer_.stop();
  delay_timer_.stop();
  e.rec.duration =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - e.t0);
  e.rec.attempts = e.attempts;
  if (e.rec.response_code_details.empty()) e.rec.response_code_details = "via_upstream";
  p_.request_metrics().record(e.rec);
  p_.write_access_log(e.rec);
  if (leg_) {
    if (leg_->reusable() && e.request_complete) {
      if (idle_leg_) idle_leg_->abandon();
      idle_leg_ = leg_;
    } else {
      leg_->abandon();
    }
    leg_ = nullptr;
  }
  bool keep = e.down_keep_alive && !parser_->closed() && !parser_->upgraded();
  ex_.reset();
  if (!keep) {
    in_.clear();
    return end_down();
  }
  process();
}

}  // namespace warren::waypoint
