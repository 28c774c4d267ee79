// warren-cni: a chained CNI plugin (spec 1.0.0; accepts 0.3.0 to 1.0.0
// configs) that tells warren-node about pods as the runtime creates and
// deletes them. Runs after the cluster's main plugin and passes its result
// through unchanged.
//
// Network config keys of our own (besides cniVersion, name, type,
// prevResult): "socketPath" (default kDefaultSocketPath), "timeoutMs"
// (1..60000, default 5000) for the whole exchange with the node.
//
// Error codes: 1 incompatible cniVersion, 4 bad or missing CNI_* variables,
// 6 stdin is not JSON, 7 invalid network config (the message names the
// field), 11 warren-node unreachable or silent (try again later), 5 broken
// exchange with the node, 100 warren-node refused the pod.
#pragma once

#include <string>
#include <string_view>

namespace warren::cni {

struct PluginEnv {
  std::string command;       // CNI_COMMAND
  std::string container_id;  // CNI_CONTAINERID
  std::string netns;         // CNI_NETNS
  std::string ifname;        // CNI_IFNAME
  std::string args;          // CNI_ARGS: "K=V;K=V"
  std::string path;          // CNI_PATH

  static PluginEnv from_process();
};

struct PluginOutput {
  int exit_code = 0;
  std::string out;  // for stdout: a result or an error object
  std::string err;  // for stderr: diagnostics
};

inline constexpr int kDefaultTimeoutMs = 5000;
inline constexpr const char* kSupportedVersions[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0"};

PluginOutput run_plugin(const PluginEnv& env, std::string_view stdin_data);

}  // namespace warren::cni
