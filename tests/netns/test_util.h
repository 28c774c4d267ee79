// Small helpers shared by the netns test files (Catch2 assertions inside).
#pragma once

#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

#include "harness.h"

namespace warren::netns {

inline Topology topo(int nodes, int pods) {
  Topology t;
  t.nodes = nodes;
  t.pods_per_node = pods;
  return t;
}

// `warren-podtool serve ARGS` in a pod, once it reports listening.
inline std::unique_ptr<e2e::Process> serve(Cluster& c, const PodInfo& p,
                                           std::vector<std::string> args, const std::string& log) {
  using namespace std::chrono_literals;
  std::vector<std::string> argv{podtool_path(), "serve"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto s = c.spawn_in_pod(p, argv, log);
  REQUIRE(e2e::wait_until(
      [&] { return s->log().find("listening") != std::string::npos || !s->alive(); }, 5s));
  REQUIRE(s->alive());
  return s;
}

}  // namespace warren::netns
