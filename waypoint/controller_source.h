// warren-waypoint in controller mode: the configuration arrives over the
// controller's push stream (warren/push_proto.h) and the certificate from its
// CA, the way warren-node gets them (warren/controller_client.h,
// warren/cert_manager.h).
//
// The waypoint subscribes as "waypoint:<ns>/<gateway>" naming its pod, and
// receives the node kinds (workloads, services, policies, peer
// authentications, namespaces), the routing objects of its namespace and of
// the root namespace, and its pod's waypoint block (name, namespace,
// serviceAccount, address, and extensionProviders: meshConfig's, which the
// document gets at its top level as a file has them). Each message becomes a
// new State:
//   - a node resource is parsed by config::SnapshotBuilder (warren-node's);
//   - a routing object is compiled alone first (check_routing_object);
// a resource that fails is nacked and its previous version stays in force,
// the rest applies. Until the waypoint block arrives there is no State.
//
// The certificate for the State's identity (its pod's service account) is
// requested with a CSR and renewed at half-life by a CertManager.
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "state.h"
#include "warren/cert_manager.h"
#include "warren/certs.h"
#include "warren/controller_client.h"

namespace warren::waypoint {

struct ControllerSourceOptions {
  std::string address;  // IP:port or NAME:port of the push server
  std::string token_file, ca_file;
  std::string waypoint_ns, gateway;  // the Gateway this waypoint implements
  std::string pod;                   // the pod it runs in
  std::string trust_domain = "cluster.local";
  std::string root_namespace = "istio-system";
  uint32_t connect_timeout_ms = 5000;
  uint32_t backoff_min_ms = 100, backoff_max_ms = 5000;
  certs::CertManagerOptions certs;
  bool enabled() const { return !address.empty(); }
};

class ControllerSource {
 public:
  // A new State to serve: an error refuses it (the waypoint block is then
  // nacked with that reason and the previous State stays).
  using OnState = std::function<Result<void>(StatePtr)>;
  // The identity store changed (a certificate issued or renewed, new roots).
  using OnCerts = std::function<void(const certs::IdentityStore::ReloadReport&)>;

  ControllerSource(uv_loop_t* loop, ControllerSourceOptions opts, certs::IdentityStore& store);
  ~ControllerSource();
  ControllerSource(const ControllerSource&) = delete;
  ControllerSource& operator=(const ControllerSource&) = delete;

  Result<void> start(OnState on_state, OnCerts on_certs);
  void stop();

  // One message's changes (the client's UpdateFn); returns the rejected ids
  // with reasons. Public for tests: it works without start() (no callback,
  // no certificates).
  std::map<std::string, std::string> apply(push::ControllerClient::Update&& u);

  const StatePtr& state() const { return state_; }
  push::ControllerClient* client() { return client_.get(); }
  certs::CertManager* cert_manager() { return certs_.get(); }
  // For /config_dump: {controller: {connected, epoch, version, lastError},
  // certificates: CertManager::status_json()}.
  nlohmann::json status_json() const;

 private:
  // The document build_state reads, from what is held.
  nlohmann::json document(const nlohmann::json& block) const;

  uv_loop_t* loop_;
  ControllerSourceOptions opts_;
  certs::IdentityStore& store_;
  OnState on_state_;
  std::unique_ptr<config::SnapshotBuilder> builder_;
  // Accepted routing objects and AuthorizationPolicies (as written, for L7
  // authorization), by resource id.
  std::map<std::string, nlohmann::json> routing_, policies_;
  std::optional<nlohmann::json> block_;  // this pod's waypoint block
  std::string block_id_;
  StatePtr state_;
  std::unique_ptr<push::ControllerClient> client_;
  std::unique_ptr<push::ControllerCsrTransport> transport_;
  std::unique_ptr<certs::CertManager> certs_;
};

}  // namespace warren::waypoint
