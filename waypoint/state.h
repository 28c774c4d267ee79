// What one waypoint knows, immutable once built: the mesh (workloads and
// services, in warren-node's config shape), which waypoint it is, and the
// compiled routing and policy objects. A reload builds a new State; requests
// in flight keep the one they started with (shared_ptr).
//
// The file (JSON or YAML) is a warren-node config plus:
//   "waypoint": {"name": <Gateway name>, "namespace": ..., "serviceAccount": ...,
//                "address": <pod IP>, "pathNormalization": "MERGE_SLASHES"}
//   "virtualServices", "destinationRules", "httpRoutes",
//   "requestAuthentications": arrays of the Kubernetes objects as written
//   (apiVersion, kind, metadata, spec);
//   "extensionProviders": meshConfig.extensionProviders (envoyExtAuthzHttp),
//   for AuthorizationPolicy CUSTOM.
// "node" may be left out (it defaults to the waypoint's name and address);
// AuthorizationPolicies stay in "policies", where the ones bound to this
// waypoint with targetRef(s) are evaluated at L7.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "authz.h"
#include "destination_rule.h"
#include "ext_authz.h"
#include "request_authn.h"
#include "path.h"
#include "route_table.h"
#include "warren/config.h"

namespace warren::waypoint {

struct WaypointSelf {
  std::string name;        // the Gateway
  std::string namespace_;  // its namespace
  std::string service_account = "default";
  IpAddr address;
  std::string identity;  // spiffe://<td>/ns/<ns>/sa/<sa>
};

// What a CONNECT :authority names: a service this waypoint fronts (by VIP),
// or a pod behind it (by IP).
struct Target {
  const config::Service* svc = nullptr;
  const config::Workload* pod = nullptr;
  uint16_t port = 0;
  std::string host;  // the service's hostname (FQDN); empty for a pod
};

struct State {
  config::SnapshotPtr mesh;
  WaypointSelf self;
  PathOptions path;
  // A request head must arrive whole within this (0: no limit); 408 otherwise.
  std::chrono::milliseconds request_headers_timeout{10000};
  // "tracing": {"zipkin": "IP:port", "samplingPercent": 1}: spans of sampled
  // requests go to a Zipkin v2 collector (empty: none).
  std::string zipkin;
  double sampling_percent = 1.0;
  RouteTable routes;
  DestinationRules rules;
  std::vector<nlohmann::json> policies;  // AuthorizationPolicy objects as written
  L7Authz authz;                         // the ones bound to this waypoint
  RequestAuthn authn;                    // RequestAuthentication (JWT)
  std::map<std::string, ExtAuthzProvider> providers;  // meshConfig.extensionProviders by name
  std::vector<std::string> warnings;     // objects left out, and why
  nlohmann::json source;                 // the routing objects as given (/config_dump)

  // Nullopt (and why) when this waypoint does not front `authority`.
  std::optional<Target> target(const SockAddr& authority, std::string* why) const;
  bool fronts(const config::Workload& w) const;
  bool fronts(const config::Service& s) const;
};
using StatePtr = std::shared_ptr<const State>;

// Errors list "<json pointer>: <reason>" lines; invalid routing objects are
// left out with a warning instead (one bad VirtualService must not take the
// others down), as the controller does.
Result<StatePtr> parse_state(const nlohmann::json& doc);
Result<StatePtr> load_state(const std::string& path);
// Controller mode: the same document without the node config part ("waypoint",
// the routing arrays and "policies" as written) over a mesh the caller built.
Result<StatePtr> build_state(const nlohmann::json& doc, config::SnapshotPtr mesh);
// Why one routing object (VirtualService, DestinationRule, HTTPRoute,
// RequestAuthentication) would be left out, compiled alone; "" when it
// compiles. `current` (may be null) scopes RequestAuthentications.
std::string check_routing_object(const nlohmann::json& obj, const State* current);

}  // namespace warren::waypoint
