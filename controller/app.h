// warren-controller assembled: a source (a manifests directory or the
// Kubernetes API) feeding the model, the CA, the push server on 15012 and the
// monitoring server on 15014 (/metrics, /debug/nodes, /debug/rejected,
// /healthz/ready). main() parses flags into AppOptions; tests run it in
// process.
#pragma once

#include <uv.h>

#include <chrono>
#include <memory>
#include <string>

#include "warren/ip.h"
#include "warren/metrics.h"
#include "warren/result.h"

namespace warren::controller {

struct AppOptions {
  // Exactly one source.
  std::string manifests_dir;
  std::string kubeconfig;  // or in_cluster
  bool in_cluster = false;

  SockAddr listen{*IpAddr::parse("0.0.0.0"), 15012};
  SockAddr monitoring{*IpAddr::parse("127.0.0.1"), 15014};
  std::string state_dir = "/var/lib/warren-controller";
  std::string trust_domain = "cluster.local";
  std::string root_namespace = "istio-system";
  // CA: a user-supplied signing certificate (root or intermediate) or, when
  // empty, a root generated once and kept in state_dir.
  std::string ca_cert, ca_key, ca_chain, ca_extra_roots;
  // Kubernetes mode: "<namespace>/<name>" of a Secret holding the signing CA
  // (Istio's cacerts keys or tls.crt/tls.key/ca.crt), read at start and
  // polled every ca_secret_poll; exclusive with ca_cert/ca_key.
  std::string ca_secret;
  std::chrono::milliseconds ca_secret_poll{30000};
  std::chrono::milliseconds ca_secret_timeout{30000};
  std::chrono::seconds cert_ttl = std::chrono::hours(24);
  // Local mode: "<token> [<node>|waypoint:<ns>/<gateway>]" lines; Kubernetes
  // mode uses TokenReview.
  std::string bootstrap_tokens;
  // Local mode: runs waypoints for warren-waypoint Gateways (waypoint_launcher.h).
  std::string waypoint_launcher;
  // Kubernetes mode: the waypoint template (charts/warren/files/waypoint.yaml);
  // the leader creates its objects for each warren-waypoint Gateway
  // (waypoint_deployer.h). Empty: waypoints are deployed by someone else.
  std::string waypoint_template;
  std::string waypoint_image = "warren/warren-waypoint:latest";
  std::string waypoint_controller_address = "warren-controller.warren-system.svc:15012";
  uint32_t flush_delay_ms = 5;  // batches Kubernetes events before translating
};

class App {
 public:
  App(uv_loop_t* loop, AppOptions opts);
  ~App();
  Result<void> start();
  void stop();
  SockAddr push_address() const;
  SockAddr monitoring_address() const;
  // The file nodes use as --controller-ca (written at start).
  std::string trust_bundle_file() const;
  metrics::Registry& registry();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace warren::controller
