// warren-node-config-mem: how much heap warren-node's configuration takes for
// a large mesh, without a controller or a network. Feeds N workload, S
// service and P policy resources, shaped as warren-controller sends them
// (controller/translate.cpp: Kubernetes-style uids and pod names, labels and
// annotations on every pod), to config::SnapshotBuilder as warren-node's
// controller client does, builds the snapshot, and reports the heap in use
// (mallinfo2) after each step, and bytes per workload.
//
//   warren-node-config-mem [--workloads 100000] [--services 10000]
//       [--policies 1000] [--nodes 1000] [--local 100]
//
// A quick loop for work on the config's memory; bench/controller/run.sh
// measures the real process.
#include <CLI/CLI.hpp>

#include <malloc.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "warren/config.h"

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

size_t heap_in_use() {
  malloc_trim(0);
  auto m = mallinfo2();
  return m.uordblks + m.hblkhd;  // heap chunks in use and mmapped blocks
}

std::string uid_of(size_t i) {
  // 8-4-4-4-12 hex, as Kubernetes' uids.
  char b[40];
  uint64_t h = i * 0x9e3779b97f4a7c15ull;
  std::snprintf(b, sizeof b, "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(h >> 32),
                static_cast<unsigned>(h >> 16 & 0xffff), static_cast<unsigned>(i & 0xffff), 0x8000u | (i % 4096),
                static_cast<unsigned long long>(h & 0xffffffffffffull));
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"warren-node-config-mem: heap taken by warren-node's config for a large mesh"};
  size_t n = 100000, s = 10000, p = 1000, nodes = 1000, local = 100;
  app.add_option("--workloads", n, "workload resources");
  app.add_option("--services", s, "service resources (endpoints spread over the workloads)");
  app.add_option("--policies", p, "AuthorizationPolicy resources");
  app.add_option("--nodes", nodes, "nodes the workloads are spread over");
  app.add_option("--local", local, "of the workloads, how many run on this node (keep their labels)");
  CLI11_PARSE(app, argc, argv);

  warren::config::Snapshot boot;
  boot.node_name = "node-local";
  size_t h0 = heap_in_use();
  auto t0 = Clock::now();
  warren::config::SnapshotBuilder b(boot);
  size_t ns_count = 100;
  for (size_t i = 0; i < n; i++) {
    size_t app_i = i % (s ? s : 1);
    std::string ns = "ns-" + std::to_string(app_i % ns_count);
    std::string app_name = "svc-" + std::to_string(app_i);
    json w = json::object();
    w["uid"] = uid_of(i);
    w["name"] = app_name + "-7d9c8b5f4-" + std::to_string(10000 + i % 90000);
    w["namespace"] = ns;
    w["serviceAccount"] = "sa-" + app_name;
    w["node"] = i < local ? "node-local" : "node-" + std::to_string(i % nodes);
    w["ips"] = json::array({"10." + std::to_string(i >> 16 & 255) + "." + std::to_string(i >> 8 & 255) + "." +
                            std::to_string(i & 255)});
    w["protocol"] = "HBONE";
    w["labels"] = {{"app", app_name}, {"version", "v" + std::to_string(i % 3)}, {"pod-template-hash", "7d9c8b5f4"}};
    w["annotations"] = {{"kubectl.kubernetes.io/default-container", "app"}};
    w["waypoint"] = "";
    auto r = b.upsert("workload/" + uid_of(i), w);
    if (!r) {
      std::fprintf(stderr, "workload %zu: %s\n", i, r.error().message.c_str());
      return 1;
    }
  }
  for (size_t j = 0; j < s; j++) {
    json eps = json::array();
    for (size_t k = j; k < n; k += s) eps.push_back(uid_of(k));
    std::string name = "svc-" + std::to_string(j), ns = "ns-" + std::to_string(j % ns_count);
    json sv = {{"name", name},
               {"namespace", ns},
               {"hostname", name + "." + ns + ".svc.cluster.local"},
               {"vips", json::array({"172." + std::to_string(16 + (j >> 16 & 15)) + "." + std::to_string(j >> 8 & 255) +
                                     "." + std::to_string(j & 255)})},
               {"ports", json::array({{{"port", 80}, {"targetPort", 8080}, {"name", "http"}}})},
               {"endpoints", eps}};
    auto r = b.upsert("service/" + ns + "/" + name, sv);
    if (!r) {
      std::fprintf(stderr, "service %zu: %s\n", j, r.error().message.c_str());
      return 1;
    }
  }
  for (size_t k = 0; k < p; k++) {
    std::string ns = "ns-" + std::to_string(k % ns_count);
    json pol = {{"apiVersion", "security.istio.io/v1"},
                {"kind", "AuthorizationPolicy"},
                {"metadata", {{"name", "pol-" + std::to_string(k)}, {"namespace", ns}}},
                {"spec",
                 {{"selector", {{"matchLabels", {{"app", "svc-" + std::to_string(k)}}}}},
                  {"rules", json::array({{{"from", json::array({{{"source", {{"namespaces", json::array({ns})}}}}})},
                                          {"to", json::array({{{"operation", {{"ports", json::array({"8080"})}}}}})}}})}}}};
    auto r = b.upsert("policy/" + ns + "/pol-" + std::to_string(k), pol);
    if (!r) {
      std::fprintf(stderr, "policy %zu: %s\n", k, r.error().message.c_str());
      return 1;
    }
  }
  size_t h1 = heap_in_use();
  auto t1 = Clock::now();
  std::map<std::string, std::string> rejected;
  auto snap = b.build(&rejected);
  auto t2 = Clock::now();
  size_t h2 = heap_in_use();
  auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
  std::printf("workloads %zu services %zu policies %zu rejected %zu\n", snap->workloads.size(), snap->services.size(),
              snap->policies.size(), rejected.size());
  std::printf("staged in builder: %.1f MB (%.0f B/workload), %.0f ms\n", (h1 - h0) / 1e6, (h1 - h0) / double(n),
              ms(t1 - t0));
  std::printf("snapshot + indexes: %.1f MB more, %.0f ms\n", (h2 - h1) / 1e6, ms(t2 - t1));
  std::printf("total: %.1f MB (%.0f B/workload)\n", (h2 - h0) / 1e6, (h2 - h0) / double(n));
  // One-workload deltas, as warren-node applies them: a content change (the
  // index is shared), an add and a remove (the index is rebuilt).
  auto one = [&](const char* what, auto&& change) {
    auto t = Clock::now();
    change();
    auto next = b.build(&rejected);
    std::printf("delta (%s): %.1f ms\n", what, ms(Clock::now() - t));
    snap = next;
  };
  json extra = {{"uid", "extra"}, {"name", "extra"}, {"namespace", "ns-0"}, {"node", "node-1"},
                {"ips", json::array({"10.255.255.254"})}};
  one("label change", [&] {
    json w = {{"uid", uid_of(7)}, {"name", "svc-7-x"}, {"namespace", "ns-7"}, {"node", "node-7"},
              {"ips", json::array({"10.0.0.7"})}, {"labels", {{"rev", "2"}}}};
    (void)b.upsert("workload/" + uid_of(7), w);
  });
  one("add", [&] { (void)b.upsert("workload/extra", extra); });
  one("remove", [&] { b.remove("workload/extra"); });
  return 0;
}
