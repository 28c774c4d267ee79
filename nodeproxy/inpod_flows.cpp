// In-pod mode, second half: plaintext inbound on 15006 (PeerAuthentication
// and L4 policy, then delivery inside the pod with the client's address), and
// the same-node fast path's bookkeeping (metrics for direct flows, re-check on
// policy change).
#include <spdlog/spdlog.h>

#include "inpod.h"
#include "node.h"
#include "plain_relay.h"
#include "pod_netns.h"
#include "policy.h"
#include "warren/defer.h"
#include "warren_bpf.h"

namespace warren::node {

namespace {

// Connects the delivery socket, then relays; deletes itself.
struct Delivery : net::TcpConn::Handler {
  Node* node;
  net::TcpConn* client;
  net::TcpConn* up = nullptr;
  SockAddr bound, dst;
  ConnLabels labels;
  Timer timer;
  Delivery(Node* n, net::TcpConn* c) : node(n), client(c), timer(n->loop()) {}
  void on_read(net::TcpConn*, const char*, size_t) override {}
  void on_eof(net::TcpConn*) override {}
  void on_error(net::TcpConn*, int) override {}
  void on_connect(net::TcpConn*, int status) override { done(status); }
  void done(int status) {
    timer.stop();
    if (auto* ip = node->inpod()) ip->delivery_done(bound, dst);
    if (status != 0) {
      node->metrics().rejected("inbound", "upstream")->inc();
      up->close(true);
      client->close(true);
    } else {
      auto cc = node->metrics().conn(labels);
      cc.opened->inc();
      PlainRelay::start(client, up, [cc](uint64_t in, uint64_t out, const std::string&) {
        cc.closed->inc();
        cc.received->inc(in);
        cc.sent->inc(out);
      });
    }
    auto* self = this;
    defer(node->loop(), [self] { delete self; });
  }
};

}  // namespace

void InPod::on_plain(void* ctx, uv_stream_t* server) {
  auto* p = static_cast<Pod*>(ctx);
  auto* tcp = net::TcpConn::create(p->owner->node_.loop());
  if (tcp->accept_from(server) != 0) {
    tcp->close();
    return;
  }
  p->owner->plain_inbound(*p, tcp);
}

void InPod::plain_inbound(Pod& p, net::TcpConn* tcp) {
  SockAddr local = tcp->local(), peer = tcp->peer();  // local: what the client dialled
  auto snap = node_.snapshot();
  const auto* w = snap->workload_by_ip(local.ip);
  policy::ConnFacts facts{peer.ip, local.ip, local.port, std::nullopt};
  auto d = w ? policy::check_inbound(*snap, *w, facts)
             : policy::Decision{false, "no workload for " + local.ip.to_string()};
  if (!d.allow) {
    node_.metrics().rejected("inbound", "plaintext")->inc();
    node_.access_log().write({{"reporter", "destination"},
                              {"src", peer.to_string()},
                              {"dst", local.to_string()},
                              {"security", "none"},
                              {"error", d.reason}});
    spdlog::info("inbound: plaintext {} -> {} refused: {}", peer.to_string(), local.to_string(),
                 d.reason);
    tcp->close(true);
    return;
  }
  SockAddr bound;
  auto up = dial_delivery(peer.ip, local, &bound);
  if (!up) {
    spdlog::warn("inbound: delivery socket for {}: {}", local.to_string(), up.error().message);
    tcp->close(true);
    return;
  }
  auto* dl = new Delivery(&node_, tcp);
  dl->up = *up;
  dl->bound = bound;
  dl->dst = local;
  dl->labels.reporter = "destination";
  dl->labels.src = snap->workload_by_ip(peer.ip);
  dl->labels.dst = w;
  dl->labels.dst_principal = w->identity;
  dl->labels.mtls = false;
  dl->labels.plaintext = true;
  (*up)->set_handler(dl);
  if (int r = (*up)->connect(local); r != 0) return dl->done(r);
  dl->timer.start(node_.options().connect_timeout_ms, 0, [dl] { dl->done(UV_ETIMEDOUT); });
}

void InPod::recheck_direct_flows(const config::Snapshot& snap) {
  // Verdicts were made under the old policy: every later connect asks again.
  capture_->clear_verdicts();
  for (const auto& f : capture_->direct_flows()) {
    if (f.closed) continue;
    Pod* src = pod_by_cookie(f.netns_cookie);
    const auto* sw = src ? workload_of(*src, snap) : nullptr;
    const auto* dw = snap.workload_by_ip(f.server.ip);
    bool allow = false;
    std::string why = "source or destination left the mesh";
    if (sw && dw && by_ip_.count(f.server.ip)) {
      policy::ConnFacts facts{f.client.ip, f.server.ip, f.server.port, sw->identity};
      auto d = policy::check_inbound(snap, *dw, facts);
      allow = d.allow;
      why = d.reason;
    }
    if (allow) continue;
    spdlog::info("capture: ending direct flow {} -> {}: {}", f.client.to_string(),
                 f.server.to_string(), why);
    // The client's socket, by cookie; its reset ends the server's side.
    if (src)
      if (auto r = destroy_socket(src->ns.get(), f.client, f.server, f.sock_cookie); !r)
        spdlog::warn("capture: {}", r.error().message);
    node_.metrics().rejected("outbound", "policy")->inc();
  }
}

void InPod::poll_flows() {
  auto snap = node_.snapshot();
  auto& fam = node_.registry().counter(
      "warren_capture_events_total",
      "eBPF capture events (per-CPU counters of the capture programs, summed)", {"event"});
  // The pinned counters outlive restarts: export what happened since start.
  auto now = capture_->stats();
  last_stats_.resize(now.size(), 0);
  for (int i = 0; i < WARREN_STAT_MAX; i++) {
    if (now[i] > last_stats_[i]) fam.with({bpf::stat_name(i)})->inc(now[i] - last_stats_[i]);
    last_stats_[i] = now[i];
  }
  auto& fp_conns = node_.registry().counter(
      "warren_fast_path_connections_total", "Same-node connections that bypassed the proxy (fast path)",
      {"state"});
  auto& fp_bytes = node_.registry().counter(
      "warren_fast_path_bytes_total", "Bytes of closed fast path connections", {"direction"});
  for (const auto& f : capture_->direct_flows()) {
    std::string key = f.client.to_string() + ">" + f.server.to_string();
    ConnLabels l;
    l.reporter = "source";
    Pod* src = pod_by_cookie(f.netns_cookie);
    l.src = src ? workload_of(*src, *snap) : nullptr;
    l.src_principal = l.src ? l.src->identity : "";
    l.dst = snap->workload_by_ip(f.server.ip);
    l.dst_principal = l.dst ? l.dst->identity : "";
    l.mtls = false;
    l.plaintext = true;
    auto cc = node_.metrics().conn(l);
    if (seen_flows_.emplace(key, 0).second) {
      cc.opened->inc();
      fp_conns.with({"opened"})->inc();
    }
    if (f.closed) {
      cc.closed->inc();
      cc.sent->inc(f.bytes_sent);
      cc.received->inc(f.bytes_received);
      fp_conns.with({"closed"})->inc();
      fp_bytes.with({"sent"})->inc(f.bytes_sent);
      fp_bytes.with({"received"})->inc(f.bytes_received);
      seen_flows_.erase({key, 0});
      capture_->forget_flow(f);
    }
  }
}

}  // namespace warren::node
