#include "inpod.h"

#include <fcntl.h>
#include <fstream>
#include <spdlog/spdlog.h>

#include "enroll_server.h"
#include "inbound.h"
#include "netns_scan.h"
#include "node.h"
#include "plain_relay.h"
#include "pod_netns.h"
#include "policy.h"
#include "socks_entry.h"
#include "warren/defer.h"
#include "warren_bpf.h"

namespace warren::node {

namespace {

// The cgroup v2 path of `dir` relative to its cgroup2 mount ("" for a mount's
// root), or nullopt when `dir` is not under a cgroup2 mount.
std::optional<std::string> cgroup_relative(const std::string& dir) {
  std::ifstream mounts("/proc/self/mounts");
  std::string dev, mnt, type, rest;
  std::optional<std::string> best;
  size_t best_len = 0;
  while (mounts >> dev >> mnt >> type && std::getline(mounts, rest)) {
    if (type != "cgroup2") continue;
    if (dir.compare(0, mnt.size(), mnt) != 0) continue;
    if (dir.size() > mnt.size() && dir[mnt.size()] != '/') continue;
    if (mnt.size() >= best_len) {
      best_len = mnt.size();
      best = dir.substr(mnt.size());
    }
  }
  return best;
}

// Whether process `pid` lives under the cgroup v2 path `rel` (the capture's
// cgroup: pods elsewhere are not this node's, even with a matching IP).
bool in_cgroup(pid_t pid, const std::string& rel) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/cgroup");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("0::", 0) != 0) continue;
    std::string path = line.substr(3);
    if (rel.empty() || rel == "/") return true;
    return path == rel || path.rfind(rel + "/", 0) == 0;
  }
  return false;
}

std::optional<IpAddr> first_v4(const std::vector<IpAddr>& ips) {
  for (auto& ip : ips)
    if (ip.is_v4()) return ip;
  return std::nullopt;
}

std::optional<IpAddr> first_v6(const std::vector<IpAddr>& ips) {
  for (auto& ip : ips)
    if (!ip.is_v4()) return ip;
  return std::nullopt;
}

}  // namespace

InPod::InPod(Node& node) : node_(node) {}
InPod::~InPod() { stop(); }

Result<void> InPod::start(const config::Snapshot& snap) {
  node_name_ = snap.node_name;
  auto cap = bpf::Capture::open({snap.capture.pin_dir, snap.capture.cgroup});
  if (!cap) return cap.error().wrap("eBPF capture (pins " + snap.capture.pin_dir + ")");
  capture_ = std::move(cap.value());
  last_stats_ = capture_->stats();
  std::vector<uint64_t> stale_cookies = capture_->enrolled();
  std::vector<uint64_t> stale_links = capture_->attached_netns();
  spdlog::info("capture: programs attached to {}, pinned under {} ({} pods enrolled by a previous run)",
               snap.capture.cgroup, snap.capture.pin_dir, stale_cookies.size());

  if (snap.capture.scan_proc) {
    auto found = cni::scan_netns();
    if (!found)
      spdlog::warn("capture: finding running pods in /proc: {} (pods enroll when warren-cni reports them)",
                   found.error().message);
    auto rel = cgroup_relative(snap.capture.cgroup);
    if (!rel) spdlog::warn("capture: {} is not on a cgroup2 mount", snap.capture.cgroup);
    for (auto& n : found ? *found : std::vector<cni::NetnsInfo>{}) {
      if (!rel || !in_cgroup(n.pid, *rel)) continue;
      bool ours = false;
      for (auto& ip : n.ips)
        if (const auto* w = snap.workload_by_ip(ip); w && w->node == snap.node_name) ours = true;
      if (!ours) continue;
      auto fd = netns::open("/proc/" + std::to_string(n.pid) + "/ns/net");
      if (!fd) continue;  // exited meanwhile
      if (auto p = add_pod(fd->get(), n.ips); !p)
        spdlog::warn("capture: pod netns of pid {}: {}", n.pid, p.error().message);
    }
  }
  sync(snap);
  // What the previous run enrolled and is gone now.
  std::set<uint64_t> live_cookies, live_inodes;
  for (auto& [ino, p] : pods_)
    if (p->enrolled) {
      live_cookies.insert(p->cookie);
      live_inodes.insert(ino);
    }
  for (auto c : stale_cookies)
    if (!live_cookies.count(c)) (void)capture_->unenroll(c);
  for (auto ino : stale_links)
    if (!live_inodes.count(ino)) (void)capture_->detach_netns(ino);
  // Verdicts of the previous run were made under a config this run may not
  // share: flush them, and re-check direct flows that are still open.
  recheck_direct_flows(snap);

  cni_ = std::make_unique<cni::EnrollServer>(
      node_.loop(), snap.capture.cni_socket,
      [this](const cni::EnrollRequest& r) { return on_cni(r); });
  if (auto r = cni_->start(); !r) return r.error().wrap("CNI socket " + snap.capture.cni_socket);

  uv_timer_init(node_.loop(), &flow_timer_);
  flow_timer_.data = this;
  uv_timer_start(&flow_timer_, [](uv_timer_t* t) { static_cast<InPod*>(t->data)->poll_flows(); },
                 1000, 1000);
  timer_started_ = true;
  return {};
}

void InPod::stop() {
  if (timer_started_) {
    timer_started_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&flow_timer_), nullptr);
  }
  if (cni_) cni_->close();
  // Listeners close; the BPF maps and links stay pinned so capture holds
  // (connections fail closed) until the next start.
  for (auto& [ino, p] : pods_) close_listeners(*p);
}

Result<InPod::Pod*> InPod::add_pod(int ns_fd, std::vector<IpAddr> ips) {
  auto ino = netns::inode(ns_fd);
  if (!ino) return ino.error();
  auto& slot = pods_[*ino];
  if (!slot) {
    auto cookie = netns::cookie(ns_fd);
    if (!cookie) {
      pods_.erase(*ino);
      return cookie.error();
    }
    int dup = ::fcntl(ns_fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) {
      pods_.erase(*ino);
      return Error::sys("dup netns fd");
    }
    slot = std::make_unique<Pod>();
    slot->inode = *ino;
    slot->cookie = *cookie;
    slot->ns = netns::NsFd(dup);
    slot->owner = this;
  }
  if (!ips.empty()) slot->ips = std::move(ips);
  spdlog::debug("capture: pod netns {} (cookie {}) known", slot->inode, slot->cookie);
  return slot.get();
}

const config::Workload* InPod::workload_of(const Pod& p, const config::Snapshot& snap) const {
  for (auto& ip : p.ips)
    if (const auto* w = snap.workload_by_ip(ip)) return w;
  if (!p.uid.empty()) return snap.workload_by_uid(p.uid);
  return nullptr;
}

void InPod::sync(const config::Snapshot& snap) {
  for (auto& [ino, pp] : pods_) {
    Pod& p = *pp;
    const auto* w = workload_of(p, snap);
    bool want = w && (w->node.empty() || w->node == snap.node_name) && snap.enrolled(*w);
    bool fast = snap.capture.fast_path;
    if (want && (!p.enrolled || p.fast_path != fast)) {
      if (auto r = enroll(p, *w, snap); !r) {
        spdlog::error("capture: enrolling {}/{} (netns {}): {}", w->namespace_, w->name, p.inode, r.error().message);
        unenroll(p);
      }
    } else if (!want && p.enrolled) {
      unenroll(p);
    }
  }
  if (auto r = node_.inbound().sync_listeners(snap); !r)
    spdlog::warn("capture: HBONE listeners: {}", r.error().message);
}

Result<void> InPod::enroll(Pod& p, const config::Workload& w, const config::Snapshot& snap) {
  int ns = p.ns.get();
  spdlog::debug("capture: enroll netns {} fd {} (enrolled {})", p.inode, ns, p.enrolled);
  auto ip4 = first_v4(p.ips);
  auto ip6 = first_v6(p.ips);
  if (!p.enrolled) {
    if (auto r = prepare_pod_netns(ns); !r) return r;
    auto out = net::TcpListener::listen_in(node_.loop(), ns, SockAddr{*IpAddr::parse("127.0.0.1"), WARREN_PORT_OUTBOUND},
                                           &InPod::on_outbound, &p);
    if (!out) return out.error();
    p.out4 = *out;
    if (auto o6 = net::TcpListener::listen_in(node_.loop(), ns, SockAddr{*IpAddr::parse("::1"), WARREN_PORT_OUTBOUND},
                                              &InPod::on_outbound, &p))
      p.out6 = *o6;  // no IPv6 in the pod: v4 only
    auto plain = net::TcpListener::listen_in(node_.loop(), ns, SockAddr{*IpAddr::parse("127.0.0.1"), WARREN_PORT_INBOUND},
                                             &InPod::on_plain, &p);
    if (!plain) return plain.error();
    p.plain = *plain;
    for (auto& ip : p.ips)
      if (auto r = capture_->set_listener(ip, WARREN_SLOT_PLAIN, p.plain->fd()); !r) return r;
    for (auto& ip : p.ips) by_ip_[ip] = &p;
    p.enrolled = true;  // so the HBONE listener opens before sk_lookup steers to it
    if (auto r = node_.inbound().sync_listeners(snap); !r) return r;
    if (auto r = capture_->attach_netns(ns, p.inode); !r) return r;
  }
  bpf::PodEntry e;
  e.netns_cookie = p.cookie;
  e.ip4 = ip4;
  e.ip6 = ip6;
  e.fast_path = snap.capture.fast_path;
  e.excluded_ports = w.excluded_outbound_ports();
  if (auto r = capture_->enroll(e); !r) return r;
  p.fast_path = e.fast_path;
  p.name = w.name;
  p.namespace_ = w.namespace_;
  p.uid = w.uid;
  spdlog::info("capture: enrolled {}/{} ({}, netns {}){}", w.namespace_, w.name,
               ip4 ? ip4->to_string() : "?", p.inode, e.fast_path ? ", fast path on" : "");
  return {};
}

void InPod::close_listeners(Pod& p) {
  for (auto** l : {&p.out4, &p.out6, &p.plain})
    if (*l) {
      (*l)->close();
      *l = nullptr;
    }
}

void InPod::unenroll(Pod& p) {
  // New connects stop being captured first, then inbound steering stops.
  (void)capture_->unenroll(p.cookie);
  (void)capture_->detach_netns(p.inode);
  close_listeners(p);
  for (auto& ip : p.ips)
    if (auto it = by_ip_.find(ip); it != by_ip_.end() && it->second == &p) by_ip_.erase(it);
  if (p.enrolled) spdlog::info("capture: unenrolled {}/{} (netns {})", p.namespace_, p.name, p.inode);
  p.enrolled = false;
  if (auto r = node_.inbound().sync_listeners(*node_.snapshot()); !r)
    spdlog::warn("capture: HBONE listeners: {}", r.error().message);
}

void InPod::remove_pod(uint64_t inode) {
  auto it = pods_.find(inode);
  if (it == pods_.end()) return;
  unenroll(*it->second);
  pods_.erase(it);
}

Result<void> InPod::on_cni(const cni::EnrollRequest& req) {
  auto snap = node_.snapshot();
  switch (req.op) {
    case cni::Op::kAdd: {
      auto fd = netns::open(req.netns);
      if (!fd) return fd.error();
      // A pod IP belongs to one netns: an older netns holding it (a pod whose
      // DEL never came) is forgotten.
      if (auto ino = netns::inode(fd->get())) {
        std::vector<uint64_t> stale;
        for (auto& [other, op] : pods_)
          for (auto& ip : op->ips)
            for (auto& nip : req.ips)
              if (other != *ino && ip == nip) stale.push_back(other);
        for (auto o : stale) remove_pod(o);
      }
      auto p = add_pod(fd->get(), req.ips);
      if (!p) return p.error();
      (*p)->name = req.name;
      (*p)->namespace_ = req.pod_namespace;
      (*p)->uid = req.uid;
      sync(*snap);
      const auto* w = workload_of(**p, *snap);
      if (w && snap->enrolled(*w) && !(*p)->enrolled)
        return make_error(Errc::kUnavailable, "pod " + req.pod_namespace + "/" + req.name + " could not be enrolled (see warren-node's log)");
      spdlog::info("cni: pod {}/{} added ({})", req.pod_namespace, req.name,
                   (*p)->enrolled ? "enrolled" : w ? "not enrolled by config" : "not in the config yet");
      return {};
    }
    case cni::Op::kDel: {
      for (auto& [ino, p] : pods_) {
        bool match = !req.uid.empty() && p->uid == req.uid;
        for (auto& ip : req.ips)
          for (auto& pip : p->ips) match = match || ip == pip;
        if (!match && !req.netns.empty())
          if (auto i = cni::netns_inode(req.netns)) match = *i == ino;
        if (match) {
          unprepare_pod_netns(p->ns.get());
          remove_pod(ino);
          spdlog::info("cni: pod {}/{} deleted", req.pod_namespace, req.name);
          break;
        }
      }
      return {};
    }
    case cni::Op::kCheck: {
      for (auto& [ino, p] : pods_)
        for (auto& ip : req.ips)
          for (auto& pip : p->ips)
            if (ip == pip) {
              const auto* w = workload_of(*p, *snap);
              if (w && snap->enrolled(*w) && !p->enrolled)
                return make_error(Errc::kUnavailable, "pod is not enrolled");
              return {};
            }
      return make_error(Errc::kNotFound, "pod " + req.pod_namespace + "/" + req.name + " is unknown to warren-node");
    }
  }
  return {};
}

void InPod::apply(const config::Snapshot& snap) {
  if (!capture_) return;
  sync(snap);
  recheck_direct_flows(snap);
}

std::vector<std::pair<IpAddr, int>> InPod::hbone_targets() const {
  std::vector<std::pair<IpAddr, int>> out;
  for (auto& [ip, p] : by_ip_) out.emplace_back(ip, p->ns.get());
  return out;
}

int InPod::netns_for(const IpAddr& ip) const {
  auto it = by_ip_.find(ip);
  return it == by_ip_.end() ? -1 : it->second->ns.get();
}

InPod::Pod* InPod::pod_by_cookie(uint64_t cookie) {
  for (auto& [ino, p] : pods_)
    if (p->cookie == cookie) return p.get();
  return nullptr;
}

void InPod::allow_direct(uint64_t src_cookie, const IpAddr& src_ip, const SockAddr& dst) {
  auto src = by_ip_.find(src_ip);
  if (src == by_ip_.end() || !src->second->fast_path || !by_ip_.count(dst.ip)) return;
  if (auto r = capture_->set_verdict(src_cookie, dst); !r)
    spdlog::warn("capture: fast path verdict: {}", r.error().message);
}

Result<net::TcpConn*> InPod::dial_delivery(const IpAddr& client, const SockAddr& dst,
                                           SockAddr* bound) {
  net::DialOptions dial;
  dial.netns_fd = netns_for(dst.ip);
  if (dial.netns_fd < 0) return make_error(Errc::kNotFound, dst.ip.to_string() + " is not an enrolled pod");
  dial.mark = WARREN_DELIVER_MARK;
  dial.transparent = true;
  dial.bind_src = client;
  auto tcp = net::TcpConn::create_for(node_.loop(), dst, dial);
  if (!tcp) return tcp.error();
  *bound = (*tcp)->local();
  if (auto r = capture_->add_delivery(*bound, dst); !r) {
    (*tcp)->close(true);
    return r.error();
  }
  return *tcp;
}

void InPod::delivery_done(const SockAddr& bound, const SockAddr& dst) {
  if (capture_) capture_->remove_delivery(bound, dst);
}

void InPod::on_outbound(void* ctx, uv_stream_t* server) {
  auto* p = static_cast<Pod*>(ctx);
  InPod* self = p->owner;
  auto* tcp = net::TcpConn::create(self->node_.loop());
  if (tcp->accept_from(server) != 0) {
    tcp->close();
    return;
  }
  SockAddr peer = tcp->peer();
  bool v6 = !peer.ip.is_v4();
  auto orig = self->capture_->take_orig_dst(p->cookie, peer.port, v6);
  if (!orig) orig = self->capture_->take_orig_dst(p->cookie, peer.port, !v6);  // v4-mapped
  auto ip4 = first_v4(p->ips);
  if (!orig || !ip4) {
    self->node_.metrics().rejected("outbound", "no_original_destination")->inc();
    spdlog::warn("capture: connection on 15001 from port {} without a recorded destination", peer.port);
    tcp->close(true);
    return;
  }
  start_captured_outbound(self->node_, tcp, *ip4, *orig, p->cookie);
}

nlohmann::json InPod::status() const {
  nlohmann::json pods = nlohmann::json::array();
  for (auto& [ino, p] : pods_) {
    nlohmann::json ips = nlohmann::json::array();
    for (auto& ip : p->ips) ips.push_back(ip.to_string());
    pods.push_back({{"netnsInode", ino}, {"netnsCookie", p->cookie}, {"ips", ips},
                    {"namespace", p->namespace_}, {"name", p->name}, {"enrolled", p->enrolled},
                    {"fastPath", p->fast_path}});
  }
  nlohmann::json stats = nlohmann::json::object();
  if (capture_) {
    auto s = capture_->stats();
    for (int i = 0; i < WARREN_STAT_MAX; i++) stats[bpf::stat_name(i)] = s[i];
  }
  return {{"pods", pods}, {"bpfStats", stats},
          {"pinDir", capture_ ? capture_->options().pin_dir : ""}};
}

}  // namespace warren::node
