// Root-only end-to-end harness: a cluster of N nodes with M pods each, built
// from Linux network namespaces, veth pairs and bridges, plus one cgroup v2
// directory per cluster, node and pod.
//
// Layout of a cluster with tag T (a random 6-character [a-z0-9] string unless
// Topology::tag is set):
//
//   netns wrn-T-fab       bridge br0; one veth fab-n<N> per node
//   netns wrn-T-n<N>      eth0 192.168.100.N/24 (peer of fab-n<N>), ip_forward=1,
//                         bridge cni0 10.N.0.1/24, one veth vp<K> per pod,
//                         routes 10.M.0.0/24 via 192.168.100.M for every other node
//   netns wrn-T-n<N>-p<K> eth0 10.N.0.(10+K)/24, lo up, default via 10.N.0.1
//
// Every cluster has its own fabric netns, so addresses are the same in every
// cluster and concurrent clusters cannot collide. Interface names are fixed
// (they live in the cluster's own namespaces). Nothing is changed in the
// host netns. cgroups: /sys/fs/cgroup/unified/warren-test-T/node-N/pod-N-K/.
// Each pod has a `sleep infinity` "pause" process in its netns and cgroup.
//
// Teardown (destructor, `warren-netns down/cleanup`, or the stale sweep that
// Cluster::create runs first) kills every process in the cluster's cgroups
// (cgroup.kill) and every process whose netns is one of the cluster's, deletes
// the netns and removes the cgroups bottom-up. The owner of a cluster is
// recorded in /run/warren-netns/T.owner (pid and start time): clusters whose
// owner is gone are stale and swept.
//
// Node and pod names in configs: node-N, pod-N-K (namespace "default",
// service account "sa-N-K", uid "T-pod-N-K"); N and K count from 1.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "e2e/harness.h"

namespace warren::netns {

constexpr int kSkipReturnCode = 77;  // ctest SKIP_RETURN_CODE
constexpr const char* kNetnsPrefix = "wrn-";
constexpr const char* kCgroupRoot = "/sys/fs/cgroup/unified";
constexpr const char* kCgroupPrefix = "warren-test-";
constexpr const char* kStateDir = "/run/warren-netns";
constexpr const char* kNodeNetPrefix = "192.168.100.";

// euid 0 with CAP_NET_ADMIN and CAP_SYS_ADMIN effective.
bool have_root();
// Makes sure /sys/fs/bpf is a bpf filesystem (mounts it if not); false on failure.
bool ensure_bpffs();

// Binaries built next to the harness.
std::string podtool_path();  // warren-podtool
std::string nsexec_path();   // warren-nsexec [--cgroup DIR] --netns PATH -- argv...
std::string cli_path();      // warren-netns

struct PodInfo {
  std::string name;             // pod-N-K
  std::string k8s_namespace;    // "default"
  std::string service_account;  // sa-N-K
  std::string uid;              // T-pod-N-K
  std::string netns;            // ip netns name: wrn-T-nN-pK
  std::string netns_path;       // /var/run/netns/<netns>
  std::string ip;               // 10.N.0.(10+K)
  std::string cgroup;           // /sys/fs/cgroup/unified/warren-test-T/node-N/pod-N-K
  std::string node_if;          // the pod's veth in the node netns (vpK)
  int node = 0;                 // 1-based node number
  int index = 0;                // 1-based pod number on its node
  pid_t pause_pid = -1;         // sleep infinity in the pod's netns and cgroup
};

struct NodeInfo {
  std::string name;        // node-N
  std::string netns;       // wrn-T-nN
  std::string netns_path;  // /var/run/netns/<netns>
  std::string ip;          // 192.168.100.N
  std::string pod_cidr;    // 10.N.0.0/24
  std::string gateway;     // 10.N.0.1 (cni0)
  std::string cgroup;      // /sys/fs/cgroup/unified/warren-test-T/node-N
  std::string fabric_if;   // the node's veth in the fabric netns (fab-nN), for tcpdump
  int index = 0;           // 1-based
  std::vector<PodInfo> pods;
};

struct Topology {
  int nodes = 2;
  int pods_per_node = 2;
  std::string tag;  // empty: random; otherwise [a-z0-9]{1,8}
};

class Cluster {
 public:
  // Builds the cluster (sweeping stale clusters first); throws std::runtime_error
  // on failure, after tearing down whatever was built.
  static std::unique_ptr<Cluster> create(const Topology& t = {});
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  const std::vector<NodeInfo>& nodes() const { return nodes_; }
  const NodeInfo& node(int n) const { return nodes_.at(n - 1); }             // 1-based
  const PodInfo& pod(int n, int k) const { return node(n).pods.at(k - 1); }  // 1-based
  std::vector<PodInfo> all_pods() const;
  const std::string& tag() const { return tag_; }
  std::string fabric_netns() const { return kNetnsPrefix + tag_ + "-fab"; }
  std::string fabric_netns_path() const { return "/var/run/netns/" + fabric_netns(); }
  std::string cgroup() const;                      // the cluster's cgroup directory
  std::string dir() const { return dir_.path(); }  // temp dir for configs and logs
  std::string log_path(const std::string& log_name) const { return dir_ / log_name; }

  // A child in the pod's netns and cgroup (joined before exec, so every socket
  // it opens belongs to the pod). stdout+stderr go to dir()/log_name. argv[0]
  // is looked up in PATH.
  std::unique_ptr<e2e::Process> spawn_in_pod(const PodInfo& p, std::vector<std::string> argv,
                                             const std::string& log_name);
  // A child in the node's netns; it stays in the caller's cgroup (a node proxy
  // must not capture itself).
  std::unique_ptr<e2e::Process> spawn_in_node(int node, std::vector<std::string> argv,
                                              const std::string& log_name);
  // Runs to completion (output: stdout+stderr).
  e2e::CmdResult exec_in_pod(const PodInfo& p, std::vector<std::string> argv);
  e2e::CmdResult exec_in_node(int node, std::vector<std::string> argv);
  e2e::CmdResult exec_in_fabric(std::vector<std::string> argv);

  // Human-readable listing of nodes, pods, addresses, netns and cgroups.
  std::string describe() const;
  // Tears everything down now (the destructor does it otherwise); idempotent.
  void teardown();

 private:
  Cluster() = default;
  void build(const Topology& t);
  e2e::TempDir dir_;
  std::string tag_;
  std::vector<NodeInfo> nodes_;
  std::vector<std::unique_ptr<e2e::Process>> pauses_;
  bool torn_down_ = false;
};

// ---- cleanup (teardown.cpp) ----

// Tags that have any netns, cgroup or owner file.
std::vector<std::string> list_tags();
// True while the process recorded in the tag's owner file runs.
bool owner_alive(const std::string& tag);
// Reserves a tag for this process (owner file: pid, start time and the
// cluster's temp dir, which a stale sweep removes); false if taken.
bool claim_tag(const std::string& tag, const std::string& dir = "");
// Kills every process of the tag, deletes its netns, cgroups and owner file.
// Returns a description of what was left behind (empty: clean).
std::string teardown_tag(const std::string& tag);
// Tears down the tags whose owner is gone (every tag when `all`). Returns them.
std::vector<std::string> sweep_stale(bool all = false);

// Runs `ip -n <netns> -batch -` with the given commands (empty netns: refused,
// the host netns is never touched); throws with ip's output on failure.
void ip_batch(const std::string& netns, const std::vector<std::string>& cmds);

}  // namespace warren::netns
