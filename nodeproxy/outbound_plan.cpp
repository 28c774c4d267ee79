#include "outbound_plan.h"

namespace warren::node {

namespace {
OutboundPlan reject(std::string why, uint8_t rep) {
  OutboundPlan p;
  p.kind = OutboundPlan::Kind::kReject;
  p.reason = std::move(why);
  p.socks_rep = rep;
  return p;
}

// Picks the endpoint workload for a service port, skipping endpoints that are
// gone from the snapshot or have no address of the target's family.
const config::Workload* pick_endpoint(const config::Snapshot& snap, const config::Service& svc,
                                      bool v4, uint64_t rr) {
  std::vector<const config::Workload*> ok;
  ok.reserve(svc.endpoints.size());
  for (std::string_view uid : svc.endpoints) {
    const auto* w = snap.workload_by_uid(uid);
    if (!w) continue;
    for (auto& ip : w->ips)
      if (ip.is_v4() == v4) {
        ok.push_back(w);
        break;
      }
  }
  if (ok.empty()) return nullptr;
  return ok[rr % ok.size()];
}

const IpAddr* ip_of_family(const config::Workload& w, bool v4) {
  for (auto& ip : w.ips)
    if (ip.is_v4() == v4) return &ip;
  return nullptr;
}
}  // namespace

OutboundPlan plan_outbound(const config::Snapshot& snap, const IpAddr& client_ip,
                           const OutboundTarget& target, uint64_t rr) {
  const auto* src = snap.workload_by_ip(client_ip);
  if (!src) return reject("client " + client_ip.to_string() + " is not a known workload", 2);
  if (src->node != snap.node_name)
    return reject("workload " + src->namespace_ + "/" + src->name + " runs on node " + src->node +
                      ", not on this node",
                  2);

  const config::Service* svc = nullptr;
  const config::Workload* dst = nullptr;
  uint16_t port = target.port;
  bool v4 = true;
  if (target.addr) {
    v4 = target.addr->ip.is_v4();
    svc = snap.service_by_vip(target.addr->ip);
    if (!svc) dst = snap.workload_by_ip(target.addr->ip);
  } else {
    svc = snap.service_by_hostname(target.host);
    if (!svc) return reject("unknown host \"" + target.host + "\" (only mesh service names resolve)", 4);
  }

  std::string_view waypoint, waypoint_ns;
  if (svc && !svc->waypoint.empty()) {
    waypoint = svc->waypoint;
    waypoint_ns = svc->namespace_;
  }
  if (svc && waypoint.empty()) {
    const config::ServicePort* sp = nullptr;
    for (auto& p : svc->ports)
      if (p.port == port) sp = &p;
    if (!sp)
      return reject("service " + svc->namespace_ + "/" + svc->name + " has no port " +
                        std::to_string(port),
                    5);
    if (sp->target_port) port = sp->target_port;
    dst = pick_endpoint(snap, *svc, v4, rr);
    if (!dst)
      return reject("service " + svc->namespace_ + "/" + svc->name + " has no endpoints", 4);
  } else if (svc) {
    bool has_port = false;
    for (auto& sp : svc->ports) has_port |= sp.port == port;
    if (!has_port)
      return reject("service " + svc->namespace_ + "/" + svc->name + " has no port " + std::to_string(port), 5);
  }
  if (dst && waypoint.empty() && !dst->waypoint.empty()) {
    waypoint = dst->waypoint.str();
    waypoint_ns = dst->namespace_.str();
  }

  OutboundPlan p;
  p.src = src;
  p.svc = svc;
  p.dst = dst;
  // A destination behind a waypoint goes to the waypoint, the :authority
  // still naming what the client asked for (the service VIP or the pod), so
  // the waypoint can route. A waypoint's own traffic never loops back.
  if (!waypoint.empty() && src->gateway.empty()) {
    auto pods = snap.waypoint_pods(waypoint_ns, waypoint);
    std::vector<const config::Workload*> ok;
    for (const auto* w : pods)
      if (w->protocol == config::Protocol::kHbone && ip_of_family(*w, v4)) ok.push_back(w);
    if (ok.empty())
      return reject("waypoint " + std::string(waypoint_ns) + "/" + std::string(waypoint) +
                        " has no pods",
                    4);
    const config::Workload* wp = ok[rr % ok.size()];
    p.kind = OutboundPlan::Kind::kHbone;
    p.dst = wp;
    p.waypoint = true;
    p.connect_to = SockAddr{*ip_of_family(*wp, v4), snap.listeners.hbone_port};
    if (svc) {
      const IpAddr* vip = nullptr;
      if (target.addr) vip = &target.addr->ip;
      else
        for (auto& ip : svc->vips)
          if (ip.is_v4() == v4 && !vip) vip = &ip;
      if (!vip) return reject("service " + svc->namespace_ + "/" + svc->name + " has no VIP", 4);
      p.authority = SockAddr{*vip, target.port};
    } else {
      p.authority = SockAddr{*ip_of_family(*dst, v4), port};
    }
    return p;
  }
  if (!dst) {
    // Not in the mesh at all: plain TCP to where the client asked.
    p.kind = OutboundPlan::Kind::kPassthrough;
    p.connect_to = *target.addr;
    return p;
  }
  const IpAddr* ip = ip_of_family(*dst, v4);
  if (!ip) return reject("workload " + dst->name + " has no address of the target's family", 4);
  if (dst->protocol == config::Protocol::kNone || src->protocol == config::Protocol::kNone) {
    p.kind = OutboundPlan::Kind::kPassthrough;
    p.connect_to = SockAddr{*ip, port};
    return p;
  }
  p.kind = OutboundPlan::Kind::kHbone;
  p.connect_to = SockAddr{*ip, snap.listeners.hbone_port};
  p.authority = SockAddr{*ip, port};
  return p;
}

}  // namespace warren::node
