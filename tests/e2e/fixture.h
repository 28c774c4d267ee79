// The standard two-node mesh most e2e tests start from:
//   node-a: client workload "sleep" (default/sleep) at .10
//   node-b: "echo-v1" (default/echo) at .20 and "echo-v2" at .21, apps on :8080
//   service "echo" VIP .100:80 -> endpoints echo-1, echo-2 (targetPort 8080)
//   "legacy" (protocol NONE, not in the mesh) at .40; .50 is in no config.
#pragma once

#include "harness.h"

namespace warren::e2e {

struct StdMesh {
  Mesh m;
  std::string client, echo1, echo2, vip, legacy, outside;
  explicit StdMesh(bool two_endpoints = true) {
    client = m.ip(10);
    echo1 = m.ip(20);
    echo2 = m.ip(21);
    vip = m.ip(100);
    legacy = m.ip(40);
    outside = m.ip(50);
    m.add_workload({"client-1", "sleep", "default", "sleep", "node-a", client, "HBONE",
                    {{"app", "sleep"}}});
    m.add_workload({"echo-1", "echo-v1", "default", "echo", "node-b", echo1, "HBONE",
                    {{"app", "echo"}, {"version", "v1"}}});
    m.add_workload({"echo-2", "echo-v2", "default", "echo", "node-b", echo2, "HBONE",
                    {{"app", "echo"}, {"version", "v2"}}});
    m.add_workload({"legacy-1", "legacy", "default", "legacy", "node-b", legacy, "NONE",
                    {{"app", "legacy"}}});
    std::vector<std::string> eps = {"echo-1"};
    if (two_endpoints) eps.push_back("echo-2");
    m.add_service("echo", vip, 80, 8080, eps);
  }
  void start(NodeOpts a = {}, NodeOpts b = {}) { m.start(a, b); }
};

// Sends `msg` and expects it echoed back.
inline bool echo_roundtrip(int fd, const std::string& msg) {
  if (!send_all(fd, msg.data(), msg.size())) return false;
  std::string back(msg.size(), '\0');
  return recv_exact(fd, back.data(), back.size()) && back == msg;
}

}  // namespace warren::e2e
