// The cluster model: every object the sources feed in, validated, and its
// translation into the resources warren-node reads (DESIGN.md §6). Owned by
// the controller's loop thread.
//
// Resources are node-independent JSON fragments in the shape of warren-node's
// config (common/include/warren/config.h), each under a stable id:
//   workload/<uid>            one element of "workloads"
//   service/<ns>/<name>       one element of "services"
//   policy/<ns>/<name>        one element of "policies" (the Istio object)
//   peerauth/<ns>/<name>      one element of "peerAuthentications"
//   namespace/<name>          one element of "namespaces" ({name, labels})
// and, for waypoints only (warren/push_proto.h says who receives what):
//   virtualservice/<ns>/<name>, destinationrule/<ns>/<name>,
//   httproute/<ns>/<name>, requestauthentication/<ns>/<name>
//                             the object as written (trimmed like held())
//   waypoint/<ns>/<gateway>/<pod>
//                             a waypoint pod's own block: {name, namespace,
//                             serviceAccount, address} (translate.h)
// A node's config is its own bootstrap (name, address, listeners, capture)
// plus every resource, each array in id order.
//
// What translates into what (translate.h has the field-level detail):
//   Pod (Running, with an IP)   → workload (hostNetwork pods: protocol NONE);
//                                 Pending/Unknown pods or pods without an IP
//                                 are held but not sent; Succeeded/Failed pods
//                                 are dropped from the model.
//   Service                     → service; endpoints from the EndpointSlices
//                                 labelled with the service's name when any
//                                 exist, else from spec.selector over the
//                                 namespace's workloads. Only endpoints that
//                                 are workloads are listed (the node rejects
//                                 unknown uids).
//   Namespace                   → namespace; AuthorizationPolicy,
//                                 PeerAuthentication → policy, peerauth.
//   RequestAuthentication, VirtualService, DestinationRule, HTTPRoute
//                               → the routing resources waypoints receive
//   Pod labelled gateway.networking.k8s.io/gateway-name (Running, with an
//   IP)                         → also its waypoint block
//   ConfigMap istio of the root namespace (meshConfig, mesh_config.h)
//                               → extensionProviders in every waypoint
//                                 block; other ConfigMaps are ignored
//   Gateway (class warren-waypoint): decides which workloads use it (its
//   for-service-account annotation); ServiceAccount, Node: validated and
//   held. Istio's own Gateway
//   (networking.istio.io) is ignored like a kind the model does not know.
//
// Consistency the node requires of a whole config, kept across objects:
//   - an IP belongs to one workload: when pods share one (hostNetwork pods on
//     a node, a terminating pod's IP reused), the IP goes to a pod that is not
//     hostNetwork, then not terminating, then to the lowest uid; the others
//     are sent without it (logged).
//   - a VIP belongs to one service: the lowest <ns>/<name> keeps it.
//
// Validation (validate.h): an invalid object rejects only itself; the last
// good version of that object stays in force (an invalid first version means
// the object is absent).
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "mesh_config.h"
#include "source.h"
#include "translate.h"

namespace warren::controller {

using ResourcePtr = std::shared_ptr<const nlohmann::json>;

// One translated change: what to upsert and what to remove, at `version`.
// Upserts and removes are each in id order.
struct Delta {
  uint64_t version = 0;
  std::vector<std::pair<std::string, ResourcePtr>> upserts;  // id, body
  std::vector<std::string> removes;                          // ids
  bool empty() const { return upserts.empty() && removes.empty(); }
};

struct ModelOptions {
  std::string trust_domain = "cluster.local";
  std::string root_namespace = "istio-system";
  std::string cluster_domain = "cluster.local";  // service hostnames: <name>.<ns>.svc.<cluster_domain>
  // Applied to a RequestAuthentication when it is rendered for waypoints
  // (the controller inlines the JWKS of jwksUri rules: jwks_resolver.h).
  std::function<nlohmann::json(const nlohmann::json&)> request_authentication_transform;
};

class Model : public Sink {
 public:
  explicit Model(ModelOptions opts, ValidationListener* listener = nullptr);
  ~Model() override;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Sink: validate and record the change; translation happens in flush().
  // Objects of kinds not in kKinds are ignored (one log line per kind).
  void upsert(const std::string& origin, nlohmann::json obj) override;
  void remove(const ObjectKey& key) override;
  void synced() override;
  bool is_synced() const;

  // Translates everything changed since the last flush, at a cost
  // proportional to the change. Returns the resources whose body changed or
  // that appeared (upserts) or disappeared (removes), at version = previous
  // + 1; or an empty Delta at the unchanged version when nothing the nodes
  // see changed.
  Delta flush();

  uint64_t version() const;
  // Every current resource, by id (as of the last flush). Bodies are shared
  // with the Deltas that carried them.
  const std::map<std::string, ResourcePtr>& resources() const;

  // Whether a pod that has not terminated, scheduled on `node`, runs as
  // `spiffe_id` (spiffe://<trust domain>/ns/<ns>/sa/<sa>): the CA's check
  // before it signs. Reflects upserts at once (no flush needed).
  bool identity_on_node(const std::string& node, const std::string& spiffe_id) const;
  // Whether a waypoint pod of Gateway <ns>/<gateway> (label
  // gateway.networking.k8s.io/gateway-name) that has not terminated runs as
  // `spiffe_id`: the CA's check for a waypoint's CSR.
  bool identity_of_waypoint(const std::string& ns, const std::string& gateway, const std::string& spiffe_id) const;
  const ModelOptions& options() const;
  // The Gateways of class warren-waypoint, by "<ns>/<name>" (placement: the
  // local launcher, the Kubernetes deployer). Reflects upserts at once;
  // waypoints_generation() changes whenever the map does.
  const std::map<std::string, WaypointGateway>& waypoint_gateways() const;
  uint64_t waypoints_generation() const;

  // Objects rejected by validation, with their messages (for /debug and
  // tests). An entry goes away when a valid version arrives or the object is
  // removed.
  std::map<ObjectKey, std::string> rejected() const;
  // Objects held (accepted, of known kinds; pods that terminated are dropped).
  size_t object_count() const;
  // The accepted version of an object of a kind the model holds as JSON
  // (AuthorizationPolicy, PeerAuthentication, RequestAuthentication,
  // VirtualService, DestinationRule, Gateway, HTTPRoute, ServiceAccount,
  // Node); nullptr otherwise. Pods, Services, EndpointSlices and Namespaces
  // are kept as compact records only.
  const nlohmann::json* held(const ObjectKey& key) const;
  // The jwksUri values of the RequestAuthentications held (rules without inline jwks).
  std::set<std::string> jwks_uris() const;
  // Renders every held object of `kind` again at the next flush (after what
  // a transform of ModelOptions depends on changed); only bodies that differ
  // are sent.
  void refresh_kind(const std::string& kind);
  // meshConfig as read from the ConfigMap istio of the root namespace
  // (mesh_config.h); empty without one.
  const MeshConfig& mesh_config() const;

 private:
  void upsert_checked(const std::string& origin, nlohmann::json obj);
  void upsert_mesh_config(const std::string& origin, const ObjectKey& key, const nlohmann::json& obj);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace warren::controller
