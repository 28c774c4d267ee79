#include "k8s/kube_source.h"

#include <spdlog/spdlog.h>

#include "mesh_config.h"

namespace warren::controller::k8s {

Result<std::unique_ptr<KubernetesSource>> KubernetesSource::create(uv_loop_t* loop,
                                                                   ClusterConfig cluster,
                                                                   SourceOptions opts) {
  for (const auto& k : opts.kinds) {
    const KindInfo* info = find_kind(k);
    bool watched = false;
    for (const KindInfo* w : watched_kinds()) watched = watched || w == info;
    if (!watched) return make_error(Errc::kInvalidArgument, "kubernetes: unknown kind \"" + k + "\"");
  }
  auto client = Client::create(loop, std::move(cluster), opts.client);
  if (!client) return client.error();
  return std::unique_ptr<KubernetesSource>(
      new KubernetesSource(std::move(*client), std::move(opts)));
}

KubernetesSource::KubernetesSource(std::unique_ptr<Client> client, SourceOptions opts)
    : client_(std::move(client)), opts_(std::move(opts)), status_(client_.get(), opts_.status) {
  if (opts_.leader_election) {
    elector_ = std::make_unique<LeaderElector>(client_.get(), opts_.lease);
    elector_->on_change([this](bool leader) { status_.set_leader(leader); });
  }
}

KubernetesSource::~KubernetesSource() {
  // Members are destroyed in reverse order: watchers and the elector cancel
  // their calls on the client, which goes last.
  watchers_.clear();
  elector_.reset();
}

void KubernetesSource::on_leader_change(std::function<void(bool)> cb) {
  if (elector_) elector_->on_change(std::move(cb));
}

void KubernetesSource::start(Sink* sink) {
  if (started_) return;
  started_ = true;
  sink_ = sink;
  std::vector<const KindInfo*> kinds;
  if (opts_.kinds.empty()) {
    kinds = watched_kinds();
  } else {
    for (const auto& k : opts_.kinds) kinds.push_back(find_kind(k));
  }
  spdlog::info("kubernetes: watching {} kinds on {}", kinds.size(), client_->config().server);
  if (!opts_.mesh_config_namespace.empty()) {
    // meshConfig: the one ConfigMap, not every ConfigMap of the cluster.
    WatchOptions wo = opts_.watch;
    wo.ns = opts_.mesh_config_namespace;
    wo.field_selector = std::string("metadata.name=") + kMeshConfigMapName;
    KindWatcher::Hooks hooks;
    hooks.sink = sink;
    hooks.on_listed = [this] { on_kind_listed(); };
    watchers_.push_back(std::make_unique<KindWatcher>(client_.get(), *find_kind("ConfigMap"), wo, hooks));
    spdlog::info("kubernetes: meshConfig from ConfigMap {}/{}", wo.ns, kMeshConfigMapName);
  }
  for (const KindInfo* k : kinds) {
    KindWatcher::Hooks hooks;
    hooks.sink = sink;
    hooks.on_listed = [this] { on_kind_listed(); };
    if (k->status_writable) {
      hooks.before_upsert = [this](const nlohmann::json& obj) { status_.observe(obj); };
      hooks.before_remove = [this](const ObjectKey& key) { status_.forget(key); };
    }
    watchers_.push_back(std::make_unique<KindWatcher>(client_.get(), *k, opts_.watch, hooks));
  }
  // Start after every watcher exists: on_kind_listed counts them.
  for (auto& w : watchers_) w->start();
  if (elector_) elector_->start();
}

void KubernetesSource::stop(bool release_lease) {
  for (auto& w : watchers_) w->stop();
  if (!elector_) return;
  if (release_lease) elector_->release();
  else elector_->stop();
}

void KubernetesSource::on_kind_listed() {
  if (++listed_ < watchers_.size() || synced_) return;
  synced_ = true;
  spdlog::info("kubernetes: synced ({} objects)", object_count());
  if (sink_) sink_->synced();
}

const KindWatcher* KubernetesSource::watcher(const std::string& kind) const {
  for (const auto& w : watchers_) {
    if (kind == w->kind().kind) return w.get();
  }
  return nullptr;
}

size_t KubernetesSource::object_count() const {
  size_t n = 0;
  for (const auto& w : watchers_) n += w->object_count();
  return n;
}

void KubernetesSource::token_review(std::string token, TokenReviewFn cb,
                                    std::vector<std::string> audiences) {
  k8s::token_review(*client_, std::move(token), std::move(audiences), std::move(cb));
}

void KubernetesSource::get_secret(const std::string& ns, const std::string& name, SecretFn cb) {
  k8s::get_secret(*client_, ns, name, std::move(cb));
}

}  // namespace warren::controller::k8s
