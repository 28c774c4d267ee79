// The model's state (internal to model*.cpp): compact records, the indexes
// that keep flush() proportional to a change, and the dirty set.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "mesh_config.h"
#include "model.h"
#include "translate.h"

namespace warren::controller {

struct Model::Impl {
  ModelOptions opts;
  ValidationListener* listener = nullptr;
  bool synced = false;
  uint64_t version = 0;
  std::map<std::string, ResourcePtr> resources;
  // Resource ids to re-render at the next flush (duplicates allowed: a
  // vector is cheaper than a set for the first full load; flush sorts).
  std::vector<std::string> dirty;
  size_t dirty_compacted = 0;
  void mark(std::string id) {
    dirty.push_back(std::move(id));
    if (dirty.size() > 2 * dirty_compacted + 4096) compact_dirty();
  }
  void compact_dirty();  // sort and unique

  // ---- pods ("<ns>/<name>" → record) ----
  std::unordered_map<std::string, std::unique_ptr<PodInfo>> pods;
  std::unordered_map<std::string, const PodInfo*> pod_by_uid;
  // Workloads only (pods with is_workload()):
  //   "<ns>\0<key>\0<value>" → pods with that label (selector endpoints)
  std::unordered_map<std::string, std::unordered_set<const PodInfo*>> label_index;
  //   namespace → its workloads (a namespace's waypoint label changes)
  std::unordered_map<std::string, std::unordered_set<const PodInfo*>> ns_workloads;
  //   IP → workloads claiming it (normally one)
  std::unordered_map<std::string, std::vector<const PodInfo*>> ip_claims;
  // Pods not terminated: node → "<ns>/<sa>" → count (identity_on_node).
  std::unordered_map<std::string, std::unordered_map<std::string, uint32_t>> node_identities;
  // Waypoint pods not terminated: "<ns>/<gateway>" → service account → count
  // (identity_of_waypoint).
  std::unordered_map<std::string, std::unordered_map<std::string, uint32_t>> gateway_identities;

  // ---- services ("<ns>/<name>") ----
  std::unordered_map<std::string, std::unique_ptr<ServiceInfo>> services;
  // "<ns>\0<key>\0<value>" of a service's first selector label → services: a
  // pod can only match services indexed under one of its labels.
  std::unordered_map<std::string, std::unordered_set<const ServiceInfo*>> selector_index;
  std::unordered_map<std::string, std::vector<const ServiceInfo*>> vip_claims;

  // ---- endpoint slices ("<ns>/<name>") ----
  std::unordered_map<std::string, EndpointSliceInfo> slices;
  std::unordered_map<std::string, std::set<std::string>> slices_by_service;  // service key → slice keys
  // pod uid → service keys of the slices listing it (one entry per slice).
  std::unordered_map<std::string, std::vector<std::string>> slice_refs;

  // ---- the rest ----
  std::unordered_map<std::string, NamespaceInfo> namespaces;
  // Waypoints (Gateways of class warren-waypoint) annotated
  // warren.io/for-service-account: namespace -> gateway -> service account.
  SaWaypoints sa_waypoints;
  // Gateways of class warren-waypoint by "<ns>/<name>" (Model::waypoint_gateways).
  std::map<std::string, WaypointGateway> waypoint_gateways;
  uint64_t waypoints_gen = 0;
  void set_waypoint_gateway(const std::string& key, const std::optional<WaypointGateway>& g) {
    auto it = waypoint_gateways.find(key);
    if (!g && it == waypoint_gateways.end()) return;
    if (g && it != waypoint_gateways.end() && it->second == *g) return;
    if (g) waypoint_gateways.insert_or_assign(key, *g);
    else waypoint_gateways.erase(it);
    ++waypoints_gen;
  }
  // A Gateway came, went or changed: workloads of its namespace re-render.
  void set_gateway(const std::string& ns, const std::string& name, const std::string* sa);
  // AuthorizationPolicy and PeerAuthentication as nodes receive them, by resource id.
  std::unordered_map<std::string, ResourcePtr> node_objects;
  // Validated and held for later translation (model.h), trimmed.
  std::map<ObjectKey, nlohmann::json> held;

  // meshConfig from the ConfigMap istio of the root namespace (mesh_config.h);
  // a change re-renders every waypoint block.
  MeshConfig mesh_config;
  void set_mesh_config(MeshConfig next);

  std::map<ObjectKey, std::string> rejected;
  std::set<std::string> unknown_kinds_logged;

  // model_index.cpp: replace (or remove, with nullptr) a record, keeping
  // indexes and the dirty set up to date.
  void set_pod(const std::string& key, std::unique_ptr<PodInfo> next);
  void set_service(const std::string& key, std::unique_ptr<ServiceInfo> next);
  void set_slice(const std::string& key, const EndpointSliceInfo* next);
  void set_namespace(const std::string& name, const NamespaceInfo* next);

  // model_flush.cpp
  Delta flush();
  ResourcePtr render(const std::string& id);
  std::vector<std::string> service_endpoints(const std::string& key, const ServiceInfo& svc);

 private:
  void index_pod(const PodInfo* p, bool add);
  void index_service(const ServiceInfo* s, bool add);
  // Marks the services whose endpoints may involve this pod.
  void mark_services_of(const PodInfo& p);
  // Marks the pod's waypoint block when it is a waypoint's pod.
  void mark_waypoint_block(const PodInfo& p);
};

// "<ns>\0<key>\0<value>": label index keys.
inline std::string label_key(const std::string& ns, const std::string& k, const std::string& v) {
  std::string out;
  out.reserve(ns.size() + k.size() + v.size() + 2);
  out.append(ns).push_back('\0');
  out.append(k).push_back('\0');
  out.append(v);
  return out;
}

}  // namespace warren::controller
