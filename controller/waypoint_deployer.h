// Kubernetes mode placement of waypoints: for every Gateway of class
// warren-waypoint the leader creates, updates and deletes the objects of the
// waypoint template (charts/warren/files/waypoint.yaml: a ServiceAccount, a
// Deployment and a Service), each owned by the Gateway (ownerReferences), so
// Kubernetes also removes them with the Gateway when no controller runs.
//
// The template is read once at start: ${NAME}, ${NAMESPACE}, ${UID},
// ${SERVICE_ACCOUNT} per Gateway, the rest (${IMAGE}, ${CONTROLLER},
// ${TRUST_DOMAIN}, ${ROOT_NAMESPACE}) from the options and ${TRUST_BUNDLE}
// (the CA's roots, as a JSON string: a YAML double-quoted scalar). An object is applied
// by POST, and by a merge PATCH of the whole object when it exists (409);
// deleted by DELETE (404 counts as done). Gateways are handled one at a time;
// a failed one is retried after `retry`; everything is re-applied every
// `resync` (objects deleted or edited by hand come back) and when this
// replica becomes the leader. A follower does nothing.
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "k8s/http_client.h"
#include "waypoint_placement.h"
#include "warren/defer.h"
#include "warren/result.h"

namespace warren::controller {

struct WaypointDeployerOptions {
  std::string template_file;
  std::string image = "warren/warren-waypoint:latest";
  std::string controller = "warren-controller.warren-system.svc:15012";
  std::string trust_domain = "cluster.local";
  std::string root_namespace = "istio-system";
  std::chrono::milliseconds retry{5000};
  std::chrono::milliseconds resync{300000};
};

class WaypointDeployer {
 public:
  // Reads and checks the template (it must render to objects of known kinds
  // for a sample Gateway); errors name the file.
  static Result<std::unique_ptr<WaypointDeployer>> create(uv_loop_t* loop, k8s::Client& client,
                                                          WaypointDeployerOptions opts);
  ~WaypointDeployer();
  WaypointDeployer(const WaypointDeployer&) = delete;
  WaypointDeployer& operator=(const WaypointDeployer&) = delete;

  // The template's objects for one Gateway, in template order.
  Result<std::vector<nlohmann::json>> render(const WaypointGateway& g) const;

  void set_leader(bool leader);
  // The CA's roots (${TRUST_BUNDLE}); a change re-applies every waypoint.
  void set_trust_bundle(const std::string& pem);
  // The waypoint Gateways now ("<ns>/<name>" -> gateway).
  void sync(const std::map<std::string, WaypointGateway>& want);
  void stop();

  // Gateways whose objects are all applied (as of this leadership).
  const std::map<std::string, WaypointGateway>& applied() const { return plan_.placed(); }
  // Each finished gateway: "apply"/"delete", "<ns>/<name>", error ("" when done).
  std::function<void(const std::string& action, const std::string& key, const std::string& error)> on_done;

 private:
  WaypointDeployer(uv_loop_t* loop, k8s::Client& client, WaypointDeployerOptions opts, std::string text);
  void next();
  // Applies (or deletes) objects[i..] one by one, then finish().
  void step(std::vector<nlohmann::json> objects, size_t i, bool remove);
  void finish(const std::string& error);

  uv_loop_t* loop_;
  k8s::Client& client_;
  WaypointDeployerOptions opts_;
  std::string text_;  // the template
  std::string bundle_;
  bool leader_ = false, stopped_ = false;
  PlacementPlan plan_{/*restart_changed=*/false};
  std::optional<PlacementPlan::Step> busy_;  // the gateway being worked on
  k8s::Client::CallId call_ = 0;
  Timer timer_, resync_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace warren::controller
