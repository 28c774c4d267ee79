// Translation of Kubernetes objects into warren-node's resources (DESIGN.md §6,
// common/include/warren/config.h), in two steps:
//  1. extraction: a validated object → a compact record holding only what
//     translation needs (the model keeps these, never a Pod's full JSON);
//  2. rendering: records → the resource JSON nodes receive.
// Both are pure; the model (model*.cpp) decides what to render and when.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace warren::controller {

// Labels and annotations, sorted by key.
using Labels = std::vector<std::pair<std::string, std::string>>;

inline constexpr const char* kUseWaypointLabel = "warren.io/use-waypoint";

enum class PodPhase : uint8_t { kPending, kRunning, kSucceeded, kFailed, kUnknown };

struct PodInfo {
  std::string uid, name, ns;
  std::string service_account;  // "default" when the pod names none
  std::string node;             // spec.nodeName; empty before scheduling
  Labels labels;
  Labels annotations;  // warren.io/* only
  std::vector<std::string> ips;  // status.podIPs, else status.podIP
  // Named container ports (for Services whose targetPort is a name).
  std::vector<std::pair<std::string, uint16_t>> named_ports;
  PodPhase phase = PodPhase::kPending;
  bool host_network = false;
  bool deleting = false;  // metadata.deletionTimestamp set: still running, being stopped

  bool terminated() const { return phase == PodPhase::kSucceeded || phase == PodPhase::kFailed; }
  // What becomes a workload resource: Running with an IP.
  bool is_workload() const { return phase == PodPhase::kRunning && !ips.empty(); }
  bool operator==(const PodInfo&) const = default;
};

struct ServicePortInfo {
  uint16_t port = 0;
  uint16_t target_port = 0;  // 0: a named port (target_name) or none (same as port)
  std::string target_name;
  std::string name;
  std::string app_protocol;  // spec.ports[].appProtocol ("" when unset)
  bool operator==(const ServicePortInfo&) const = default;
};

struct ServiceInfo {
  std::string name, ns;
  std::vector<std::string> vips;  // spec.clusterIPs (or clusterIP), without "None"
  std::vector<ServicePortInfo> ports;  // TCP ports only: nodes proxy TCP
  Labels selector;  // empty: no selector (endpoints from EndpointSlices only)
  std::optional<std::string> use_waypoint;  // its warren.io/use-waypoint label
  bool operator==(const ServiceInfo&) const = default;
};

struct EndpointSliceInfo {
  std::string ns, name;
  std::string service;  // label kubernetes.io/service-name; empty: belongs to no service
  std::vector<std::string> ready_uids;  // endpoints[].targetRef.uid (kind Pod, ready not false), sorted
  bool operator==(const EndpointSliceInfo&) const = default;
};

struct NamespaceInfo {
  std::string name;
  Labels labels;
  bool operator==(const NamespaceInfo&) const = default;
};

// ---- extraction (the object has passed validate_object) ----

// A pod without status.phase is taken as Pending (the Kubernetes default);
// the local source fills in Running for pods that give none (local_source.h).
PodInfo pod_info(const nlohmann::json& obj);
ServiceInfo service_info(const nlohmann::json& obj);
EndpointSliceInfo endpoint_slice_info(const nlohmann::json& obj);
NamespaceInfo namespace_info(const nlohmann::json& obj);

// ---- rendering ----

// The value of a label, or nullptr.
const std::string* find_label(const Labels& labels, std::string_view key);
// Every selector label is present with the same value (an empty selector matches nothing).
bool selector_matches(const Labels& selector, const Labels& labels);
// Per-service-account waypoints: namespace -> Gateway name -> the service
// account it serves (annotation warren.io/for-service-account).
using SaWaypoints = std::map<std::string, std::map<std::string, std::string>>;
inline constexpr const char* kForServiceAccountAnnotation = "warren.io/for-service-account";
inline constexpr const char* kWaypointGatewayClass = "warren-waypoint";

// The pod's waypoint: its warren.io/use-waypoint label ("none" opts out);
// else a waypoint of its namespace for its service account; else its
// namespace's label, unless that names a waypoint for another service
// account. May be empty.
std::string waypoint_of(const PodInfo& pod, const Labels* namespace_labels, const SaWaypoints* sa = nullptr);
// The same for a Service: its own label, else its namespace's.
std::string service_waypoint(const ServiceInfo& svc, const Labels* namespace_labels);

// Istio's label on a waypoint's own pods, naming the Gateway they implement.
inline constexpr const char* kGatewayNameLabel = "gateway.networking.k8s.io/gateway-name";

// The pod is in the mesh (ambient): its warren.io/dataplane-mode label is
// "enabled", or it has none and its namespace's is "enabled"; a pod label
// "none" opts out. hostNetwork pods never are.
bool in_mesh(const PodInfo& pod, const Labels* namespace_labels);

// workload/<uid>: {uid, name, namespace, serviceAccount, node, ips, protocol
// (HBONE when in the mesh, else NONE: peers reach it with plain TCP, as
// Istio ambient does), labels, annotations, waypoint, gateway}. `ips` are the
// pod's IPs it holds alone (the model resolves shared IPs). A waypoint's own
// pod (label gateway.networking.k8s.io/gateway-name) gets "gateway" and speaks
// HBONE itself, enrolled or not.
nlohmann::json workload_resource(const PodInfo& pod, const std::vector<std::string>& ips,
                                 const std::string& waypoint, bool in_mesh);
// service/<ns>/<name>: {name, namespace, hostname, vips, ports, endpoints,
// waypoint (when one fronts it)}.
// `target_ports[i]` is ports[i]'s numeric target port (0: leave out, the node
// uses the port); the model resolves named ones from the endpoints' pods.
nlohmann::json service_resource(const ServiceInfo& svc, const std::vector<std::string>& vips,
                                const std::vector<uint16_t>& target_ports,
                                const std::vector<std::string>& endpoint_uids, const std::string& cluster_domain,
                                const std::string& waypoint = "");
// namespace/<name>: {name, labels}.
nlohmann::json namespace_resource(const NamespaceInfo& ns);

// ---- what waypoints receive (push_proto.h says who gets what) ----

// The routing kinds waypoints read, held as written (trimmed, model.cpp)
// under "<lowercase kind>/<ns>/<name>"; "" for other kinds.
std::string routing_id(const std::string& kind, const std::string& ns, const std::string& name);
// The Kubernetes kind of a routing id's first segment ("virtualservice" ->
// "VirtualService"); nullptr for others.
const char* routing_kind(std::string_view type);
// waypoint/<ns>/<gateway>/<pod>: the block of a waypoint's own pod (label
// gateway.networking.k8s.io/gateway-name): {name: <gateway>, namespace,
// serviceAccount (the pod's: the waypoint's own identity), address (its first
// IP), extensionProviders (when meshConfig has any)}.
inline std::string waypoint_block_id(const std::string& ns, const std::string& gateway, const std::string& pod) {
  return "waypoint/" + ns + "/" + gateway + "/" + pod;
}
// With `extension_providers` non-empty (meshConfig.extensionProviders,
// mesh_config.h), the block carries them as "extensionProviders".
nlohmann::json waypoint_block(const PodInfo& pod, const std::string& gateway, const std::string& address,
                              const nlohmann::json& extension_providers = nlohmann::json::array());

// A Gateway of class warren-waypoint, as placement needs it (local
// launcher, Kubernetes Deployment).
struct WaypointGateway {
  std::string ns, name;
  // The service account its pods run as: Istio's annotation
  // gateway.istio.io/service-account, else the Gateway's name (what Istio
  // ambient gives a waypoint's Deployment).
  std::string service_account;
  std::string for_service_account;  // warren.io/for-service-account: the workloads it serves
  std::string uid;                  // metadata.uid (owner of what is created for it)
  bool operator==(const WaypointGateway&) const = default;
};
inline constexpr const char* kGatewayServiceAccountAnnotation = "gateway.istio.io/service-account";
// Nullopt when `obj` is not a Gateway of class warren-waypoint.
std::optional<WaypointGateway> waypoint_gateway(const nlohmann::json& obj);

// Resource ids (model.h).
inline std::string workload_id(const std::string& uid) { return "workload/" + uid; }
inline std::string service_id(const std::string& ns, const std::string& name) { return "service/" + ns + "/" + name; }
inline std::string namespace_id(const std::string& name) { return "namespace/" + name; }
inline std::string policy_id(const std::string& ns, const std::string& name) { return "policy/" + ns + "/" + name; }
inline std::string peerauth_id(const std::string& ns, const std::string& name) {
  return "peerauth/" + ns + "/" + name;
}

}  // namespace warren::controller
