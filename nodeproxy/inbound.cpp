#include "inbound.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "inpod.h"
#include "node.h"
#include "warren_bpf.h"
#include "tunnel.h"
#include "warren/defer.h"

namespace warren::node {

InboundRequest InboundRequest::from_headers(const Headers& h) {
  InboundRequest req;
  for (auto& [k, v] : h) {
    if (k == ":method") req.method = v;
    else if (k == ":authority") req.authority = v;
    else if (k == ":path") { req.path = v; req.has_path = true; }
    else if (k == ":scheme") req.scheme = v;
    else if (k == ":protocol") req.protocol = v;
  }
  return req;
}

InboundDecision decide_inbound(const config::Snapshot& snap, const InboundRequest& req) {
  InboundDecision d;
  auto bad = [&](std::string why) {
    d.status = 400;
    d.reason = std::move(why);
    return d;
  };
  if (req.method != "CONNECT") return bad("method " + req.method + " is not CONNECT");
  if (req.has_path || !req.scheme.empty())
    return bad("CONNECT must not carry :path or :scheme");
  if (!req.protocol.empty()) return bad("extended CONNECT is not supported");
  if (req.authority.empty()) return bad("missing :authority");
  auto target = SockAddr::parse(req.authority);
  if (!target) return bad("malformed :authority \"" + req.authority + "\" (want ip:port)");
  if (target->port == 0) return bad(":authority port 0");
  if (target->ip != req.local.ip)
    return bad(":authority " + req.authority + " does not match the dialled address " +
               req.local.ip.to_string());
  if (target->port == snap.listeners.hbone_port)
    return bad(":authority names the HBONE port itself");
  const auto* dst = snap.workload_by_ip(target->ip);
  if (!dst || dst->node != snap.node_name) return bad("no local workload at " + req.authority);
  d.dst = dst;
  d.upstream = *target;
  d.facts.src_ip = req.peer.ip;
  d.facts.dst_ip = target->ip;
  d.facts.dst_port = target->port;
  if (!req.peer_identity.empty()) d.facts.src_identity = req.peer_identity;
  auto pd = policy::check_inbound(snap, *dst, d.facts);
  if (!pd.allow) {
    d.status = 401;
    d.reason = pd.reason;
    return d;
  }
  d.reason = pd.reason;
  return d;
}

// One CONNECT stream until its tunnel takes over (or it is refused).
class InboundStream : public StreamHandler {
 public:
  InboundStream(Inbound& in, H2Conn* c, int32_t sid) : in_(in), conn_(c), sid_(sid) {}

  void on_headers(H2Conn* c, int32_t sid, Headers&& h, bool end_stream) override;
  void on_data(H2Conn* c, int32_t sid, const uint8_t*, size_t len) override {
    c->consume(sid, len);  // a refused stream; drop
  }
  void on_end_stream(H2Conn*, int32_t) override {}
  void on_stream_close(H2Conn*, int32_t, uint32_t) override { delete this; }

 private:
  void refuse(int status, const std::string& why, const std::string& flag);
  Inbound& in_;
  H2Conn* conn_;
  int32_t sid_;
};

void InboundStream::refuse(int status, const std::string& why, const std::string& flag) {
  spdlog::info("inbound: refused stream {} ({}): {}", sid_, status, why);
  auto& m = in_.node_.metrics();
  m.rejected("inbound", status == 401 ? "policy" : status == 400 ? "bad_request" : "upstream")
      ->inc();
  // The response ends our side; the client ends its own (an RST_STREAM sent
  // now would overtake the HEADERS in nghttp2's queue and hide the status).
  conn_->submit_response(sid_, status, false);
}

void InboundStream::on_headers(H2Conn* c, int32_t sid, Headers&& h, bool end_stream) {
  auto& info = in_.conns_.at(c);
  InboundRequest req = InboundRequest::from_headers(h);
  req.local = info.local;
  req.peer = info.peer;
  req.peer_identity = info.peer_identity;
  Node& node = in_.node_;
  auto snap = node.snapshot();
  InboundDecision d = decide_inbound(*snap, req);
  const auto* src = snap->workload_by_ip(info.peer.ip);
  ConnLabels labels;
  labels.reporter = "destination";
  labels.src = src;
  labels.src_principal = info.peer_identity;
  labels.dst = d.dst;
  labels.dst_principal = d.dst ? d.dst->identity : "";
  if (d.status != 200) {
    labels.response_flags = d.status == 401 ? "DENY" : "CONNECT";
    auto cc = node.metrics().conn(labels);
    cc.opened->inc();
    cc.closed->inc();
    node.access_log().write({{"reporter", "destination"},
                             {"src", info.peer.to_string()},
                             {"src_identity", info.peer_identity},
                             {"authority", req.authority},
                             {"status", d.status},
                             {"error", d.reason}});
    return refuse(d.status, d.reason, labels.response_flags);
  }
  if (end_stream) return refuse(400, "CONNECT stream ended before the tunnel opened", "CONNECT");

  auto cc = node.metrics().conn(labels);
  cc.opened->inc();
  node.metrics().active_tunnels->inc();
  auto start = std::chrono::steady_clock::now();
  std::string dst_uid = d.dst->uid.str();
  std::string upstream = d.upstream.to_string();
  std::string peer = info.peer.to_string();
  std::string peer_id = info.peer_identity;
  std::string dst_id = d.dst->identity;
  Inbound* in = &in_;
  auto* tunnel = new Tunnel(node.loop(), c, sid, [in, cc, start, upstream, peer, peer_id, dst_id](
                                         Tunnel* t, const TunnelStats& st, const std::string& err) {
    in->active_.erase(t);
    Node& n = in->node_;
    n.metrics().active_tunnels->dec();
    cc.closed->inc();
    cc.received->inc(st.h2_to_tcp);
    cc.sent->inc(st.tcp_to_h2);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - start)
                  .count();
    n.access_log().write({{"reporter", "destination"},
                          {"src", peer},
                          {"dst", upstream},
                          {"src_identity", peer_id},
                          {"dst_identity", dst_id},
                          {"bytes_received", st.h2_to_tcp},
                          {"bytes_sent", st.tcp_to_h2},
                          {"duration_ms", ms},
                          {"error", err}});
  });
  c->detach(sid);
  // From here the tunnel handles the stream; this object goes away.
  in_.active_[tunnel] = Inbound::Active{tunnel, d.facts, dst_uid};
  // Re-point the stream at the tunnel.
  c->set_stream_handler(sid, tunnel);

  // In-pod: from inside the destination pod's netns, with the client's own
  // address (IP_TRANSPARENT, delivery mark: replies route back to us).
  SockAddr bound;
  InPod* inpod = node.inpod() && node.netns_for(d.upstream.ip) >= 0 ? node.inpod() : nullptr;
  auto tcp = inpod ? inpod->dial_delivery(info.peer.ip, d.upstream, &bound)
                   : net::TcpConn::create_for(node.loop(), d.upstream, 0, std::nullopt);
  if (!tcp.ok()) {
    c->submit_response(sid, 503, false);
    tunnel->abort("upstream socket: " + tcp.error().message);
    delete this;
    return;
  }
  struct Connect : net::TcpConn::Handler {
    Tunnel* tunnel;
    H2Conn* conn;
    int32_t sid;
    Inbound* in;
    Timer timer;
    Connect(Tunnel* t, H2Conn* c, int32_t s, Inbound* i, uv_loop_t* l)
        : tunnel(t), conn(c), sid(s), in(i), timer(l) {}
    void on_read(net::TcpConn*, const char*, size_t) override {}
    void on_eof(net::TcpConn*) override {}
    void on_error(net::TcpConn*, int) override {}
    InPod* inpod = nullptr;
    SockAddr bound, upstream;
    void on_connect(net::TcpConn* t, int status) override {
      timer.stop();
      done(t, status == 0 ? "" : std::string("connect: ") + uv_strerror(status));
    }
    void done(net::TcpConn* t, const std::string& err) {
      if (inpod) inpod->delivery_done(bound, upstream);
      bool alive = in->active_.count(tunnel) != 0;
      if (!alive) {
        t->close(true);
      } else if (!err.empty()) {
        in->node_.metrics().rejected("inbound", "upstream")->inc();
        conn->submit_response(sid, 503, false);
        t->close(true);
        tunnel->abort(err);
      } else {
        conn->submit_response(sid, 200, true);
        tunnel->attach(t);
      }
      auto* self = this;
      defer(in->node_.loop(), [self] { delete self; });
    }
  };
  auto* cw = new Connect(tunnel, c, sid, &in_, node.loop());
  cw->inpod = inpod;
  cw->bound = bound;
  cw->upstream = d.upstream;
  (*tcp)->set_handler(cw);
  int r = (*tcp)->connect(d.upstream);
  if (r != 0) {
    (*tcp)->set_handler(nullptr);
    cw->done(*tcp, std::string("connect: ") + uv_strerror(r));
  } else {
    net::TcpConn* t = *tcp;
    cw->timer.start(node.options().connect_timeout_ms, 0, [cw, t] {
      t->set_handler(nullptr);
      cw->done(t, "connect timed out");
    });
  }
  delete this;
}

Inbound::Inbound(Node& node) : node_(node) {}

Inbound::~Inbound() { close_all(); }

Result<void> Inbound::sync_listeners(const config::Snapshot& snap) {
  // Standalone: every local HBONE workload IP. In-pod: each enrolled pod's IP,
  // the socket opened inside that pod's netns and handed to sk_lookup.
  std::map<SockAddr, int> want;  // address → netns fd (-1: ours)
  InPod* inpod = node_.inpod();
  if (inpod) {
    for (auto& [ip, fd] : inpod->hbone_targets()) want[SockAddr{ip, snap.listeners.hbone_port}] = fd;
  } else {
    for (const auto* w : snap.local_workloads())
      if (w->protocol == config::Protocol::kHbone && w->gateway.empty())  // waypoints serve their own
        for (auto& ip : w->ips) want[SockAddr{ip, snap.listeners.hbone_port}] = -1;
  }
  for (auto it = listeners_.begin(); it != listeners_.end();) {
    if (!want.count(it->first)) {
      it->second->close();
      it = listeners_.erase(it);
    } else {
      ++it;
    }
  }
  std::string errors;
  for (auto& [a, fd] : want) {
    if (listeners_.count(a)) continue;
    auto l = net::TcpListener::listen_in(node_.loop(), fd, a, &Inbound::on_accept, this);
    if (l.ok() && inpod) {
      if (auto r = inpod->capture().set_listener(a.ip, WARREN_SLOT_HBONE, (*l)->fd()); !r) {
        (*l)->close();
        l = r.error();
      }
    }
    if (!l.ok()) {
      errors += (errors.empty() ? "" : "; ") + l.error().message;
      continue;
    }
    listeners_[a] = *l;
    spdlog::info("inbound: HBONE listening on {}{}", a.to_string(), fd >= 0 ? " (pod netns)" : "");
  }
  if (!errors.empty()) return make_error(Errc::kSystem, errors);
  return {};
}

void Inbound::on_accept(void* ctx, uv_stream_t* server) {
  static_cast<Inbound*>(ctx)->accept(server);
}

void Inbound::accept(uv_stream_t* server) {
  auto* tcp = net::TcpConn::create(node_.loop());
  if (tcp->accept_from(server) != 0) {
    tcp->close();
    return;
  }
  SockAddr local = tcp->local(), peer = tcp->peer();
  auto snap = node_.snapshot();
  const auto* w = snap->workload_by_ip(local.ip);
  if (!w || w->node != snap->node_name) {
    node_.metrics().rejected("inbound", "unknown_destination")->inc();
    tcp->close(true);
    return;
  }
  auto ctx = node_.server_ctx(w->identity);
  if (!ctx.ok()) {
    spdlog::warn("inbound: no certificate for {}: {}", w->identity, ctx.error().message);
    node_.metrics().rejected("inbound", "no_certificate")->inc();
    tcp->close(true);
    return;
  }
  auto conn = std::make_unique<H2Conn>(tcp, *ctx, true, this);
  H2Conn* c = conn.get();
  conns_[c] = ConnInfo{std::move(conn), local, peer, ""};
  c->start();
}

void Inbound::on_ready(H2Conn* c) {
  auto id = tls::peer_spiffe_id(c->tls().ssl());
  if (!id.ok()) {
    node_.metrics().rejected("inbound", "peer_identity")->inc();
    c->close("client identity: " + id.error().message);
    return;
  }
  conns_.at(c).peer_identity = *id;
}

StreamHandler* Inbound::on_new_stream(H2Conn* c, int32_t sid) {
  return new InboundStream(*this, c, sid);
}

void Inbound::on_conn_close(H2Conn* c, const std::string& reason) {
  auto it = conns_.find(c);
  if (it == conns_.end()) return;
  spdlog::debug("inbound: connection from {} closed: {}", it->second.peer.to_string(), reason);
  if (!it->second.conn->ready() && reason.rfind("TLS", 0) == 0)
    node_.metrics().rejected("inbound", "tls")->inc();
  auto owned = std::make_shared<std::unique_ptr<H2Conn>>(std::move(it->second.conn));
  conns_.erase(it);
  defer(node_.loop(), [owned] { owned->reset(); });
}

void Inbound::recheck(const config::Snapshot& snap) {
  std::vector<std::pair<Tunnel*, std::string>> kill;
  for (auto& [t, a] : active_) {
    const auto* dst = snap.workload_by_uid(a.dst_uid);
    if (!dst) {
      kill.push_back({t, "destination workload removed"});
      continue;
    }
    auto d = policy::check_inbound(snap, *dst, a.facts);
    if (!d.allow) kill.push_back({t, "denied by updated policy: " + d.reason});
  }
  for (auto& [t, why] : kill) {
    spdlog::info("inbound: closing tunnel: {}", why);
    node_.metrics().rejected("inbound", "policy_recheck")->inc();
    t->abort(why);
  }
}

void Inbound::close_all() {
  for (auto& [a, l] : listeners_) l->close();
  listeners_.clear();
  std::vector<H2Conn*> all;
  for (auto& [c, i] : conns_) all.push_back(c);
  for (auto* c : all) c->close("shutting down");
}

}  // namespace warren::node
