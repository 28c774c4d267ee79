// warren-controller on a netns Cluster (the mesh's controller mode, see
// MeshOptions::controller in mesh.h).
//
// The controller gets a netns of its own, wrn-T-ctl, with eth0 192.168.100.250
// on the cluster's fabric bridge (and routes to each node's pod network via
// that node): the nodes reach it at 192.168.100.250:15012 (push and CA), so
// do waypoints from their pods, and its monitoring server listens on
// 192.168.100.250:15014.
// Nothing runs in the host netns; the cluster's teardown removes the netns
// (and kills whatever still runs in it) like any other of the tag's.
//
// It runs in local mode on a manifests directory of its own (dir()/manifests):
// tests and the demo write Kubernetes YAML there (Pods generated from the
// cluster, Namespaces, Services, policies) and edit it while everything runs.
// Each node authenticates with a bootstrap token (token_file(n), a line
// "<token> node-N" in the controller's tokens file). The CA root is generated
// once and kept in state_dir(), so a restarted controller keeps it.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "harness.h"

namespace warren::netns {

struct ControllerOptions {
  std::string cert_ttl;  // --cert-ttl ("30s", "2m"); empty: the controller's default (24h)
  std::string log_level = "info";
  std::string waypoint_launcher;  // --waypoint-launcher (Mesh sets it: MeshOptions::waypoint_slots)
};

// What a Pod manifest says about one of the cluster's pods. Empty fields take
// the harness's values (pod-N-K in "default", service account sa-N-K, uid
// T-pod-N-K, label app=pod-N-K).
struct PodSpec {
  std::string name, k8s_namespace, service_account, uid;
  std::map<std::string, std::string> labels;
  uint16_t port = 8080;  // containerPort
};

class Controller {
 public:
  static constexpr const char* kIp = "192.168.100.250";
  static constexpr uint16_t kPushPort = 15012, kMonitoringPort = 15014;

  // Creates the netns, the directories and the token files; start() runs it.
  Controller(Cluster& c, ControllerOptions o = {});
  ~Controller();  // stops the controller (the netns goes with the cluster)
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  std::string netns() const { return c_.tag().empty() ? "" : kNetnsPrefix + c_.tag() + "-ctl"; }
  std::string netns_path() const { return "/var/run/netns/" + netns(); }
  std::string address() const { return std::string(kIp) + ":" + std::to_string(kPushPort); }
  std::string monitoring() const { return std::string(kIp) + ":" + std::to_string(kMonitoringPort); }
  std::string dir() const { return dir_; }
  std::string manifests_dir() const { return dir_ + "/manifests"; }
  std::string state_dir() const { return dir_ + "/state"; }
  std::string ca_file() const { return state_dir() + "/root-cert.pem"; }  // --controller-ca
  std::string token_file(int node) const;                                // --controller-token
  std::string tokens_file() const { return dir_ + "/bootstrap-tokens"; }
  std::string token(int node) const;
  std::string log_path() const;  // of the current (last started) run

  // Starts warren-controller and waits until /healthz/ready (throws if it
  // exits or is not ready in time). Also restarts after kill()/stop(): same
  // state dir, so the same CA root.
  void start(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  void stop();  // SIGTERM, wait
  void kill();  // SIGKILL, wait
  bool alive();
  std::string log() const;  // of the current run
  // The command line as a reader could type it (for the demo).
  std::vector<std::string> argv() const;

  // ---- manifests (paths relative to manifests_dir()) ----
  // Atomic: written to a hidden temp file (the controller skips ".name") and
  // renamed over, so the controller never reads half a file.
  void write_manifest(const std::string& rel, const std::string& text);
  void remove_manifest(const std::string& rel);
  std::string read_manifest(const std::string& rel) const;

  // ---- monitoring (from inside the controller's netns) ----
  std::string get(const std::string& path);  // body of a 200, "" otherwise
  nlohmann::json debug_nodes();              // null when unreachable
  // The model's version (0 when unreachable).
  uint64_t version();
  // Waits until `nodes` nodes hold a connected stream and each acked the
  // controller's current version, which must be at least `min_version`.
  bool wait_acked(size_t nodes, uint64_t min_version = 0,
                  std::chrono::milliseconds timeout = std::chrono::seconds(5));
  double metric(const std::string& name, const std::map<std::string, std::string>& match = {});

 private:
  Cluster& c_;
  ControllerOptions o_;
  std::string dir_;
  std::map<int, std::string> tokens_;
  std::unique_ptr<e2e::Process> proc_;
  int starts_ = 0;
  std::string log_name_ = "controller.log";
};

// ---- manifests ----

// JSON as block YAML (strings quoted only when YAML would read them as
// something else). Objects with "---" between them for a list of documents.
std::string to_yaml(const nlohmann::json& j);
std::string to_yaml_documents(const std::vector<nlohmann::json>& docs);

// The Pod manifest of a cluster pod: metadata (name, namespace, uid, labels),
// spec.nodeName, spec.serviceAccountName, one container port, status.phase
// Running and status.podIP.
nlohmann::json pod_manifest(const Cluster& c, const PodInfo& p, const PodSpec& s = {});
// A Namespace, labelled warren.io/dataplane-mode=enabled when `enrolled`.
nlohmann::json namespace_manifest(const std::string& name, bool enrolled);
// A ClusterIP Service (TCP port → targetPort) selecting `selector`.
nlohmann::json service_manifest(const std::string& name, const std::string& ns,
                                const std::string& vip, uint16_t port, uint16_t target_port,
                                const std::map<std::string, std::string>& selector);

}  // namespace warren::netns
