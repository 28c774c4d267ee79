// warren-demo: the guided tour that ./scripts/demo.sh runs (root only).
//
// The example application is examples/mesh (namespaces, pods, services,
// policies; see its README). The demo builds a cluster of network
// namespaces the size its Pods ask for (harness.h: pod slot K of node N is
// 10.N.0.(10+K)), starts an echo server in each pod, runs warren-controller
// in local mode on a copy of the manifests and a warren-node per node in
// controller mode (mesh.h, controller_mesh.h), and shows: the control plane
// and the certificates it issued, traffic over mutual TLS with the
// identities, the ALLOW policy, a DENY policy applied by adding a file,
// a namespace enrolled at run time, the metrics, a waypoint routing and
// authorizing the catalog's HTTP requests, and where to look next.
// Every claim it prints is checked; a step that does not behave as claimed
// ends the demo with exit code 1. Then the mesh keeps running until Ctrl-C
// (or, with --exit, stops right away); everything is removed at the end, on
// failure and on Ctrl-C/SIGTERM.
//
//   warren-demo [--exit] [--keep]   --keep: the default (kept for old scripts)
//
// Exit codes: 0 shown as claimed (then stopped with Ctrl-C, or --exit), 1 a
// step failed, 77 not root, 130 interrupted before the tour ended.
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "demo_tour.h"
#include "demo_ui.h"
#include "harness.h"

using namespace warren::netns;
using namespace warren::demo;
using namespace std::chrono_literals;

namespace {

void on_signal(int sig) { g_signal = sig; }

// What is left of a cluster after its teardown ("" when nothing).
std::string leftovers(const std::string& tag, int nodes) {
  std::string left;
  for (auto& t : list_tags())
    if (t == tag) left += " netns/cgroup/owner file of " + tag;
  for (int n = 1; n <= nodes; n++)
    if (access(("/sys/fs/bpf/warren/t-" + tag + "-n" + std::to_string(n)).c_str(), F_OK) == 0)
      left += " /sys/fs/bpf/warren/t-" + tag + "-n" + std::to_string(n);
  return left;
}

}  // namespace

int main(int argc, char** argv) {
  bool keep = true;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--keep") {
      keep = true;
    } else if (a == "--exit") {
      keep = false;
    } else {
      std::cerr << "usage: warren-demo [--exit]\n"
                   "  runs the tour, then keeps the mesh running until Ctrl-C;\n"
                   "  --exit: clean up and exit right after the tour\n";
      return 2;
    }
  }
  if (!have_root()) {
    std::cerr << "warren-demo builds network namespaces, cgroups and eBPF programs: it needs root\n"
                 "(CAP_NET_ADMIN, CAP_SYS_ADMIN). Run it with sudo, or ./scripts/demo.sh --loopback\n"
                 "for the loopback demo without root.\n";
    return kSkipReturnCode;
  }
  if (!ensure_bpffs()) {
    std::cerr << "warren-demo: /sys/fs/bpf is not a bpf filesystem and could not be mounted\n";
    return 1;
  }
  g_tty = isatty(1);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaction(s, &sa, nullptr);

  int rc = 0;
  std::string tag;
  int nodes = 0;
  {
    Tour t(std::string(WARREN_SRC_DIR) + "/examples/mesh");
    t.keep = keep;
    try {
      t.run();
    } catch (const Interrupted&) {
      std::cout << "\n" << bold("Interrupted: cleaning up") << std::endl;
      rc = 130;
    } catch (const std::exception& e) {
      // A Ctrl-C from the terminal also reaches the children (same process
      // group): a step may see them die just before the signal is noticed.
      std::this_thread::sleep_for(300ms);
      if (g_signal) {
        std::cout << "\n" << bold("Interrupted: cleaning up") << std::endl;
        rc = 130;
      } else {
        std::cout << "\n" << bold("FAILED: ") << e.what() << std::endl;
        rc = 1;
        t.dump_logs();
      }
    }
    tag = t.tag();
    nodes = t.node_count();
    // Servers, then the mesh (nodes stopped, BPF pins removed, controller
    // stopped), then the cluster (netns, cgroups, whatever still runs there).
    t.teardown();
  }
  if (!tag.empty()) {
    // A Ctrl-C during the teardown also reaches its `ip netns del` children:
    // finish what they left.
    for (int i = 0; i < 3 && !leftovers(tag, nodes).empty(); i++) {
      std::this_thread::sleep_for(200ms);
      teardown_tag(tag);
      for (int n = 1; n <= nodes; n++) {
        std::error_code ec;
        std::filesystem::remove_all("/sys/fs/bpf/warren/t-" + tag + "-n" + std::to_string(n), ec);
      }
    }
    std::string left = leftovers(tag, nodes);
    if (left.empty()) {
      std::cout << "Cleaned up: no process, network namespace, cgroup or BPF pin of cluster " << tag
                << " is left.\n";
    } else {
      std::cout << "Cleanup left:" << left << "\n";
      if (rc == 0) rc = 1;
    }
  }
  return rc;
}
