// The mesh on top of a netns Cluster: one warren-node per node in in-pod mode
// (its own cgroup, BPF pins and CNI socket), pods enrolled through warren-cni
// as a container runtime would, and helpers to read a node's admin/metrics
// endpoints from inside its netns. Two ways to configure the nodes:
//   - config files (the default): a dev CA issues the certificates and each
//     node's file holds everything (workloads, services, policies);
//   - controller mode (MeshOptions::controller, controller_mesh.h): a
//     warren-controller in its own netns reads manifests, pushes the
//     configuration and issues the certificates; the node files only hold the
//     bootstrap (node, listeners, capture, controller address).
// Everything is undone in the destructor: nodes and controller stopped, BPF
// pins removed.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "controller_mesh.h"
#include "harness.h"

namespace warren::netns {

struct MeshOptions {
  bool fast_path = false;
  // Namespaces labelled warren.io/dataplane-mode=enabled.
  std::vector<std::string> enrolled_namespaces = {"default"};
  // Pods (by name) labelled warren.io/dataplane-mode=none.
  std::vector<std::string> opted_out;
  // Services: name → {vip, port, target port, endpoint pod names}.
  struct Service {
    std::string name, vip;
    uint16_t port = 80, target_port = 8080;
    std::vector<std::string> endpoints;
  };
  std::vector<Service> services;
  nlohmann::json policies = nlohmann::json::array();
  nlohmann::json peer_authentications = nlohmann::json::array();
  bool start_nodes = true;
  bool enroll_pods = true;  // CNI ADD for every pod once the nodes are up

  // Controller mode. The options above become manifests in the controller's
  // directory: 00-namespaces.yaml (enrolled_namespaces labelled, the pods'
  // other namespaces not), 10-pods.yaml (one Pod per cluster pod, labels
  // app=<pod name>, opted_out ones warren.io/dataplane-mode=none, each
  // service's endpoints service.warren.test/<service>=true), 20-services.yaml
  // (selecting that label), 30-policies.yaml (policies and
  // peer_authentications, Istio objects in both modes). The nodes start once
  // the controller is ready, pods are enrolled once the nodes have their
  // first configuration, and the constructor returns once every node holds
  // the certificates of its pods (wait_certificates).
  bool controller = false;
  ControllerOptions controller_options;
  // Per pod (by harness name pod-N-K): what its Pod manifest says, also used
  // for the CNI call's pod name, namespace and uid.
  std::map<std::string, PodSpec> pod_specs;
  // Copied into the manifests directory (its top-level *.yaml, *.yml and
  // *.json files) before the controller starts.
  std::string manifests_from;
  bool generate_manifests = true;  // false: manifests_from holds everything, Pods included
  // Controller mode: cluster pods (by name) kept for waypoints instead of
  // workloads: no Pod manifest, no enrollment. The controller runs
  // warren-netns-waypoint (tests/netns/waypoint_launcher.cpp) as its
  // --waypoint-launcher, which starts a warren-waypoint in a free one for
  // each Gateway of class warren-waypoint and writes its Pod manifest.
  std::vector<std::string> waypoint_slots;
};

class Mesh {
 public:
  Mesh(Cluster& c, MeshOptions o);
  ~Mesh();
  Mesh(const Mesh&) = delete;
  Mesh& operator=(const Mesh&) = delete;

  Cluster& cluster() { return c_; }
  bool controller_mode() const { return o_.controller; }
  // Controller mode only (throws otherwise).
  Controller& controller();
  // The node config as written (tests may edit it and write it back).
  nlohmann::json config(int node) const;
  // Writes a node's config atomically; the node re-reads it within ~0.5 s.
  void write_config(int node, const nlohmann::json& cfg);
  // Applies fn to every node's config and writes them.
  void update_configs(const std::function<void(nlohmann::json&)>& fn);
  // Waits until every node reports the config version after the update.
  // Controller mode: until every node acked the controller's current version.
  bool wait_config_applied(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Controller mode: waits until every node holds a certificate for each
  // identity it wants (its pods' service accounts), none in flight.
  bool wait_certificates(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Controller mode: the "controller" section of a node's /config_dump ({}
  // when the node does not answer).
  nlohmann::json controller_status(int node);

  void start_node(int node);
  void stop_node(int node);  // SIGTERM, wait
  void kill_node(int node);  // SIGKILL
  bool node_alive(int node);
  std::string node_log(int node) const;
  std::string pin_dir(int node) const;

  // Waypoints started by the launcher (MeshOptions::waypoint_slots): the
  // launcher's record of <ns>/<gateway> ({slot, pod, pid, ip, netnsPath});
  // null while it does not run.
  nlohmann::json waypoint(const std::string& ns, const std::string& gateway) const;
  // Waits until the waypoint answers /healthz/ready (its first configuration
  // and certificate arrived).
  bool wait_waypoint_ready(const std::string& ns, const std::string& gateway,
                           std::chrono::milliseconds timeout = std::chrono::seconds(15));
  // Its /config_dump (null when it does not answer) and log.
  nlohmann::json waypoint_config_dump(const std::string& ns, const std::string& gateway);
  std::string waypoint_log(const std::string& ns, const std::string& gateway) const;

  // warren-cni as the runtime would call it; returns the plugin's exit code.
  int cni(const std::string& command, const PodInfo& p, std::string* out = nullptr);
  // Polls /config_dump until the pod's enrolled flag matches.
  bool wait_enrolled(const PodInfo& p, bool enrolled = true,
                     std::chrono::milliseconds timeout = std::chrono::seconds(5));

  nlohmann::json config_dump(int node);
  std::string metrics(int node);
  // A BPF stat ("connect_captured", ...) of the node's capture programs.
  uint64_t bpf_stat(int node, const std::string& name);
  // Sum of a metric's samples whose labels contain every `match` pair.
  double metric(int node, const std::string& name,
                const std::map<std::string, std::string>& match = {});

 private:
  nlohmann::json make_config(int node) const;
  nlohmann::json make_bootstrap(int node) const;
  void write_manifests();
  void start_controller_mode();
  PodSpec spec_of(const PodInfo& p) const;
  // The pod is enrolled: its dataplane-mode label, else opted_out, else its
  // namespace in enrolled_namespaces (what the controller decides from the
  // manifests; only enrolled pods get certificates).
  bool in_mesh(const PodInfo& p, const PodSpec& s) const;
  std::string config_path(int node) const;
  bool waypoint_slot(const std::string& pod) const;
  std::string waypoint_state_path() const { return c_.dir() + "/waypoint-launcher.json"; }
  void write_waypoint_state();
  Cluster& c_;
  MeshOptions o_;
  std::string ca_dir_, certs_dir_;
  std::map<int, std::unique_ptr<e2e::Process>> nodes_;
  std::map<int, uint64_t> versions_;
  std::unique_ptr<Controller> ctl_;
};

// HTTP/1.1 GET from inside a netns (a thread that setns()es); "" on error.
std::string http_get_in(const std::string& netns_path, const std::string& host, uint16_t port,
                        const std::string& path);

// podtool's one-line JSON output (the last line that parses).
nlohmann::json podtool_json(const std::string& output);

}  // namespace warren::netns
