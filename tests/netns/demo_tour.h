// warren-demo's tour (demo_main.cpp runs it): the example application of
// examples/mesh on a netns cluster with warren-controller and a warren-node
// per node, step by step, every claim checked. demo_tour.cpp: loading the
// manifests, the cluster and the control plane; demo_steps.cpp: traffic,
// policies, enrollment, metrics and where to look next.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "demo_ui.h"
#include "harness.h"
#include "mesh.h"

namespace warren::demo {

// The files of examples/mesh/extra the tour copies into the live directory.
inline constexpr const char* kDenyFile = "extra/deny-frontend-to-reviews.yaml";
inline constexpr const char* kEnrolledNamespaces = "extra/namespaces-legacy-enrolled.yaml";
inline constexpr const char* kWaypointFile = "extra/waypoint.yaml";

inline long ms_since(std::chrono::steady_clock::time_point t0) {
  auto d = std::chrono::steady_clock::now() - t0;
  return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
}

inline std::string str(const nlohmann::json& o, const char* k, const std::string& def = "") {
  return o.is_object() && o.contains(k) && o[k].is_string() ? o[k].get<std::string>() : def;
}

// "2025-01-02T03:04:05.678Z" → "2025-01-02 03:04:05" / "03:04:05".
inline std::string day_time(const std::string& t) {
  return t.size() >= 19 ? t.substr(0, 10) + " " + t.substr(11, 8) : t;
}
inline std::string time_of(const std::string& t) { return t.size() >= 19 ? t.substr(11, 8) : t; }

// tcpdump on node-1's port of the bridge between the nodes.
struct Wire {
  std::unique_ptr<e2e::Process> proc;
  std::string file;
  Wire(netns::Cluster& c, const std::string& name) : file(c.dir() + "/" + name) {
    cmd("fabric", "tcpdump -i " + c.node(1).fabric_if + " -w $W/" + name +
                      "      # node-1's port on the bridge between the nodes");
    proc = std::make_unique<e2e::Process>(
        std::vector<std::string>{netns::nsexec_path(), "--netns", c.fabric_netns_path(), "--",
                                 "tcpdump", "-Z", "root", "--immediate-mode", "-i",
                                 c.node(1).fabric_if, "-U", "-s", "0", "-w", file},
        c.log_path(name + ".log"));
    bool up = e2e::wait_until([&] { return contains(proc->log(), "listening on"); },
                              std::chrono::seconds(5));
    must(up, "tcpdump started", proc->log());
  }
  std::string stop() {
    pause_for(std::chrono::milliseconds(300));  // -U: let tcpdump write the last packets
    proc->stop();
    return e2e::read_file(file);
  }
};


class Tour {
 public:
  explicit Tour(std::string examples_dir);
  ~Tour();
  bool keep = true;  // after the tour, keep the mesh running until Ctrl-C

  void run();
  // Stops the servers, the mesh and the controller, removes the cluster.
  void teardown();
  // The last lines of the controller's and nodes' logs (after a failure).
  void dump_logs();
  std::string tag() const { return tag_; }
  int node_count() const { return nodes_; }

 private:
  struct AppPod {
    std::string name, ns, sa, uid, node, ip;
    std::map<std::string, std::string> labels;
    uint16_t port = 8080;
    const netns::PodInfo* slot = nullptr;  // the cluster pod it runs in
    std::string prompt() const { return ns + "/" + name; }
    std::string identity() const { return "spiffe://cluster.local/ns/" + ns + "/sa/" + sa; }
  };
  struct AppService {
    std::string name, ns, vip;
    uint16_t port = 80;
    std::string addr() const { return vip + ":" + std::to_string(port); }
  };

  void load();
  const AppPod& pod(const std::string& name) const;
  const AppService& service(const std::string& name) const;
  std::string manifests() const;  // the live copy the controller watches ($W/...)
  // Paths under the cluster's directory as "$W/..." (the tour prints W once).
  std::string W(std::string text) const;
  e2e::CmdResult connect(const AppPod& from, const std::string& to, const std::string& marker,
                         bool print = true, int timeout_ms = 3000);
  std::vector<std::string> peers(const std::string& pod_name) const;
  // The pod whose echo server logged a connection since `before` (counts per pod).
  std::string answered(const std::map<std::string, size_t>& before);
  std::map<std::string, size_t> peer_counts() const;
  std::string access_line(int node, const std::string& src_identity, const std::string& dst_identity);
  std::string wire_lines(const std::string& pcap, const std::string& filter);

  void step_cluster();
  void step_control_plane();
  void step_traffic();
  void step_allow();
  void step_deny();
  void step_enroll();
  void step_metrics();
  void step_waypoint();
  void step_next();
  void wait_for_ctrl_c();

  std::string examples_;
  std::vector<std::string> files_;
  std::map<std::string, AppPod> pods_;
  std::map<std::string, AppService> services_;
  std::set<std::string> enrolled_ns_;  // Namespaces labelled warren.io/dataplane-mode=enabled
  int nodes_ = 0, slots_ = 0;
  std::string tag_;
  std::unique_ptr<netns::Cluster> c_;
  std::unique_ptr<netns::Mesh> mesh_;
  std::map<std::string, std::unique_ptr<e2e::Process>> servers_;
};

}  // namespace warren::demo
