// The model at the size DESIGN.md's controller targets: 100,000 pods, 10,000
// services with selectors, 1,000 policies, 1,000 nodes. Asserts behaviour
// (what one pod change emits), and prints times and memory with WARN so they
// show in every run (no timing asserts: tests assert behaviour, not speed).
#include <catch2/catch.hpp>
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>

#include "model.h"
#include "model_fixtures.h"

using namespace warren::controller;
using namespace fixtures;
using nlohmann::json;

namespace {

// Under AddressSanitizer the test keeps its shape at a fifth of the size
// (20,000 pods) so that it stays within ctest's timeout on a busy machine.
#if defined(__SANITIZE_ADDRESS__)
constexpr int kScale = 5;
#else
constexpr int kScale = 1;
#endif
constexpr int kNamespaces = 100 / kScale, kPodsPerNs = 1000, kPodsPerService = 10, kNodes = 1000, kPoliciesPerNs = 10;

long rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return 0;
}

// Process CPU time, not wall time: the numbers stay meaningful on a busy machine.
struct CpuClock {
  using time_point = std::clock_t;
  static time_point now() { return std::clock(); }
};
double ms_since(std::clock_t t) { return double(std::clock() - t) * 1000.0 / CLOCKS_PER_SEC; }

std::string ip_of(int i, int base) {
  return std::to_string(base) + "." + std::to_string((i >> 16) & 255) + "." + std::to_string((i >> 8) & 255) + "." +
         std::to_string(i & 255);
}

json scale_pod(int i, int app_offset = 0, int ip_base = 10) {
  static const json tmpl = pod("ns", "pod", "10.0.0.1", {{"app", "x"}, {"version", "v1"}, {"pod-template-hash", "x"}},
                               "node", "sa");
  int ns = i / kPodsPerNs, j = i % kPodsPerNs, app = (j / kPodsPerService + app_offset) % (kPodsPerNs / kPodsPerService);
  json p = tmpl;  // copying is much cheaper than building from initializer lists
  auto& md = p["metadata"];
  md["name"] = "pod-" + std::to_string(j);
  md["namespace"] = "ns-" + std::to_string(ns);
  md["uid"] = "0b6c3f2e-4a1d-4e6b-9c1a-" + std::to_string(100000000000 + i);
  md["labels"]["app"] = "svc-" + std::to_string(app);
  md["labels"]["pod-template-hash"] = "5d8f9c7b6" + std::to_string(app % 10);
  p["spec"]["nodeName"] = "node-" + std::to_string(i % kNodes);
  p["spec"]["serviceAccountName"] = "sa-" + std::to_string(app);
  std::string ip = ip_of(i, ip_base);
  p["status"]["podIP"] = ip;
  p["status"]["podIPs"][0]["ip"] = ip;
  return p;
}

}  // namespace

TEST_CASE("model scale: 100k pods 10k services 1k policies 1k nodes", "[controller][model][scale][slow]") {
  long rss0 = rss_kib();
  // What building the pods' JSON costs the test alone (to tell the model's share).
  auto tb = CpuClock::now();
  size_t sink = 0;
  for (int i = 0; i < kNamespaces * kPodsPerNs; i++) sink += scale_pod(i).size();
  double build_ms = ms_since(tb);
  CHECK(sink > 0);
  Model m({});
  auto t0 = CpuClock::now();
  for (int n = 0; n < kNodes; n++)
    m.upsert("scale", {{"apiVersion", "v1"}, {"kind", "Node"}, {"metadata", {{"name", "node-" + std::to_string(n)}}}});
  for (int ns = 0; ns < kNamespaces; ns++) {
    std::string nsn = "ns-" + std::to_string(ns);
    m.upsert("scale", ns_object(nsn, {{"warren.io/dataplane-mode", "enabled"}}));
    for (int s = 0; s < kPodsPerNs / kPodsPerService; s++) {
      int vip = ns * 100 + s;
      m.upsert("scale", service(nsn, "svc-" + std::to_string(s), "10.96." + std::to_string(vip / 256) + "." +
                                                                      std::to_string(vip % 256),
                                {{"app", "svc-" + std::to_string(s)}}));
    }
    for (int p = 0; p < kPoliciesPerNs; p++)
      m.upsert("scale", policy(nsn, "allow-" + std::to_string(p),
                               {{"selector", {{"matchLabels", {{"app", "svc-" + std::to_string(p)}}}}},
                                {"rules", json::array({json{{"from", json::array({json{{"source", {{"namespaces", {nsn}}}}}})}}})}}));
  }
  for (int i = 0; i < kNamespaces * kPodsPerNs; i++) m.upsert("scale", scale_pod(i));
  double upsert_ms = ms_since(t0);
  long rss_records = rss_kib();
  m.synced();
  REQUIRE(m.rejected().empty());

  auto t1 = CpuClock::now();
  Delta first = m.flush();
  double flush_ms = ms_since(t1);
  size_t resources = kNamespaces * kPodsPerNs + kNamespaces * (kPodsPerNs / kPodsPerService) +
                     kNamespaces * kPoliciesPerNs + kNamespaces;
  CHECK(first.upserts.size() == resources);
  CHECK(m.resources().size() == resources);
  CHECK(first.version == 1);
  // Every service selected its ten pods.
  CHECK(m.resources().at("service/ns-12/svc-7")->at("endpoints").size() == kPodsPerService);
  first = Delta{};  // the push server would have serialised and dropped it
  long rss1 = rss_kib();

  // One pod moves from one service to another: its workload and both services.
  int victim = 12 * kPodsPerNs + 75;  // ns-12, pod-75, app svc-7
  auto t2 = CpuClock::now();
  m.upsert("scale", scale_pod(victim, 1));
  Delta d = m.flush();
  double move_ms = ms_since(t2);
  std::string uid = "0b6c3f2e-4a1d-4e6b-9c1a-" + std::to_string(100000000000 + victim);
  CHECK(ids(d) == std::vector<std::string>{"service/ns-12/svc-7", "service/ns-12/svc-8", "workload/" + uid});
  CHECK(d.removes.empty());
  CHECK(d.version == 2);
  CHECK(m.resources().at("service/ns-12/svc-7")->at("endpoints").size() == kPodsPerService - 1);
  CHECK(m.resources().at("service/ns-12/svc-8")->at("endpoints").size() == kPodsPerService + 1);
  malloc_trim(0);  // after the first move: pages given back are faulted in again by the next allocations
  long rss2 = rss_kib();
  // More moves, timed one by one.
  std::vector<double> moves;
  for (int c = 1; c <= 21; c++) {
    auto t = CpuClock::now();
    m.upsert("scale", scale_pod((c * 4099) % (kNamespaces * kPodsPerNs), 1));
    REQUIRE(m.flush().upserts.size() == 3);
    moves.push_back(ms_since(t));
  }
  std::sort(moves.begin(), moves.end());

  // Pod IP changes (the common churn): the workload alone, timed over many.
  constexpr int kChanges = 200;
  auto t3 = CpuClock::now();
  for (int c = 0; c < kChanges; c++) {
    int i = (c * 7919) % (kNamespaces * kPodsPerNs);
    m.upsert("scale", scale_pod(i, 0, 11));
    Delta one = m.flush();
    REQUIRE(one.upserts.size() == 1);
    REQUIRE(one.upserts[0].first.rfind("workload/", 0) == 0);
  }
  double change_ms = ms_since(t3) / kChanges;

  // A pod deleted: its workload and its service.
  m.remove({"Pod", "ns-3", "pod-11"});
  Delta del = m.flush();
  CHECK(ids(del) == std::vector<std::string>{"service/ns-3/svc-1"});
  CHECK(del.removes.size() == 1);

  CHECK(m.identity_on_node("node-75", "spiffe://cluster.local/ns-12/sa/sa-8") == false);  // not a SPIFFE id of ours
  CHECK(m.identity_on_node("node-" + std::to_string(victim % kNodes), "spiffe://cluster.local/ns/ns-12/sa/sa-8"));
  auto t4 = CpuClock::now();
  int hits = 0;
  for (int i = 0; i < 10000; i++)
    hits += m.identity_on_node("node-" + std::to_string(i % kNodes), "spiffe://cluster.local/ns/ns-" +
                                                                         std::to_string(i % kNamespaces) + "/sa/sa-1");
  double identity_us = ms_since(t4) * 1000 / 10000;
  CHECK(hits > 0);

  WARN("scale: " << m.object_count() << " objects, " << m.resources().size() << " resources (times are CPU time)");
  WARN("scale: upserts " << upsert_ms << " ms (of which the test building pods' JSON about " << build_ms
                         << " ms); first full flush " << flush_ms << " ms");
  WARN("scale: RSS " << (rss1 - rss0) / 1024 << " MiB over the test's start (" << rss1 / 1024 << " MiB total, "
                     << rss2 / 1024 << " MiB after malloc_trim); records and indexes before the first flush: "
                     << (rss_records - rss0) / 1024 << " MiB");
  WARN("scale: one pod moving between services (upsert+flush): first " << move_ms
                                                                       << " ms (glibc consolidating the freed first delta), then median "
                                                                       << moves[moves.size() / 2] << " ms, max "
                                                                       << moves.back() << " ms");
  WARN("scale: one pod IP change (upsert+flush): " << change_ms << " ms; identity_on_node " << identity_us << " us");
}
