#include "translate.h"

#include "warren/config.h"

#include <algorithm>

namespace warren::controller {

using nlohmann::json;

namespace {

const json* get(const json& obj, std::string_view key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

std::string str(const json& obj, std::string_view key) {
  const json* v = get(obj, key);
  return v && v->is_string() ? v->get<std::string>() : std::string();
}

// A string map; `keep` filters keys.
template <typename Keep>
Labels labels_of(const json* m, Keep keep) {
  Labels out;
  if (!m || !m->is_object()) return out;
  for (auto it = m->begin(); it != m->end(); ++it)  // nlohmann objects iterate sorted
    if (it->is_string() && keep(it.key())) out.emplace_back(it.key(), it->get<std::string>());
  return out;
}

Labels labels_of(const json* m) {
  return labels_of(m, [](const std::string&) { return true; });
}

json labels_json(const Labels& l) {
  json o = json::object();
  for (const auto& [k, v] : l) o[k] = v;
  return o;
}

uint16_t port_number(const json* v) {
  if (!v || !v->is_number_integer()) return 0;
  int64_t n = v->get<int64_t>();
  return n >= 1 && n <= 65535 ? static_cast<uint16_t>(n) : 0;
}

}  // namespace

PodInfo pod_info(const json& obj) {
  PodInfo p;
  static const json empty = json::object();
  const json& md = obj.contains("metadata") ? obj.at("metadata") : empty;
  const json* spec = get(obj, "spec");
  const json* status = get(obj, "status");
  p.uid = str(md, "uid");
  p.name = str(md, "name");
  p.ns = str(md, "namespace");
  p.labels = labels_of(get(md, "labels"));
  p.annotations = labels_of(get(md, "annotations"), [](const std::string& k) { return k.rfind("warren.io/", 0) == 0; });
  p.deleting = get(md, "deletionTimestamp") != nullptr;
  if (spec) {
    p.service_account = str(*spec, "serviceAccountName");
    if (p.service_account.empty()) p.service_account = str(*spec, "serviceAccount");
    p.node = str(*spec, "nodeName");
    const json* hn = get(*spec, "hostNetwork");
    p.host_network = hn && hn->is_boolean() && hn->get<bool>();
    if (const json* cs = get(*spec, "containers"); cs && cs->is_array())
      for (const auto& c : *cs)
        if (const json* ports = get(c, "ports"); ports && ports->is_array())
          for (const auto& port : *ports) {
            std::string name = str(port, "name");
            uint16_t n = port_number(get(port, "containerPort"));
            if (!name.empty() && n) p.named_ports.emplace_back(std::move(name), n);
          }
  }
  if (p.service_account.empty()) p.service_account = "default";
  if (status) {
    std::string phase = str(*status, "phase");
    p.phase = phase == "Running"     ? PodPhase::kRunning
              : phase == "Succeeded" ? PodPhase::kSucceeded
              : phase == "Failed"    ? PodPhase::kFailed
              : phase == "Unknown"   ? PodPhase::kUnknown
                                     : PodPhase::kPending;
    if (const json* ips = get(*status, "podIPs"); ips && ips->is_array())
      for (const auto& e : *ips)
        if (std::string ip = str(e, "ip"); !ip.empty() &&
                                           std::find(p.ips.begin(), p.ips.end(), ip) == p.ips.end())
          p.ips.push_back(std::move(ip));
    if (std::string ip = str(*status, "podIP"); p.ips.empty() && !ip.empty()) p.ips.push_back(std::move(ip));
  }
  return p;
}

ServiceInfo service_info(const json& obj) {
  ServiceInfo s;
  const json& md = obj.at("metadata");
  s.name = str(md, "name");
  s.ns = str(md, "namespace");
  const json* spec = get(obj, "spec");
  if (!spec) return s;
  auto add_vip = [&](const std::string& ip) {
    if (!ip.empty() && ip != "None" && std::find(s.vips.begin(), s.vips.end(), ip) == s.vips.end())
      s.vips.push_back(ip);
  };
  if (const json* ips = get(*spec, "clusterIPs"); ips && ips->is_array() && !ips->empty()) {
    for (const auto& ip : *ips)
      if (ip.is_string()) add_vip(ip.get<std::string>());
  } else {
    add_vip(str(*spec, "clusterIP"));
  }
  if (const json* ports = get(*spec, "ports"); ports && ports->is_array())
    for (const auto& p : *ports) {
      std::string proto = str(p, "protocol");
      if (!proto.empty() && proto != "TCP") continue;
      ServicePortInfo sp;
      sp.port = port_number(get(p, "port"));
      if (const json* tp = get(p, "targetPort")) {
        if (tp->is_string()) sp.target_name = tp->get<std::string>();
        else sp.target_port = port_number(tp);
      }
      sp.name = str(p, "name");
      sp.app_protocol = str(p, "appProtocol");
      s.ports.push_back(std::move(sp));
    }
  s.selector = labels_of(get(*spec, "selector"));
  if (const json* l = get(md, "labels"))
    if (const json* w = get(*l, kUseWaypointLabel); w && w->is_string()) s.use_waypoint = w->get<std::string>();
  return s;
}

EndpointSliceInfo endpoint_slice_info(const json& obj) {
  EndpointSliceInfo e;
  const json& md = obj.at("metadata");
  e.name = str(md, "name");
  e.ns = str(md, "namespace");
  if (const json* l = get(md, "labels")) e.service = str(*l, "kubernetes.io/service-name");
  if (const json* eps = get(obj, "endpoints"); eps && eps->is_array())
    for (const auto& ep : *eps) {
      const json* cond = get(ep, "conditions");
      const json* ready = cond ? get(*cond, "ready") : nullptr;
      if (ready && ready->is_boolean() && !ready->get<bool>()) continue;
      const json* ref = get(ep, "targetRef");
      if (!ref || str(*ref, "kind") != "Pod") continue;
      if (std::string uid = str(*ref, "uid"); !uid.empty()) e.ready_uids.push_back(std::move(uid));
    }
  std::sort(e.ready_uids.begin(), e.ready_uids.end());
  e.ready_uids.erase(std::unique(e.ready_uids.begin(), e.ready_uids.end()), e.ready_uids.end());
  return e;
}

NamespaceInfo namespace_info(const json& obj) {
  const json& md = obj.at("metadata");
  return NamespaceInfo{str(md, "name"), labels_of(get(md, "labels"))};
}

const std::string* find_label(const Labels& labels, std::string_view key) {
  auto it = std::lower_bound(labels.begin(), labels.end(), key,
                             [](const auto& kv, std::string_view k) { return kv.first < k; });
  return it != labels.end() && it->first == key ? &it->second : nullptr;
}

bool selector_matches(const Labels& selector, const Labels& labels) {
  if (selector.empty()) return false;
  for (const auto& [k, v] : selector) {
    const std::string* have = find_label(labels, k);
    if (!have || *have != v) return false;
  }
  return true;
}

std::string waypoint_of(const PodInfo& pod, const Labels* namespace_labels, const SaWaypoints* sa) {
  if (const std::string* w = find_label(pod.labels, kUseWaypointLabel)) return *w == "none" ? "" : *w;
  const std::map<std::string, std::string>* scoped = nullptr;
  if (sa)
    if (auto it = sa->find(pod.ns); it != sa->end()) scoped = &it->second;
  if (scoped)
    for (const auto& [gw, account] : *scoped)
      if (account == pod.service_account) return gw;
  if (namespace_labels)
    if (const std::string* w = find_label(*namespace_labels, kUseWaypointLabel)) {
      if (*w == "none") return "";
      if (scoped)
        if (auto g = scoped->find(*w); g != scoped->end() && g->second != pod.service_account) return "";
      return *w;
    }
  return "";
}

std::string service_waypoint(const ServiceInfo& svc, const Labels* namespace_labels) {
  if (svc.use_waypoint) return *svc.use_waypoint == "none" ? "" : *svc.use_waypoint;
  if (namespace_labels)
    if (const std::string* w = find_label(*namespace_labels, kUseWaypointLabel)) return *w == "none" ? "" : *w;
  return "";
}

bool in_mesh(const PodInfo& pod, const Labels* namespace_labels) {
  if (pod.host_network) return false;
  if (const std::string* m = find_label(pod.labels, config::kDataplaneModeLabel)) {
    if (*m == "none") return false;
    if (*m == "enabled") return true;
  }
  if (!namespace_labels) return false;
  const std::string* m = find_label(*namespace_labels, config::kDataplaneModeLabel);
  return m && *m == "enabled";
}

json workload_resource(const PodInfo& pod, const std::vector<std::string>& ips, const std::string& waypoint,
                       bool in_mesh) {
  json w = json::object();
  w["uid"] = pod.uid;
  w["name"] = pod.name;
  w["namespace"] = pod.ns;
  w["serviceAccount"] = pod.service_account;
  w["node"] = pod.node;
  w["ips"] = ips;
  w["protocol"] = in_mesh ? "HBONE" : "NONE";
  w["labels"] = labels_json(pod.labels);
  w["annotations"] = labels_json(pod.annotations);
  w["waypoint"] = waypoint;
  if (const std::string* g = find_label(pod.labels, kGatewayNameLabel); g && !pod.host_network) {
    w["gateway"] = *g;
    w["protocol"] = "HBONE";
    w["waypoint"] = "";  // a waypoint does not send its own traffic through a waypoint
  }
  return w;
}

json service_resource(const ServiceInfo& svc, const std::vector<std::string>& vips,
                      const std::vector<uint16_t>& target_ports, const std::vector<std::string>& endpoint_uids,
                      const std::string& cluster_domain, const std::string& waypoint) {
  json ports = json::array();
  for (size_t i = 0; i < svc.ports.size(); i++) {
    json p = {{"port", svc.ports[i].port}};
    if (i < target_ports.size() && target_ports[i]) p["targetPort"] = target_ports[i];
    if (!svc.ports[i].name.empty()) p["name"] = svc.ports[i].name;
    if (!svc.ports[i].app_protocol.empty()) p["appProtocol"] = svc.ports[i].app_protocol;
    ports.push_back(std::move(p));
  }
  json s = json::object();
  s["name"] = svc.name;
  s["namespace"] = svc.ns;
  s["hostname"] = svc.name + "." + svc.ns + ".svc." + cluster_domain;
  s["vips"] = vips;
  s["ports"] = std::move(ports);
  s["endpoints"] = endpoint_uids;
  if (!waypoint.empty()) s["waypoint"] = waypoint;
  return s;
}

json namespace_resource(const NamespaceInfo& ns) { return {{"name", ns.name}, {"labels", labels_json(ns.labels)}}; }

namespace {
constexpr std::pair<std::string_view, const char*> kRoutingKinds[] = {
    {"virtualservice", "VirtualService"},
    {"destinationrule", "DestinationRule"},
    {"httproute", "HTTPRoute"},
    {"requestauthentication", "RequestAuthentication"},
};
}  // namespace

std::string routing_id(const std::string& kind, const std::string& ns, const std::string& name) {
  for (const auto& [type, k] : kRoutingKinds)
    if (kind == k) return std::string(type) + "/" + ns + "/" + name;
  return "";
}

const char* routing_kind(std::string_view type) {
  for (const auto& [t, k] : kRoutingKinds)
    if (type == t) return k;
  return nullptr;
}

std::optional<WaypointGateway> waypoint_gateway(const json& obj) {
  const json* spec = get(obj, "spec");
  if (str(obj, "kind") != "Gateway" || !spec || str(*spec, "gatewayClassName") != kWaypointGatewayClass)
    return std::nullopt;
  static const json empty = json::object();
  const json* md = get(obj, "metadata");
  if (!md) md = &empty;
  WaypointGateway g;
  g.ns = str(*md, "namespace");
  g.name = str(*md, "name");
  g.uid = str(*md, "uid");
  const json* ann = get(*md, "annotations");
  if (ann) {
    g.service_account = str(*ann, kGatewayServiceAccountAnnotation);
    g.for_service_account = str(*ann, kForServiceAccountAnnotation);
  }
  if (g.service_account.empty()) g.service_account = g.name;
  return g;
}

json waypoint_block(const PodInfo& pod, const std::string& gateway, const std::string& address,
                    const json& extension_providers) {
  json b = {{"name", gateway}, {"namespace", pod.ns}, {"serviceAccount", pod.service_account}, {"address", address}};
  if (extension_providers.is_array() && !extension_providers.empty()) b["extensionProviders"] = extension_providers;
  return b;
}

}  // namespace warren::controller
