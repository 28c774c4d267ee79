// warren-node's shared state on one event loop: the current snapshot, the
// identities and their TLS contexts, metrics, logs, and the three traffic
// paths (SOCKS5 entry, outbound pool, inbound HBONE server).
#pragma once

#include <nlohmann/json.hpp>
#include <uv.h>

#include <map>
#include <memory>
#include <string>

#include "config.h"
#include "node_metrics.h"
#include "pool.h"
#include "warren/certs.h"
#include "warren/log.h"
#include "warren/metrics.h"
#include "warren/tcp.h"
#include "warren/tls_context.h"

namespace warren::http {
class Server;
}

namespace warren::push {
class ControllerClient;
}
namespace warren::certs {
class CertManager;
class CsrTransport;
}

namespace warren::node {

class Inbound;
class SocksEntry;
class InPod;
// The controller's client and the certificate manager live in common/
// (warren-waypoint uses them too).
using certs::CertManager;
using certs::CsrTransport;
using push::ControllerClient;

// SO_MARK of the proxy's own sockets in pod netns (never captured).
inline constexpr uint32_t kMeshMark = 0x539;

struct NodeOptions {
  std::string config_path;
  std::string access_log = "-";
  uint32_t connect_timeout_ms = 10000;
  uint32_t cert_poll_ms = 1000;
  uint32_t config_poll_ms = 500;
  // Controller mode (override the config file's "controller" section).
  std::string controller_address, controller_token_file, controller_ca_file;
};

class Node {
 public:
  Node(uv_loop_t* loop, NodeOptions opts);
  ~Node();
  // Loads config and certificates and opens every listener. On error nothing
  // is left listening.
  Result<void> start();
  // Closes listeners and connections; the loop then runs out.
  void stop();

  uv_loop_t* loop() const { return loop_; }
  const config::SnapshotPtr& snapshot() const { return snap_; }
  const NodeOptions& options() const { return opts_; }
  NodeMetrics& metrics() { return *node_metrics_; }
  metrics::Registry& registry() { return registry_; }
  log::AccessLog& access_log() { return *access_log_; }
  Pool& pool() { return *pool_; }
  Inbound& inbound() { return *inbound_; }
  Result<SSL_CTX*> client_ctx(const std::string& identity);
  Result<SSL_CTX*> server_ctx(const std::string& identity);
  const certs::IdentityStore& identities() const { return store_; }
  // Re-reads the config file; keeps the current one on any error.
  Result<void> reload_config();
  void reload_certs();
  bool ready() const { return ready_; }
  uint64_t next_rr(const config::Service* svc) { return rr_[svc ? svc->hostname : ""]++; }
  // In-pod capture (nullptr in standalone mode).
  InPod* inpod() { return inpod_.get(); }
  // The netns to open a pod's sockets in: the enrolled pod owning `ip`, or -1.
  int netns_for(const IpAddr& ip) const;
  // Controller mode: configuration and certificates come from warren-controller.
  ControllerClient* controller() { return controller_.get(); }
  CertManager* cert_manager() { return cert_manager_.get(); }

 private:
  // trim: give freed memory back to the OS (after a full load; a one-pod
  // delta would pay a heap walk for nothing).
  Result<void> apply(config::SnapshotPtr snap, bool trim = true);
  // node_controller.cpp
  Result<void> start_controller(const config::Snapshot& bootstrap);
  std::map<std::string, std::string> apply_update(bool snapshot,
                                                  std::vector<std::pair<std::string, nlohmann::json>>& upserts,
                                                  const std::vector<std::string>& removes,
                                                  bool streamed = false);
  std::map<std::string, std::string> streamed_rejected_;  // from the message being streamed
  void certificates_changed(const std::vector<std::string>& ids, bool roots_changed);
  void want_identities();
  void setup_admin();

  uv_loop_t* loop_;
  NodeOptions opts_;
  config::SnapshotPtr snap_;
  certs::IdentityStore store_;
  std::string cert_dir_, root_file_;
  std::map<std::string, tls::SslCtxPtr> client_ctx_, server_ctx_;
  metrics::Registry registry_;
  std::unique_ptr<NodeMetrics> node_metrics_;
  std::unique_ptr<log::AccessLog> access_log_;
  std::unique_ptr<hbone::PoolEnv> pool_env_;
  std::unique_ptr<Pool> pool_;
  std::unique_ptr<Inbound> inbound_;
  std::unique_ptr<SocksEntry> socks_;
  std::unique_ptr<InPod> inpod_;
  std::unique_ptr<ControllerClient> controller_;
  std::unique_ptr<CsrTransport> transport_;
  std::unique_ptr<CertManager> cert_manager_;
  std::unique_ptr<config::SnapshotBuilder> builder_;  // controller mode
  std::unique_ptr<http::Server> admin_, metrics_srv_, ready_srv_;
  uv_fs_poll_t config_poll_;
  uv_signal_t sighup_, sigterm_, sigint_;
  uv_timer_t cert_timer_;
  std::map<std::string, uint64_t> rr_;
  bool ready_ = false;
  bool stopped_ = false;
  bool handles_started_ = false;
};

}  // namespace warren::node
