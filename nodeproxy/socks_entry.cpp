#include "socks_entry.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <random>

#include "inpod.h"
#include "node.h"
#include "outbound_plan.h"
#include "plain_relay.h"
#include "pool.h"
#include "socks5.h"
#include "tunnel.h"
#include "warren/defer.h"

namespace warren::node {

namespace {

std::string random_hex(size_t bytes) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* hex = "0123456789abcdef";
  std::string s;
  s.reserve(bytes * 2);
  for (size_t i = 0; i < bytes; i++) {
    auto b = static_cast<uint8_t>(rng());
    s += hex[b >> 4];
    s += hex[b & 15];
  }
  return s;
}

uint8_t socks_rep_for_status(int status) {
  switch (status) {
    case 401: return 0x02;  // connection not allowed by ruleset
    case 503: return 0x05;  // connection refused
    default: return 0x01;
  }
}

// One SOCKS5 client from greeting until its tunnel (or plain relay) takes over.
class SocksSession : public net::TcpConn::Handler, public StreamHandler {
 public:
  SocksSession(Node& node, net::TcpConn* tcp) : node_(node), tcp_(tcp), timer_(node.loop()) {
    tcp_->set_handler(this);
    tcp_->start_read();
    timer_.start(SocksEntry::kHandshakeTimeoutMs, 0,
                 [this] { fail(0x01, "SOCKS5 handshake or connect timed out", "timeout", true); });
  }

  // A connection captured on 15001: no SOCKS exchange; the application's
  // bytes wait in its socket until the tunnel is open.
  SocksSession(Node& node, net::TcpConn* tcp, const IpAddr& pod_ip, const SockAddr& orig,
               uint64_t netns_cookie)
      : node_(node), tcp_(tcp), timer_(node.loop()) {
    captured_ = true;
    src_ip_ = pod_ip;
    cookie_ = netns_cookie;
    peer_ = SockAddr{pod_ip, tcp->peer().port};
    target_.addr = orig;
    target_.port = orig.port;
    tcp_->set_handler(this);
    state_ = State::kConnecting;
    timer_.start(node.options().connect_timeout_ms, 0,
                 [this] { fail(0x01, "connect timed out", "timeout", true); });
    plan();
  }

  void on_read(net::TcpConn*, const char* data, size_t len) override {
    if (state_ != State::kHandshake) {
      // Pipelined payload while we connect: keep it (bounded), stop reading.
      early_.append(data, len);
      if (early_.size() > 64 * 1024) tcp_->stop_read();
      return;
    }
    std::string out;
    auto st = parser_.feed(reinterpret_cast<const uint8_t*>(data), len, out);
    if (!out.empty()) tcp_->write(std::move(out));
    if (st == socks5::State::kNeedMore) return;
    if (st == socks5::State::kError) {
      node_.metrics().rejected("outbound", "socks_protocol")->inc();
      spdlog::info("socks5: {}: {}", peer_.to_string(), parser_.error());
      return close(false);
    }
    early_.assign(parser_.leftover_data());
    tcp_->stop_read();
    state_ = State::kConnecting;
    src_ip_ = peer_.ip;
    const auto& tg = parser_.target();
    target_.addr = tg.addr;
    target_.host = tg.host;
    target_.port = tg.addr ? tg.addr->port : tg.port;
    plan();
  }
  void on_eof(net::TcpConn*) override { close(true); }
  void on_error(net::TcpConn*, int) override { close(true); }

  // Response to our CONNECT.
  void on_headers(H2Conn* c, int32_t sid, Headers&& h, bool end_stream) override {
    const std::string* st = find_header(h, ":status");
    int status = st ? std::atoi(st->c_str()) : 0;
    if (status != 200 || end_stream) {
      c->reset_stream(sid, NGHTTP2_CANCEL);
      return fail(socks_rep_for_status(status),
                  "HBONE CONNECT to " + plan_.authority.to_string() + " answered " +
                      std::to_string(status),
                  status == 401 ? "DENY" : "CONNECT", false);
    }
    open_tunnel(c, sid);
  }
  void on_data(H2Conn* c, int32_t sid, const uint8_t*, size_t len) override {
    c->consume(sid, len);
  }
  void on_end_stream(H2Conn*, int32_t) override {}
  void on_stream_close(H2Conn*, int32_t, uint32_t code) override {
    conn_ = nullptr;
    fail(0x01, "HBONE stream closed before the tunnel opened", "CONNECT", false);
  }

 private:
  enum class State { kHandshake, kConnecting, kDone };

  void plan() {
    auto snap = node_.snapshot();
    snap_ = snap;
    const OutboundTarget& t = target_;
    const config::Service* svc = nullptr;
    if (t.addr) svc = snap->service_by_vip(t.addr->ip);
    else svc = snap->service_by_hostname(t.host);
    plan_ = plan_outbound(*snap, src_ip_, t, node_.next_rr(svc));
    labels_.reporter = "source";
    labels_.src = plan_.src;
    labels_.src_principal = plan_.src ? plan_.src->identity : "";
    labels_.dst = plan_.dst;
    labels_.svc = plan_.svc;
    labels_.dst_principal = plan_.dst ? plan_.dst->identity : "";
    switch (plan_.kind) {
      case OutboundPlan::Kind::kReject:
        return fail(plan_.socks_rep, plan_.reason, "NR", false);
      case OutboundPlan::Kind::kPassthrough:
        labels_.mtls = false;
        labels_.dst_principal.clear();
        return passthrough();
      case OutboundPlan::Kind::kHbone:
        return hbone();
    }
  }

  void hbone() {
    PoolKey key{plan_.src->identity, plan_.dst->identity, plan_.connect_to, peer_.ip};
    Headers h = {
        {":method", "CONNECT"},
        {":authority", plan_.authority.to_string()},
        {"forwarded", "for=\"" + peer_.to_string() + "\""},
        {"baggage", "k8s.namespace.name=" + plan_.src->namespace_ + ",k8s.pod.name=" +
                        plan_.src->name + ",service.name=" + plan_.src->name},
        {"traceparent", "00-" + random_hex(16) + "-" + random_hex(8) + "-00"},
    };
    ticket_ = node_.pool().open(
        key, std::move(h), this,
        [this](H2Conn* c, int32_t sid) {
          ticket_ = 0;
          conn_ = c;
          sid_ = sid;
        },
        [this](const std::string& why) {
          ticket_ = 0;
          fail(0x05, "HBONE to " + plan_.connect_to.to_string() + ": " + why, "CONNECT", false);
        });
  }

  void open_tunnel(H2Conn* c, int32_t sid) {
    timer_.stop();
    state_ = State::kDone;
    if (!captured_) {
      tcp_->write(socks5::make_reply(0x00, tcp_->local()));
    } else {
      maybe_fast_path();
    }
    auto cc = node_.metrics().conn(labels_);
    cc.opened->inc();
    node_.metrics().active_tunnels->inc();
    auto start = std::chrono::steady_clock::now();
    Node* node = &node_;
    std::string src = peer_.to_string(), dst = plan_.authority.to_string();
    std::string src_id = plan_.src->identity, dst_id = plan_.dst->identity;
    auto* t = new Tunnel(node_.loop(), c, sid, [node, cc, start, src, dst, src_id, dst_id](
                                     Tunnel*, const TunnelStats& st, const std::string& err) {
      node->metrics().active_tunnels->dec();
      cc.closed->inc();
      cc.sent->inc(st.h2_to_tcp);
      cc.received->inc(st.tcp_to_h2);
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - start)
                    .count();
      node->access_log().write({{"reporter", "source"},
                                {"src", src},
                                {"dst", dst},
                                {"src_identity", src_id},
                                {"dst_identity", dst_id},
                                {"bytes_sent", st.tcp_to_h2},
                                {"bytes_received", st.h2_to_tcp},
                                {"duration_ms", ms},
                                {"error", err}});
    });
    c->set_stream_handler(sid, t);
    if (!early_.empty()) {
      c->send_data(sid, early_.data(), early_.size());
      early_.clear();
    }
    net::TcpConn* tcp = tcp_;
    tcp_ = nullptr;
    // The part of the SOCKS reply still queued is reported to the tunnel as
    // written later; it is not tunnel data.
    t->attach(tcp, tcp->queued());
    delete this;
  }

  // Same-node destination allowed by its own node's policy (this node): later
  // connects for {this pod, this destination} skip the proxy (DESIGN.md §5 b).
  void maybe_fast_path() {
    InPod* ip = node_.inpod();
    if (!ip || !target_.addr || !plan_.dst || plan_.waypoint) return;  // the waypoint must see it
    if (!plan_.dst->node.empty() && plan_.dst->node != node_.snapshot()->node_name) return;
    if (target_.addr->ip != plan_.authority.ip) return;  // a VIP: not routable without us
    ip->allow_direct(cookie_, src_ip_, *target_.addr);
  }

  void passthrough() {
    net::DialOptions dial;
    dial.netns_fd = captured_ ? node_.netns_for(src_ip_) : -1;
    if (dial.netns_fd >= 0) dial.mark = kMeshMark;
    auto up = net::TcpConn::create_for(node_.loop(), plan_.connect_to, dial);
    if (!up.ok()) return fail(0x01, up.error().message, "CONNECT", false);
    upstream_ = *up;
    watch_.s = this;
    upstream_->set_handler(&watch_);
    int r = upstream_->connect(plan_.connect_to);
    if (r != 0) return passthrough_connected(r);
    // Plain upstream connects honour --connect-timeout-ms like HBONE dials.
    timer_.start(node_.options().connect_timeout_ms, 0, [this] {
      fail(0x05, "connect " + plan_.connect_to.to_string() + " timed out", "CONNECT", true);
    });
  }

  void passthrough_connected(int status) {
    if (status != 0) {
      upstream_->close(true);
      upstream_ = nullptr;
      return fail(0x05, "connect " + plan_.connect_to.to_string() + ": " + uv_strerror(status),
                  "CONNECT", false);
    }
    timer_.stop();
    state_ = State::kDone;
    if (!captured_) tcp_->write(socks5::make_reply(0x00, tcp_->local()));
    if (!early_.empty()) upstream_->write(std::move(early_));
    auto cc = node_.metrics().conn(labels_);
    cc.opened->inc();
    PlainRelay::start(tcp_, upstream_, [cc](uint64_t up, uint64_t down, const std::string&) {
      cc.closed->inc();
      cc.received->inc(up);
      cc.sent->inc(down);
    });
    tcp_ = nullptr;
    upstream_ = nullptr;
    delete this;
  }

  void fail(uint8_t rep, const std::string& why, const std::string& flag, bool timeout) {
    if (state_ == State::kDone) return;
    spdlog::info("outbound: {} -> {}: {}", peer_.to_string(),
                 plan_.authority.port ? plan_.authority.to_string() : "?", why);
    node_.metrics().rejected("outbound", flag == "DENY" ? "policy" : timeout ? "timeout" : flag == "NR" ? "no_route" : "connect")->inc();
    if (state_ == State::kConnecting && labels_.reporter == "source") {
      labels_.response_flags = flag;
      auto cc = node_.metrics().conn(labels_);
      cc.opened->inc();
      cc.closed->inc();
    }
    node_.access_log().write({{"reporter", "source"},
                              {"src", peer_.to_string()},
                              {"error", why},
                              {"response_flags", flag}});
    if (captured_) return close(true);  // the application sees a reset, never a bypass
    if (tcp_ && state_ != State::kHandshake) tcp_->write(socks5::make_reply(rep, SockAddr{}));
    close(!timeout && state_ == State::kHandshake);
  }

  void close(bool reset) {
    state_ = State::kDone;
    if (ticket_) node_.pool().cancel(ticket_);
    if (conn_ && sid_ > 0) {
      conn_->detach(sid_);
      conn_->reset_stream(sid_, NGHTTP2_CANCEL);
    }
    if (upstream_) upstream_->close(true);
    if (tcp_) {
      if (reset) tcp_->close(true);
      else tcp_->graceful_close();
    }
    tcp_ = nullptr;
    auto* self = this;
    defer(node_.loop(), [self] { delete self; });
  }

 public:
  SockAddr peer_;

 private:
  Node& node_;
  net::TcpConn* tcp_;
  net::TcpConn* upstream_ = nullptr;
  Timer timer_;
  socks5::ServerParser parser_;
  State state_ = State::kHandshake;
  config::SnapshotPtr snap_;
  OutboundPlan plan_;
  OutboundTarget target_;
  IpAddr src_ip_;
  bool captured_ = false;
  uint64_t cookie_ = 0;
  ConnLabels labels_;
  std::string early_;
  uint64_t ticket_ = 0;
  H2Conn* conn_ = nullptr;
  int32_t sid_ = 0;
  struct Watch : net::TcpConn::Handler {
    SocksSession* s = nullptr;
    void on_read(net::TcpConn*, const char*, size_t) override {}
    void on_eof(net::TcpConn*) override {}
    void on_error(net::TcpConn*, int) override {}
    void on_connect(net::TcpConn*, int status) override { s->passthrough_connected(status); }
  } watch_;
};

}  // namespace

void start_captured_outbound(Node& node, net::TcpConn* tcp, const IpAddr& pod_ip,
                             const SockAddr& orig_dst, uint64_t netns_cookie) {
  new SocksSession(node, tcp, pod_ip, orig_dst, netns_cookie);
}

SocksEntry::SocksEntry(Node& node) : node_(node) {}
SocksEntry::~SocksEntry() { close(); }

Result<SockAddr> SocksEntry::listen(const SockAddr& addr) {
  auto l = net::TcpListener::listen(node_.loop(), addr, &SocksEntry::on_accept, this);
  if (!l.ok()) return l.error();
  listener_ = *l;
  return listener_->local();
}

void SocksEntry::close() {
  if (listener_) listener_->close();
  listener_ = nullptr;
}

void SocksEntry::on_accept(void* ctx, uv_stream_t* server) {
  auto* self = static_cast<SocksEntry*>(ctx);
  auto* tcp = net::TcpConn::create(self->node_.loop());
  if (tcp->accept_from(server) != 0) {
    tcp->close();
    return;
  }
  auto* s = new SocksSession(self->node_, tcp);
  s->peer_ = tcp->peer();
}

}  // namespace warren::node
