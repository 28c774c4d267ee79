#include "app.h"

#include <spdlog/spdlog.h>

#include <filesystem>

#include "app_impl.h"
#include "warren/csr.h"
#include "warren/push_proto.h"

namespace warren::controller {

namespace fs = std::filesystem;

// Forwards the model's verdicts (which it logs itself) to the source's own
// listener (Kubernetes status) when there is one.
void LogListener::rejected(const ObjectKey& key, const std::string& origin,
                           const std::string& message) {
  if (next) next->rejected(key, origin, message);
}

void LogListener::accepted(const ObjectKey& key, const std::string& origin) {
  if (next) next->accepted(key, origin);
}

void FlushingSink::upsert(const std::string& origin, nlohmann::json obj) {
  app->model->upsert(origin, std::move(obj));
  app->schedule_flush();
}
void FlushingSink::remove(const ObjectKey& key) {
  app->model->remove(key);
  app->schedule_flush();
}
void FlushingSink::synced() {
  app->model->synced();
  app->schedule_flush();
}

App::App(uv_loop_t* loop, AppOptions opts) : impl_(std::make_unique<Impl>(loop, std::move(opts))) {}
App::~App() { stop(); }
SockAddr App::push_address() const { return impl_->push ? impl_->push->local() : SockAddr{}; }
SockAddr App::monitoring_address() const { return impl_->monitoring_addr; }
std::string App::trust_bundle_file() const { return impl_->opts.state_dir + "/root-cert.pem"; }
metrics::Registry& App::registry() { return impl_->registry; }
void App::stop() { impl_->stop(); }


void App::Impl::schedule_flush() {
  if (flush_pending) return;
  flush_pending = true;
  flush_timer.start(opts.flush_delay_ms, 0, [this] { flush(); });
}

void App::Impl::flush() {
  flush_pending = false;
  if (!model->is_synced()) return;
  place_waypoints();
  if (jwks) jwks->set_uris(model->jwks_uris());  // new URIs are fetched; on_change flushes again
  auto start = std::chrono::steady_clock::now();
  Delta d = model->flush();
  if (d.empty() && published_once) return;
  push->publish(d);
  published_once = true;
  auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  spdlog::info("config version {}: {} resources changed, {} removed ({:.1f} ms); {} nodes connected",
               model->version(), d.upserts.size(), d.removes.size(), ms, push->connected());
}

Result<void> App::Impl::issue_serving_cert() {
  auto key = certs::generate_p256_key();
  if (!key) return key.error();
  std::string id = "spiffe://" + opts.trust_domain + "/ns/" + push::kControllerNs + "/sa/" +
                   push::kControllerSa;
  auto csr = certs::make_csr_pem(key->get(), id);
  if (!csr) return csr.error();
  auto chain = ca->sign(*csr, id, opts.cert_ttl);
  if (!chain) return chain.error().wrap("issuing the controller's serving certificate");
  auto certs = certs::read_certs_pem(*chain);
  if (!certs) return certs.error();
  certs::Identity ident;
  ident.spiffe_id = id;
  ident.leaf = std::move((*certs)[0]);
  for (size_t i = 1; i < certs->size(); ++i) ident.chain.push_back(std::move((*certs)[i]));
  ident.key = std::move(*key);
  ident.not_before = certs::not_before_of(ident.leaf.get());
  ident.not_after = certs::not_after_of(ident.leaf.get());
  auto ctx = tls::make_push_server_ctx(ident);
  if (!ctx) return ctx.error();
  serving_ctx = std::move(*ctx);
  // Renew at half-life; connections made with the old context keep it.
  auto life = ident.not_after - std::chrono::system_clock::now();
  auto half = std::chrono::duration_cast<std::chrono::milliseconds>(life / 2);
  serving_timer.start(std::max<int64_t>(half.count(), 1000), 0, [this] {
    if (auto r = issue_serving_cert(); !r)
      spdlog::error("renewing the serving certificate: {}", r.error().message);
    else if (push)
      push->set_tls_ctx(std::move(serving_ctx));
  });
  return {};
}

Result<void> App::Impl::start() {
  std::error_code ec;
  fs::create_directories(opts.state_dir, ec);
  if (ec) return make_error(Errc::kInvalidArgument, opts.state_dir + ": " + ec.message());

  // The model and what it tells the user.
  ModelOptions mo;
  mo.trust_domain = opts.trust_domain;
  mo.root_namespace = opts.root_namespace;
  jwks = std::make_unique<JwksResolver>(loop);
  mo.request_authentication_transform = [this](const nlohmann::json& ra) {
    return jwks ? inline_jwks(ra, *jwks) : ra;
  };
  model = std::make_unique<Model>(mo, &log_listener);
  jwks->set_on_change([this] {
    model->refresh_kind("RequestAuthentication");
    schedule_flush();
  });

  // Authentication first: in Kubernetes mode it makes the API client the CA
  // may need (--ca-secret).
  if (auto r = start_auth(); !r) return r;
  if (auto r = start_ca(); !r) return r;
  if (auto r = certs::write_file_atomic(opts.state_dir + "/root-cert.pem", ca->trust_bundle_pem(), 0644); !r)
    return r.error().wrap("writing the trust bundle");
  if (auto r = issue_serving_cert(); !r) return r;

  SignFn sign = [this](const std::string& csr, const std::string& id) {
    return ca->sign(csr, id, opts.cert_ttl);
  };
  PushOptions po;
  po.listen = opts.listen;
  push = std::make_unique<PushServer>(loop, *model, *auth, sign, std::move(serving_ctx), registry, po);
  push->set_trust_bundle(ca->trust_bundle_pem());
  if (auto r = push->start(); !r) return r;
  if (auto r = start_monitoring(); !r) return r;
  if (!opts.waypoint_launcher.empty()) {
    if (opts.manifests_dir.empty())
      return make_error(Errc::kInvalidArgument, "--waypoint-launcher is for local mode (--manifests)");
    launcher = std::make_unique<WaypointLauncher>(loop, opts.waypoint_launcher);
  }
  return start_source();
}

void App::Impl::place_waypoints() {
  if ((!launcher && !deployer) || model->waypoints_generation() == placed_generation) return;
  placed_generation = model->waypoints_generation();
  if (launcher) launcher->sync(model->waypoint_gateways());
  if (deployer) deployer->sync(model->waypoint_gateways());
}

void App::Impl::stop() {
  if (stopped) return;
  stopped = true;
  stop_source();
  flush_timer.stop();
  serving_timer.stop();
  secret_timer.stop();
  if (launcher) launcher->stop();
  if (deployer) deployer->stop();
  if (push) push->stop();
  if (monitoring) monitoring->close();
  jwks.reset();  // its timers and HTTP clients close on the loop
}

Result<void> App::start() { return impl_->start(); }

}  // namespace warren::controller
