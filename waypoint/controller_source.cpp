#include "controller_source.h"

#include <spdlog/spdlog.h>

#include "warren/push_proto.h"

namespace warren::waypoint {

using nlohmann::json;
using push::ResourceKind;

namespace {

// The document array a routing resource goes to.
const char* array_of(ResourceKind k) {
  switch (k) {
    case ResourceKind::kVirtualService: return "virtualServices";
    case ResourceKind::kDestinationRule: return "destinationRules";
    case ResourceKind::kHttpRoute: return "httpRoutes";
    case ResourceKind::kRequestAuthentication: return "requestAuthentications";
    default: return nullptr;
  }
}

}  // namespace

ControllerSource::ControllerSource(uv_loop_t* loop, ControllerSourceOptions opts, certs::IdentityStore& store)
    : loop_(loop), opts_(std::move(opts)), store_(store) {
  block_id_ = "waypoint/" + opts_.waypoint_ns + "/" + opts_.gateway + "/" + opts_.pod;
  config::Snapshot boot;
  boot.node_name = opts_.gateway;
  boot.trust_domain = opts_.trust_domain;
  boot.root_namespace = opts_.root_namespace;
  builder_ = std::make_unique<config::SnapshotBuilder>(boot);
  builder_->keep_all_meta();  // subsets and policies select workloads of every node
}

ControllerSource::~ControllerSource() { stop(); }

Result<void> ControllerSource::start(OnState on_state, OnCerts on_certs) {
  if (opts_.token_file.empty() || opts_.ca_file.empty())
    return make_error(Errc::kInvalidArgument, "controller mode needs --controller-token and --controller-ca");
  if (opts_.waypoint_ns.empty() || opts_.gateway.empty())
    return make_error(Errc::kInvalidArgument, "controller mode needs --waypoint NAMESPACE/GATEWAY");
  if (opts_.pod.empty())
    return make_error(Errc::kInvalidArgument, "controller mode needs --pod NAME (or the POD_NAME variable)");
  push::ControllerClientOptions o;
  if (auto r = o.set_address(opts_.address); !r) return r;
  o.node = push::kWaypointPrincipalPrefix + opts_.waypoint_ns + "/" + opts_.gateway;
  o.pod = opts_.pod;
  o.token_file = opts_.token_file;
  o.ca_file = opts_.ca_file;
  o.trust_domain = opts_.trust_domain;
  o.connect_timeout_ms = opts_.connect_timeout_ms;
  o.backoff_min_ms = opts_.backoff_min_ms;
  o.backoff_max_ms = opts_.backoff_max_ms;
  on_state_ = std::move(on_state);

  client_ = std::make_unique<push::ControllerClient>(loop_, o, nullptr);
  client_->set_update_fn([this](push::ControllerClient::Update&& u) { return apply(std::move(u)); });
  transport_ = std::make_unique<push::ControllerCsrTransport>(&client_);
  certs_ = std::make_unique<certs::CertManager>(loop_, store_, *transport_, opts_.certs);
  certs_->set_on_change(std::move(on_certs));
  push::feed_cert_manager(*client_, *certs_);
  client_->start();
  spdlog::info("warren-waypoint {}/{} (pod {}): configuration and certificate from controller {}",
               opts_.waypoint_ns, opts_.gateway, opts_.pod, opts_.address);
  return {};
}

void ControllerSource::stop() {
  if (certs_) certs_->stop();
  if (client_) client_->stop();
}

json ControllerSource::document(const json& block) const {
  json doc = json::object();
  doc["waypoint"] = block;
  // meshConfig.extensionProviders come inside the block (the controller reads
  // them from the ConfigMap istio); the document has them at the top level,
  // where a waypoint's file has them.
  if (auto ep = block.find("extensionProviders"); ep != block.end()) {
    doc["extensionProviders"] = *ep;
    doc["waypoint"].erase("extensionProviders");
  }
  for (const char* a : {"virtualServices", "destinationRules", "httpRoutes", "requestAuthentications"})
    doc[a] = json::array();
  for (const auto& [id, obj] : routing_) doc[array_of(push::resource_kind(id))].push_back(obj);
  json pol = json::array();
  for (const auto& [id, obj] : policies_) pol.push_back(obj);
  doc["policies"] = std::move(pol);
  return doc;
}

std::map<std::string, std::string> ControllerSource::apply(push::ControllerClient::Update&& u) {
  std::map<std::string, std::string> rejected;
  auto reject = [&](const std::string& id, const std::string& why) {
    rejected[id] = why;
    spdlog::warn("controller resource {} rejected (its previous version stays): {}", id, why);
  };
  std::optional<json> prev_block = block_;
  if (u.snapshot) {
    builder_->clear();
    routing_.clear();
    policies_.clear();
    block_.reset();
  }
  for (const auto& id : u.removes) {
    auto k = push::resource_kind(id);
    if (push::node_kind(k)) builder_->remove(id);
    if (k == ResourceKind::kPolicy) policies_.erase(id);
    routing_.erase(id);
    if (id == block_id_) block_.reset();
  }
  for (auto& [id, body] : u.upserts) {
    auto k = push::resource_kind(id);
    if (push::node_kind(k)) {
      if (auto r = builder_->upsert(id, body); !r) {
        reject(id, r.error().message);
        continue;
      }
      if (k == ResourceKind::kPolicy) policies_[id] = std::move(body);
    } else if (array_of(k)) {
      if (std::string why = check_routing_object(body, state_.get()); !why.empty()) {
        reject(id, why);
        continue;
      }
      routing_[id] = std::move(body);
    } else if (id == block_id_) {
      if (!body.is_object() || body.value("name", "") != opts_.gateway ||
          body.value("namespace", "") != opts_.waypoint_ns) {
        reject(id, "the waypoint block must be an object naming " + opts_.waypoint_ns + "/" + opts_.gateway);
        continue;
      }
      block_ = std::move(body);
    } else {
      reject(id, "not a resource a waypoint reads");
    }
  }
  std::map<std::string, std::string> conflicts;
  auto mesh = builder_->build(&conflicts);
  for (const auto& [id, why] : conflicts) reject(id, why);
  if (!block_) {
    spdlog::info("waiting for the waypoint block of pod {}/{} ({})", opts_.waypoint_ns, opts_.pod, block_id_);
    return rejected;
  }
  auto st = build_state(document(*block_), mesh);
  bool block_changed = !prev_block || *prev_block != *block_;
  if (st.ok() && on_state_)
    if (auto r = on_state_(*st); !r) st = r.error();
  if (!st.ok()) {
    // Only the waypoint block can make the whole document fail: refuse it
    // and keep serving the previous State.
    reject(block_id_, st.error().message);
    if (block_changed) block_ = prev_block;
    return rejected;
  }
  state_ = *st;
  for (const auto& w : state_->warnings) spdlog::warn("configuration: {}", w);
  if (certs_) certs_->set_wanted({state_->self.identity});
  return rejected;
}

json ControllerSource::status_json() const {
  json c = {{"connected", client_ && client_->connected()},
            {"epoch", client_ ? client_->epoch() : ""},
            {"version", client_ ? client_->version() : 0},
            {"lastError", client_ ? client_->last_error() : ""}};
  return {{"controller", std::move(c)}, {"certificates", certs_ ? certs_->status_json() : json()}};
}

}  // namespace warren::waypoint
