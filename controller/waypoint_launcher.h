// Local mode placement of waypoints (--waypoint-launcher CMD): there is no
// Kubernetes to run a Deployment, so for every Gateway of class
// warren-waypoint the controller runs
//   CMD up   <namespace> <gateway> <service account>
// when it appears (or changes), and
//   CMD down <namespace> <gateway> <service account>
// when it goes. The command starts (stops) a warren-waypoint wherever the
// local setup keeps its pods and writes (removes) the waypoint's Pod manifest
// (label gateway.networking.k8s.io/gateway-name, status.podIP,
// spec.nodeName, spec.serviceAccountName) into the manifests directory,
// from which the controller learns the waypoint's address as from any pod.
// The service account is the one the waypoint runs as (WaypointGateway).
//
// Commands run one at a time, in order (downs first); "up" must be
// idempotent. A command that fails (exit status not 0) is retried after
// `retry`; its output goes to the controller's stdout/stderr. Stopping the
// controller leaves running waypoints alone, as Deployments outlive it.
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "waypoint_placement.h"
#include "warren/defer.h"
#include "warren/result.h"

namespace warren::controller {

class WaypointLauncher {
 public:
  // `command`: the program and its first arguments, split on spaces.
  WaypointLauncher(uv_loop_t* loop, const std::string& command,
                   std::chrono::milliseconds retry = std::chrono::seconds(5));
  ~WaypointLauncher();
  WaypointLauncher(const WaypointLauncher&) = delete;
  WaypointLauncher& operator=(const WaypointLauncher&) = delete;

  // The waypoint Gateways now ("<ns>/<name>" -> gateway).
  void sync(const std::map<std::string, WaypointGateway>& want);
  // No more commands (one in flight finishes on its own).
  void stop();

  // Each finished command: "up"/"down", the gateway, its exit status (-1:
  // could not be started).
  std::function<void(const std::string& action, const WaypointGateway& g, int status)> on_done;
  // Gateways whose "up" succeeded and that are still wanted.
  const std::map<std::string, WaypointGateway>& up() const { return plan_.placed(); }

 private:
  struct Run;
  void next();
  void finished(const PlacementPlan::Step& step, int status);

  uv_loop_t* loop_;
  std::vector<std::string> argv_;
  std::chrono::milliseconds retry_;
  PlacementPlan plan_{/*restart_changed=*/true};
  Run* running_ = nullptr;
  Timer timer_;
  bool stopped_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace warren::controller
