// Record replacement with index upkeep: each set_* marks exactly the resources
// whose rendering may change, so flush() stays proportional to a change.
#include <algorithm>

#include "model_impl.h"
#include "warren/config.h"

namespace warren::controller {

namespace {

template <typename Map, typename Ptr>
void set_erase(Map& m, const std::string& k, Ptr p) {
  auto it = m.find(k);
  if (it == m.end()) return;
  it->second.erase(p);
  if (it->second.empty()) m.erase(it);
}

template <typename Map, typename Ptr>
void vec_erase(Map& m, const std::string& k, Ptr p) {
  auto it = m.find(k);
  if (it == m.end()) return;
  auto& v = it->second;
  if (auto f = std::find(v.begin(), v.end(), p); f != v.end()) v.erase(f);
  if (v.empty()) m.erase(it);
}

}  // namespace

void Model::Impl::index_pod(const PodInfo* p, bool add) {
  if (const std::string* gw = find_label(p->labels, kGatewayNameLabel); gw && !p->terminated()) {
    std::string key = p->ns + "/" + *gw;
    if (add) {
      gateway_identities[key][p->service_account]++;
    } else if (auto g = gateway_identities.find(key); g != gateway_identities.end()) {
      if (auto c = g->second.find(p->service_account); c != g->second.end() && --c->second == 0) g->second.erase(c);
      if (g->second.empty()) gateway_identities.erase(g);
    }
  }
  if (!p->terminated() && !p->node.empty()) {
    std::string id = p->ns + "/" + p->service_account;
    if (add) {
      node_identities[p->node][id]++;
    } else if (auto n = node_identities.find(p->node); n != node_identities.end()) {
      if (auto c = n->second.find(id); c != n->second.end() && --c->second == 0) n->second.erase(c);
      if (n->second.empty()) node_identities.erase(n);
    }
  }
  if (!p->is_workload()) return;
  for (const auto& [k, v] : p->labels) {
    std::string lk = label_key(p->ns, k, v);
    if (add) label_index[lk].insert(p);
    else set_erase(label_index, lk, p);
  }
  if (add) ns_workloads[p->ns].insert(p);
  else set_erase(ns_workloads, p->ns, p);
  for (const auto& ip : p->ips) {
    if (add) ip_claims[ip].push_back(p);
    else vec_erase(ip_claims, ip, p);
  }
}

void Model::Impl::mark_services_of(const PodInfo& p) {
  if (p.is_workload()) {
    for (const auto& [k, v] : p.labels) {
      auto it = selector_index.find(label_key(p.ns, k, v));
      if (it == selector_index.end()) continue;
      for (const ServiceInfo* s : it->second)
        if (selector_matches(s->selector, p.labels)) mark(service_id(s->ns, s->name));
    }
  }
  if (auto it = slice_refs.find(p.uid); it != slice_refs.end())
    for (const auto& svc : it->second) mark("service/" + svc);
}

void Model::Impl::mark_waypoint_block(const PodInfo& p) {
  if (const std::string* gw = find_label(p.labels, kGatewayNameLabel)) mark(waypoint_block_id(p.ns, *gw, p.name));
}

void Model::Impl::set_mesh_config(MeshConfig next) {
  if (next == mesh_config) return;
  mesh_config = std::move(next);
  for (const auto& [key, p] : pods) mark_waypoint_block(*p);
}

void Model::Impl::set_pod(const std::string& key, std::unique_ptr<PodInfo> next) {
  auto it = pods.find(key);
  PodInfo* old = it == pods.end() ? nullptr : it->second.get();
  if (!old && !next) return;
  if (old && next && *old == *next) return;
  // Service endpoints depend on a pod's uid, labels, being a workload, being
  // stopped and its named ports; not on its IPs, annotations or node.
  bool services_change = !old || !next || old->uid != next->uid || old->labels != next->labels ||
                         old->is_workload() != next->is_workload() || old->deleting != next->deleting ||
                         old->named_ports != next->named_ports;
  std::vector<std::string> ips;
  if (old) {
    mark(workload_id(old->uid));
    mark_waypoint_block(*old);
    if (services_change) mark_services_of(*old);
    if (old->is_workload()) ips = old->ips;
    index_pod(old, false);
    if (auto u = pod_by_uid.find(old->uid); u != pod_by_uid.end() && u->second == old) pod_by_uid.erase(u);
  }
  if (next) {
    const PodInfo* p = next.get();
    if (old) it->second = std::move(next);
    else pods.emplace(key, std::move(next));
    pod_by_uid[p->uid] = p;
    index_pod(p, true);
    mark(workload_id(p->uid));
    mark_waypoint_block(*p);
    if (services_change) mark_services_of(*p);
    if (p->is_workload()) ips.insert(ips.end(), p->ips.begin(), p->ips.end());
  } else {
    pods.erase(it);
  }
  // Whoever shares an IP with this pod may gain or lose it.
  for (const auto& ip : ips)
    if (auto c = ip_claims.find(ip); c != ip_claims.end())
      for (const PodInfo* other : c->second) mark(workload_id(other->uid));
}

void Model::Impl::index_service(const ServiceInfo* s, bool add) {
  if (!s->selector.empty()) {
    const auto& [k, v] = s->selector.front();
    std::string lk = label_key(s->ns, k, v);
    if (add) selector_index[lk].insert(s);
    else set_erase(selector_index, lk, s);
  }
  for (const auto& vip : s->vips) {
    if (add) vip_claims[vip].push_back(s);
    else vec_erase(vip_claims, vip, s);
  }
}

void Model::Impl::set_service(const std::string& key, std::unique_ptr<ServiceInfo> next) {
  auto it = services.find(key);
  ServiceInfo* old = it == services.end() ? nullptr : it->second.get();
  if (!old && !next) return;
  if (old && next && *old == *next) return;
  mark("service/" + key);
  std::vector<std::string> vips;
  if (old) {
    vips = old->vips;
    index_service(old, false);
  }
  if (next) {
    vips.insert(vips.end(), next->vips.begin(), next->vips.end());
    index_service(next.get(), true);
    if (old) it->second = std::move(next);
    else services.emplace(key, std::move(next));
  } else {
    services.erase(it);
  }
  for (const auto& vip : vips)
    if (auto c = vip_claims.find(vip); c != vip_claims.end())
      for (const ServiceInfo* other : c->second) mark(service_id(other->ns, other->name));
}

void Model::Impl::set_slice(const std::string& key, const EndpointSliceInfo* next) {
  auto it = slices.find(key);
  if (it == slices.end() && !next) return;
  if (it != slices.end() && next && it->second == *next) return;
  auto index = [&](const EndpointSliceInfo& e, bool add) {
    if (e.service.empty()) return;
    std::string svc = e.ns + "/" + e.service;
    mark("service/" + svc);
    if (add) slices_by_service[svc].insert(key);
    else set_erase(slices_by_service, svc, key);
    for (const auto& uid : e.ready_uids) {
      if (add) slice_refs[uid].push_back(svc);
      else vec_erase(slice_refs, uid, svc);
    }
  };
  if (it != slices.end()) {
    index(it->second, false);
    slices.erase(it);
  }
  if (next) index(slices.emplace(key, *next).first->second, true);
}

void Model::Impl::set_gateway(const std::string& ns, const std::string& name, const std::string* sa) {
  auto& in_ns = sa_waypoints[ns];
  auto it = in_ns.find(name);
  bool had = it != in_ns.end();
  if (!sa && !had) return;
  if (sa && had && it->second == *sa) return;
  if (sa) in_ns[name] = *sa;
  else in_ns.erase(it);
  if (in_ns.empty()) sa_waypoints.erase(ns);
  if (auto ws = ns_workloads.find(ns); ws != ns_workloads.end())
    for (const PodInfo* p : ws->second) mark(workload_id(p->uid));
}

void Model::Impl::set_namespace(const std::string& name, const NamespaceInfo* next) {
  auto it = namespaces.find(name);
  const NamespaceInfo* old = it == namespaces.end() ? nullptr : &it->second;
  if (!old && !next) return;
  if (old && next && *old == *next) return;
  mark(namespace_id(name));
  // Workloads render the namespace's waypoint and enrollment labels.
  bool changed = false;
  for (const char* label : {kUseWaypointLabel, config::kDataplaneModeLabel}) {
    const std::string* was = old ? find_label(old->labels, label) : nullptr;
    const std::string* now = next ? find_label(next->labels, label) : nullptr;
    if ((was == nullptr) != (now == nullptr) || (was && *was != *now)) changed = true;
  }
  if (changed)
    if (auto ws = ns_workloads.find(name); ws != ns_workloads.end())
      for (const PodInfo* p : ws->second) mark(workload_id(p->uid));
  // Services render the namespace's waypoint label too.
  const std::string* was = old ? find_label(old->labels, kUseWaypointLabel) : nullptr;
  const std::string* now = next ? find_label(next->labels, kUseWaypointLabel) : nullptr;
  if ((was == nullptr) != (now == nullptr) || (was && *was != *now))
    for (const auto& [key, svc] : services)
      if (svc->ns == name) mark(service_id(svc->ns, svc->name));
  if (next) namespaces.insert_or_assign(name, *next);
  else namespaces.erase(it);
}

}  // namespace warren::controller
