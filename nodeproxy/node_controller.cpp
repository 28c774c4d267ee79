// Node in controller mode: the configuration arrives as resources over the
// push stream and is assembled with the bootstrap file; certificates are
// requested from the controller's CA for the identities of local workloads.
#include <spdlog/spdlog.h>

#include <malloc.h>

#include <set>

#include "warren/cert_manager.h"
#include "warren/controller_client.h"
#include "inbound.h"
#include "node.h"

namespace warren::node {

using push::ControllerClientOptions;

Result<void> Node::start_controller(const config::Snapshot& boot) {
  const auto& cc = boot.controller;
  if (cc.token_file.empty() || cc.ca_file.empty())
    return make_error(Errc::kInvalidArgument,
                      "controller mode needs a token file and a CA file (controller.tokenFile, "
                      "controller.caFile or --controller-token, --controller-ca)");
  builder_ = std::make_unique<config::SnapshotBuilder>(boot);

  ControllerClientOptions o;
  if (auto r = o.set_address(cc.address); !r) return r;
  o.node = boot.node_name;
  o.token_file = cc.token_file;
  o.ca_file = cc.ca_file;
  o.trust_domain = boot.trust_domain;
  o.connect_timeout_ms = opts_.connect_timeout_ms;
  controller_ = std::make_unique<ControllerClient>(loop_, o, nullptr);
  controller_->set_update_fn([this](ControllerClient::Update&& u) {
    return apply_update(u.snapshot, u.upserts, u.removes, u.streamed);
  });
  // Resources go into the builder as the message is parsed (see StreamFns).
  controller_->set_stream_fns(
      {[this](bool snapshot) {
         streamed_rejected_.clear();
         if (snapshot) builder_->clear();
       },
       [this](const std::string& id, nlohmann::json&& body) {
         if (auto r = builder_->upsert(id, body); !r) {
           streamed_rejected_[id] = r.error().message;
           spdlog::warn("controller resource {} rejected (its previous version stays): {}", id, r.error().message);
         }
         body = nlohmann::json();
       }});
  transport_ = std::make_unique<push::ControllerCsrTransport>(&controller_);
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
  push::feed_cert_manager(*controller_, *cert_manager_);
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

std::map<std::string, std::string> Node::apply_update(
    bool snapshot, std::vector<std::pair<std::string, nlohmann::json>>& upserts,
    const std::vector<std::string>& removes, bool streamed) {
  auto start = std::chrono::steady_clock::now();
  std::map<std::string, std::string> rejected;
  if (streamed) rejected.swap(streamed_rejected_);
  if (snapshot && !streamed) builder_->clear();
  for (const auto& id : removes) builder_->remove(id);
  for (auto& [id, body] : upserts) {
    if (auto r = builder_->upsert(id, body); !r) {
      rejected[id] = r.error().message;
      spdlog::warn("controller resource {} rejected (its previous version stays): {}", id,
                   r.error().message);
    }
    body = nlohmann::json();  // free as we go
  }
  upserts.clear();
  std::map<std::string, std::string> conflicts;
  auto snap = builder_->build(&conflicts);
  for (const auto& [id, why] : conflicts) {
    spdlog::warn("controller resource {} left out: {}", id, why);
    rejected.emplace(id, why);
  }
  bool first = !ready_;
  if (auto r = apply(snap, /*trim=*/snapshot); !r) {
    for (const auto& id : removes) rejected.emplace(id, r.error().message);
    return rejected;
  }
  want_identities();
  auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  spdlog::debug("controller update applied in {:.1f} ms", ms);
  if (first) {
    ready_ = true;
    spdlog::info("warren-node {} ready: first configuration from the controller", snap_->node_name);
  }
  return rejected;
}

}  // namespace warren::node
