// Node in controller mode: the configuration arrives as resources over the
// push stream and is assembled with the bootstrap file; certificates are
// requested from the controller's CA for the identities of local workloads.
#include <spdlog/spdlog.h>

#include <malloc.h>

#include <set>

#include "cert_manager.h"
#include "controller_client.h"
#include "inbound.h"
#include "node.h"
#include "resources.h"

namespace warren::node {

namespace {

// The CertManager's transport: CSRs ride the controller connection.
class ClientTransport : public CsrTransport {
 public:
  explicit ClientTransport(std::unique_ptr<ControllerClient>* c) : c_(c) {}
  void request(const std::string& id, const std::string& csr,
               std::function<void(Result<std::string>)> done) override {
    if (!*c_) return done(make_error(Errc::kUnavailable, "no controller client"));
    (*c_)->request_certificate(id, csr, std::move(done));
  }

 private:
  std::unique_ptr<ControllerClient>* c_;
};

}  // namespace

Result<void> Node::start_controller(const config::Snapshot& boot) {
  const auto& cc = boot.controller;
  auto addr = SockAddr::parse(cc.address);
  if (!addr) return make_error(Errc::kInvalidArgument, "controller address \"" + cc.address +
                                                           "\" is not IP:port");
  if (cc.token_file.empty() || cc.ca_file.empty())
    return make_error(Errc::kInvalidArgument,
                      "controller mode needs a token file and a CA file (controller.tokenFile, "
                      "controller.caFile or --controller-token, --controller-ca)");
  bootstrap_ = config::to_json(boot);
  for (const char* a : {"workloads", "services", "policies", "peerAuthentications", "namespaces"})
    bootstrap_.erase(a);

  ControllerClientOptions o;
  o.address = *addr;
  o.node = boot.node_name;
  o.token_file = cc.token_file;
  o.ca_file = cc.ca_file;
  o.trust_domain = boot.trust_domain;
  o.connect_timeout_ms = opts_.connect_timeout_ms;
  controller_ = std::make_unique<ControllerClient>(
      loop_, o, [this](ResourceMap& res, const std::vector<std::string>& changed) {
        return apply_resources(res, changed);
      });
  transport_ = std::make_unique<ClientTransport>(&controller_);
  cert_manager_ = std::make_unique<CertManager>(loop_, store_, *transport_);
  cert_manager_->set_on_change([this](const certs::IdentityStore::ReloadReport& rep) {
    if (rep.roots_changed) {
      client_ctx_.clear();
      server_ctx_.clear();
    }
    for (auto* list : {&rep.added, &rep.updated, &rep.removed})
      for (const auto& id : *list) {
        client_ctx_.erase(id);
        server_ctx_.erase(id);
      }
    spdlog::info("certificates: {} issued, {} renewed, {} dropped{}", rep.added.size(),
                 rep.updated.size(), rep.removed.size(), rep.roots_changed ? ", roots changed" : "");
    // Listeners that could not open for lack of a certificate can now.
    if (snap_ && !stopped_) (void)inbound_->sync_listeners(*snap_);
  });
  controller_->on_trust_bundle = [this](const std::string& pem) {
    if (auto r = cert_manager_->set_trust_bundle(pem); !r)
      spdlog::error("controller sent a trust bundle that does not parse: {}", r.error().message);
  };
  controller_->on_connection = [this](bool up) {
    if (up) cert_manager_->retry_failed_now();
  };
  controller_->start();
  spdlog::info("warren-node {}: configuration and certificates from controller {}", boot.node_name,
               cc.address);
  return {};
}

void Node::want_identities() {
  if (!cert_manager_ || !snap_) return;
  std::set<std::string> ids;
  for (const auto* w : snap_->local_workloads())
    if (w->protocol == config::Protocol::kHbone) ids.insert(w->identity);
  cert_manager_->set_wanted({ids.begin(), ids.end()});
}

std::map<std::string, std::string> Node::apply_resources(std::map<std::string, nlohmann::json>& res,
                                                         const std::vector<std::string>& changed) {
  auto a = assemble(bootstrap_, res);
  if (!a.snap) {
    // Nothing can be applied: reject what this message changed, keep serving.
    spdlog::error("controller config rejected, still serving version {}: {}", snap_->version,
                  a.error);
    node_metrics_->config_reload(false)->inc();
    for (const auto& id : changed) a.rejected.emplace(id, a.error);
    return a.rejected;
  }
  for (const auto& [id, why] : a.rejected) spdlog::warn("controller resource {} rejected: {}", id, why);
  bool first = !ready_;
  if (auto r = apply(a.snap); !r) {
    std::map<std::string, std::string> all;
    for (const auto& id : changed) all[id] = r.error().message;
    return all;
  }
  want_identities();
  if (first) {
    ready_ = true;
    spdlog::info("warren-node {} ready: first configuration from the controller", snap_->node_name);
  }
  return a.rejected;
}

}  // namespace warren::node
