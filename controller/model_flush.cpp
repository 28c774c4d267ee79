// flush(): re-render the dirty resources, keep the ones whose body changed.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <tuple>

#include "model_impl.h"

namespace warren::controller {

using nlohmann::json;

void Model::Impl::compact_dirty() {
  std::sort(dirty.begin(), dirty.end());
  dirty.erase(std::unique(dirty.begin(), dirty.end()), dirty.end());
  dirty_compacted = dirty.size();
}

Delta Model::Impl::flush() {
  Delta d;
  d.version = version;
  if (dirty.empty()) return d;
  compact_dirty();
  std::vector<std::string> ids;
  ids.swap(dirty);
  dirty_compacted = 0;
  for (auto& id : ids) {
    ResourcePtr body = render(id);
    auto it = resources.lower_bound(id);
    bool present = it != resources.end() && it->first == id;
    if (!body) {
      if (present) {
        resources.erase(it);
        d.removes.push_back(std::move(id));
      }
      continue;
    }
    if (present && *it->second == *body) continue;
    if (present) it->second = body;
    else resources.emplace_hint(it, id, body);
    d.upserts.emplace_back(std::move(id), std::move(body));
  }
  if (!d.empty()) d.version = ++version;
  return d;
}

namespace {

// Which of the pods claiming one IP keeps it (model.h).
bool keeps_ip_before(const PodInfo* a, const PodInfo* b) {
  return std::tie(a->host_network, a->deleting, a->uid) < std::tie(b->host_network, b->deleting, b->uid);
}

bool keeps_vip_before(const ServiceInfo* a, const ServiceInfo* b) {
  return std::tie(a->ns, a->name) < std::tie(b->ns, b->name);
}

}  // namespace

std::vector<std::string> Model::Impl::service_endpoints(const std::string& key, const ServiceInfo& svc) {
  std::vector<std::string> out;
  if (auto sl = slices_by_service.find(key); sl != slices_by_service.end() && !sl->second.empty()) {
    for (const auto& slice_key : sl->second) {
      auto s = slices.find(slice_key);
      if (s == slices.end()) continue;
      for (const auto& uid : s->second.ready_uids)
        if (auto p = pod_by_uid.find(uid); p != pod_by_uid.end() && p->second->is_workload()) out.push_back(uid);
    }
  } else if (!svc.selector.empty()) {
    // The smallest set of workloads carrying one of the selector's labels.
    const std::unordered_set<const PodInfo*>* fewest = nullptr;
    for (const auto& [k, v] : svc.selector) {
      auto it = label_index.find(label_key(svc.ns, k, v));
      if (it == label_index.end()) return out;
      if (!fewest || it->second.size() < fewest->size()) fewest = &it->second;
    }
    for (const PodInfo* p : *fewest)
      if (!p->deleting && selector_matches(svc.selector, p->labels)) out.push_back(p->uid);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

ResourcePtr Model::Impl::render(const std::string& id) {
  auto slash = id.find('/');
  std::string_view type = std::string_view(id).substr(0, slash);
  std::string rest = id.substr(slash + 1);
  if (type == "workload") {
    auto it = pod_by_uid.find(rest);
    if (it == pod_by_uid.end() || !it->second->is_workload()) return nullptr;
    const PodInfo& p = *it->second;
    std::vector<std::string> ips;
    for (const auto& ip : p.ips) {
      auto c = ip_claims.find(ip);
      const PodInfo* owner =
          c == ip_claims.end() ? &p : *std::min_element(c->second.begin(), c->second.end(), keeps_ip_before);
      if (owner == &p) {
        ips.push_back(ip);
        continue;
      }
      auto level = p.host_network ? spdlog::level::debug : spdlog::level::warn;
      spdlog::log(level, "model: Pod {}/{} shares IP {} with Pod {}/{}, which keeps it; {} is sent without it", p.ns,
                  p.name, ip, owner->ns, owner->name, p.name);
    }
    auto ns = namespaces.find(p.ns);
    const Labels* ns_labels = ns == namespaces.end() ? nullptr : &ns->second.labels;
    return std::make_shared<const json>(workload_resource(p, ips, waypoint_of(p, ns_labels, &sa_waypoints), in_mesh(p, ns_labels)));
  }
  if (type == "service") {
    auto it = services.find(rest);
    if (it == services.end()) return nullptr;
    const ServiceInfo& s = *it->second;
    std::vector<std::string> vips;
    for (const auto& vip : s.vips) {
      auto c = vip_claims.find(vip);
      const ServiceInfo* owner =
          c == vip_claims.end() ? &s : *std::min_element(c->second.begin(), c->second.end(), keeps_vip_before);
      if (owner == &s) vips.push_back(vip);
      else
        spdlog::warn("model: Service {}/{} has the VIP {} of Service {}/{}; it is sent without it", s.ns, s.name, vip,
                     owner->ns, owner->name);
    }
    std::vector<std::string> endpoints = service_endpoints(rest, s);
    std::vector<uint16_t> targets;
    for (const auto& port : s.ports) {
      uint16_t t = port.target_port;
      // A named targetPort: the number the endpoints' pods give that name
      // (the first endpoint by uid that has it; nodes take one per service port).
      for (size_t i = 0; !t && !port.target_name.empty() && i < endpoints.size(); i++) {
        for (const auto& [name, number] : pod_by_uid.at(endpoints[i])->named_ports)
          if (name == port.target_name) t = number;
      }
      targets.push_back(t);
    }
    auto ns = namespaces.find(s.ns);
    const Labels* ns_labels = ns == namespaces.end() ? nullptr : &ns->second.labels;
    return std::make_shared<const json>(
        service_resource(s, vips, targets, endpoints, opts.cluster_domain, service_waypoint(s, ns_labels)));
  }
  if (type == "namespace") {
    auto it = namespaces.find(rest);
    return it == namespaces.end() ? nullptr : std::make_shared<const json>(namespace_resource(it->second));
  }
  if (const char* kind = routing_kind(type)) {
    auto sl = rest.find('/');
    if (sl == std::string::npos) return nullptr;
    auto it = held.find(ObjectKey{kind, rest.substr(0, sl), rest.substr(sl + 1)});
    if (it == held.end()) return nullptr;
    if (std::string_view(kind) == "RequestAuthentication" && opts.request_authentication_transform)
      return std::make_shared<const json>(opts.request_authentication_transform(it->second));
    return std::make_shared<const json>(it->second);
  }
  if (type == "waypoint") {
    // <ns>/<gateway>/<pod>
    auto a = rest.find('/'), b = rest.rfind('/');
    if (a == std::string::npos || a == b) return nullptr;
    auto it = pods.find(rest.substr(0, a) + "/" + rest.substr(b + 1));
    if (it == pods.end() || !it->second->is_workload()) return nullptr;
    const PodInfo& p = *it->second;
    const std::string* gw = find_label(p.labels, kGatewayNameLabel);
    if (!gw || *gw != rest.substr(a + 1, b - a - 1)) return nullptr;
    return std::make_shared<const json>(waypoint_block(p, *gw, p.ips.front(), mesh_config.extension_providers));
  }
  if (type == "policy" || type == "peerauth") {
    auto it = node_objects.find(id);
    return it == node_objects.end() ? nullptr : it->second;
  }
  return nullptr;
}

}  // namespace warren::controller
