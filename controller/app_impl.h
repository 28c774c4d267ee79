// App's parts (internal to app*.cpp).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "app.h"
#include "ca.h"
#include "jwks_resolver.h"
#include "model.h"
#include "push_server.h"
#include "waypoint_deployer.h"
#include "waypoint_launcher.h"
#include "warren/defer.h"
#include "warren/http_server.h"
#include "warren/tls_context.h"

namespace warren::controller {

class LocalSource;
namespace k8s {
class KubernetesSource;
}

struct LogListener : ValidationListener {
  ValidationListener* next = nullptr;
  void rejected(const ObjectKey& key, const std::string& origin, const std::string& message) override;
  void accepted(const ObjectKey& key, const std::string& origin) override;
};

// Feeds the model and schedules a flush shortly after (events come one by
// one from Kubernetes; a burst becomes one version).
struct FlushingSink : Sink {
  struct App::Impl* app = nullptr;
  void upsert(const std::string& origin, nlohmann::json obj) override;
  void remove(const ObjectKey& key) override;
  void synced() override;
};

struct App::Impl {
  Impl(uv_loop_t* loop, AppOptions opts);
  ~Impl();
  Result<void> start();
  void stop();
  void schedule_flush();
  void flush();
  Result<void> start_ca();
  // --ca-secret (app_ca_secret.cpp).
  Result<void> load_ca_secret();
  Result<std::unique_ptr<CertificateAuthority>> ca_from_secret(
      const std::map<std::string, std::string>& data) const;
  static std::string digest_of(const std::map<std::string, std::string>& data);
  void poll_ca_secret();
  void swap_ca(std::unique_ptr<CertificateAuthority> next);
  metrics::Counter* ca_reload_metric(const std::string& result);
  Result<void> issue_serving_cert();
  Result<void> start_auth();
  Result<void> start_source();
  void stop_source();
  Result<void> start_monitoring();
  // Waypoint Gateways changed: the launcher (local mode) or the deployer
  // (Kubernetes mode) follows.
  void place_waypoints();

  uv_loop_t* loop;
  AppOptions opts;
  metrics::Registry registry;
  LogListener log_listener;
  FlushingSink sink;
  std::unique_ptr<Model> model;
  // The JWKS behind RequestAuthentications' jwksUri, inlined for waypoints.
  std::unique_ptr<JwksResolver> jwks;
  std::unique_ptr<CertificateAuthority> ca;
  std::unique_ptr<Authenticator> auth;
  std::unique_ptr<PushServer> push;
  std::unique_ptr<http::Server> monitoring;
  SockAddr monitoring_addr;
  std::unique_ptr<LocalSource> local;
  std::unique_ptr<k8s::KubernetesSource> kube;
  std::unique_ptr<WaypointLauncher> launcher;
  std::unique_ptr<WaypointDeployer> deployer;
  uint64_t placed_generation = UINT64_MAX;
  tls::SslCtxPtr serving_ctx;
  Timer flush_timer, serving_timer, secret_timer;
  std::string secret_ns, secret_name, secret_digest;
  bool flush_pending = false;
  bool published_once = false;
  bool stopped = false;
};

}  // namespace warren::controller
