// App: the CA, authentication, the source and the monitoring server, per
// mode (local manifests or Kubernetes).
#include <spdlog/spdlog.h>

#include "app_impl.h"
#include "k8s/kube_source.h"
#include "local_source.h"
#include "warren/push_proto.h"

namespace warren::controller {

namespace {

// Kubernetes mode: the node's service account token, checked with a
// TokenReview; the node is the one the (bound) token names.
class TokenReviewAuthenticator : public Authenticator {
 public:
  explicit TokenReviewAuthenticator(k8s::KubernetesSource* src) : src_(src) {}
  void authenticate(const std::string& token, const std::string& claimed,
                    std::function<void(Result<Principal>)> done) override {
    if (token.empty()) return done(make_error(Errc::kPermissionDenied, "no bearer token"));
    Principal want;
    bool waypoint = claimed.rfind(push::kWaypointPrincipalPrefix, 0) == 0;
    if (waypoint && !push::parse_waypoint_principal(claimed, &want.waypoint_ns, &want.waypoint))
      return done(make_error(Errc::kInvalidArgument, "\"" + claimed + "\" is not waypoint:<namespace>/<gateway>"));
    src_->token_review(token, [claimed, want, done](Result<k8s::TokenReviewResult> r) mutable {
      if (!r) return done(make_error(Errc::kUnavailable, "TokenReview: " + r.error().message));
      if (!r->authenticated)
        return done(make_error(Errc::kPermissionDenied, "token not authenticated: " + r->error));
      static const std::string kPrefix = "system:serviceaccount:";
      if (r->username.rfind(kPrefix, 0) != 0)
        return done(make_error(Errc::kPermissionDenied, r->username + " is not a service account"));
      // system:serviceaccount:<ns>:<sa>
      std::string rest = r->username.substr(kPrefix.size());
      auto colon = rest.find(':');
      std::string sa_ns = rest.substr(0, colon), sa = colon == std::string::npos ? "" : rest.substr(colon + 1);
      if (want.is_waypoint()) {
        // A waypoint's pod: any service account of the Gateway's namespace,
        // which then may only obtain its own identity.
        if (sa_ns != want.waypoint_ns || sa.empty())
          return done(make_error(Errc::kPermissionDenied, r->username + " may not act as a waypoint of namespace " +
                                                              want.waypoint_ns));
        want.service_account = sa;
        return done(std::move(want));
      }
      if (sa != "warren-node")
        return done(make_error(Errc::kPermissionDenied,
                               r->username + " is not a warren-node service account"));
      std::string node = r->node_name();
      if (node.empty())
        return done(make_error(Errc::kPermissionDenied,
                               "the token names no node (use a bound service account token)"));
      if (!claimed.empty() && claimed != node)
        return done(make_error(Errc::kPermissionDenied,
                               "token belongs to node " + node + ", not " + claimed));
      Principal p;
      p.node = node;
      done(std::move(p));
    });
  }

 private:
  k8s::KubernetesSource* src_;
};

}  // namespace

App::Impl::Impl(uv_loop_t* l, AppOptions o)
    : loop(l), opts(std::move(o)), flush_timer(l), serving_timer(l), secret_timer(l) {
  sink.app = this;
}
App::Impl::~Impl() = default;

Result<void> App::Impl::start_ca() {
  if (!opts.ca_secret.empty()) {
    if (auto r = load_ca_secret(); !r) return r;
    poll_ca_secret();
    return {};
  }
  CaOptions co;
  co.trust_domain = opts.trust_domain;
  co.cert_file = opts.ca_cert;
  co.key_file = opts.ca_key;
  co.chain_file = opts.ca_chain;
  co.extra_roots_file = opts.ca_extra_roots;
  co.state_dir = opts.state_dir;
  co.workload_ttl = opts.cert_ttl;
  auto r = CertificateAuthority::create(co);
  if (!r) return r.error().wrap("certificate authority");
  ca = std::make_unique<CertificateAuthority>(std::move(*r));
  spdlog::info("CA: {} root, trust bundle {}", ca->generated_root() ? "generated" : "user-supplied",
               ca->roots_fingerprint().substr(0, 16));
  return {};
}

Result<void> App::Impl::start_auth() {
  if (!opts.manifests_dir.empty()) {
    if (opts.bootstrap_tokens.empty())
      return make_error(Errc::kInvalidArgument,
                        "local mode needs --bootstrap-tokens FILE (lines \"<token> [<node>|waypoint:<ns>/<gateway>]\")");
    auto a = std::make_unique<TokenFileAuthenticator>(opts.bootstrap_tokens);
    if (auto r = a->load(); !r) return r;
    auth = std::move(a);
    return {};
  }
  k8s::ConfigOptions co;
  co.kubeconfig = opts.kubeconfig;
  auto cluster = k8s::load_cluster_config(co);
  if (!cluster) return cluster.error().wrap("Kubernetes configuration");
  k8s::SourceOptions so;
  so.mesh_config_namespace = opts.root_namespace;  // meshConfig: ConfigMap istio (mesh_config.h)
  auto src = k8s::KubernetesSource::create(loop, *cluster, so);
  if (!src) return src.error();
  kube = std::move(*src);
  log_listener.next = kube->validation_listener();
  auth = std::make_unique<TokenReviewAuthenticator>(kube.get());
  return {};
}

Result<void> App::Impl::start_source() {
  if (!opts.manifests_dir.empty()) {
    local = std::make_unique<LocalSource>(loop, opts.manifests_dir, &sink, &log_listener);
    local->set_on_batch([this] { flush(); });
    if (auto r = local->start(); !r) return r;
    spdlog::info("local mode: manifests under {}", opts.manifests_dir);
    return {};
  }
  if (!opts.waypoint_template.empty()) {
    WaypointDeployerOptions wo;
    wo.template_file = opts.waypoint_template;
    wo.image = opts.waypoint_image;
    wo.controller = opts.waypoint_controller_address;
    wo.trust_domain = opts.trust_domain;
    wo.root_namespace = opts.root_namespace;
    auto d = WaypointDeployer::create(loop, kube->client(), wo);
    if (!d) return d.error().wrap("waypoint template");
    deployer = std::move(*d);
    deployer->set_trust_bundle(ca->trust_bundle_pem());
  }
  kube->on_leader_change([this](bool leader) {
    spdlog::info("leader election: {}", leader ? "this replica leads (writes status, deploys waypoints)"
                                               : "this replica follows (serves nodes only)");
    if (deployer) deployer->set_leader(leader);
  });
  kube->start(&sink);
  return {};
}

void App::Impl::stop_source() {
  if (local) local->stop();
  // A leader hands the Lease over at once rather than after its duration (as
  // client-go's ReleaseOnCancel); the loop runs until that call ends (2 s at most).
  if (kube) kube->stop(/*release_lease=*/true);
}

Result<void> App::Impl::start_monitoring() {
  monitoring = std::make_unique<http::Server>(loop);
  monitoring->route("GET", "/metrics", [this](const http::Request&) {
    http::Response r;
    r.content_type = std::string(metrics::Registry::kContentType);
    r.body = registry.render();
    return r;
  });
  monitoring->route("GET", "/healthz/ready", [this](const http::Request&) {
    bool ok = model->is_synced() && published_once;
    return http::Response{ok ? 200 : 503, "text/plain", ok ? "ready\n" : "not synced\n", {}};
  });
  monitoring->route("GET", "/debug/nodes", [this](const http::Request&) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& n : push->status()) {
      nlohmann::json rej = nlohmann::json::object();
      for (const auto& [id, why] : n.rejected) rej[id] = why;
      j.push_back({{"node", n.node}, {"peer", n.peer}, {"connected", n.connected},
                   {"sent", n.sent}, {"acked", n.acked}, {"rejected", rej}});
    }
    nlohmann::json out = {{"epoch", push->epoch()}, {"version", model->version()}, {"nodes", j}};
    return http::Response{200, "application/json", out.dump(2) + "\n", {}};
  });
  monitoring->route("GET", "/debug/rejected", [this](const http::Request&) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& [key, msg] : model->rejected())
      j.push_back({{"object", key.to_string()}, {"message", msg}});
    return http::Response{200, "application/json", j.dump(2) + "\n", {}};
  });
  monitoring->route("GET", "/debug/resources", [this](const http::Request& req) {
    std::string prefix = req.query_param("prefix");
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [id, body] : model->resources())
      if (id.rfind(prefix, 0) == 0) j[id] = *body;
    return http::Response{200, "application/json", j.dump(2) + "\n", {}};
  });
  auto a = monitoring->listen(opts.monitoring);
  if (!a) return a.error().wrap("monitoring server");
  monitoring_addr = *a;
  spdlog::info("monitoring on http://{} (/metrics, /debug/nodes, /debug/rejected, /healthz/ready)",
               a->to_string());
  return {};
}

}  // namespace warren::controller
