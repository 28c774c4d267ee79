// The controller's Kubernetes source (DESIGN.md §6): lists and watches every
// kind of source.h kKinds and feeds the cluster model, elects a leader
// among controller replicas, writes validation verdicts to object status
// while leading, and offers the TokenReview and Secret calls the push server
// and the CA need. Everything runs on one libuv loop thread (HTTP is libcurl's
// multi interface driven by that loop, see http_client.h), so every Sink,
// ValidationListener and user callback runs on it, with no worker threads.
//
// From controller main:
//
//   k8s::ConfigOptions co;
//   co.kubeconfig = flags.kubeconfig;       // "" = in-cluster / $KUBECONFIG / ~/.kube/config
//   co.context = flags.context;
//   auto cluster = k8s::load_cluster_config(co);
//   if (!cluster) die(cluster.error());
//   k8s::SourceOptions so;
//   so.lease.ns = flags.lease_namespace;    // default warren-system/warren-controller
//   auto src = k8s::KubernetesSource::create(loop, *cluster, so);
//   if (!src) die(src.error());
//   Model model(model_opts, (*src)->validation_listener());
//   (*src)->on_leader_change([](bool leader) { ... });
//   (*src)->start(&model);                  // lists, watches; synced() once all are listed
//   ...
//   (*src)->token_review(token, [](Result<k8s::TokenReviewResult> r) { ... });
//   (*src)->get_secret("warren-system", "cacerts", [](auto data) { ... });
//
// synced() reaches the Sink once every kind has been listed once; a kind
// whose CRD is not installed counts as listed (empty) and is listed again
// every WatchOptions::absent_retry (see watcher.h).
//
// Destroy the source on the loop thread, and not from inside one of its own
// callbacks (a Sink call, a leader-change or token_review callback); its
// libuv handles close on the next loop iteration, so run the loop once more
// before uv_loop_close().
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "k8s/api_calls.h"
#include "k8s/http_client.h"
#include "k8s/kubeconfig.h"
#include "k8s/lease.h"
#include "k8s/status_writer.h"
#include "k8s/watcher.h"
#include "source.h"

namespace warren::controller::k8s {

struct SourceOptions {
  // Kinds to watch; empty = every kind of source.h kKinds.
  std::vector<std::string> kinds;
  // Also watch the ConfigMap istio (meshConfig, mesh_config.h) of this
  // namespace, alone (fieldSelector); empty: not watched.
  std::string mesh_config_namespace;
  WatchOptions watch;
  bool leader_election = true;  // false: never lead, never write status
  LeaseOptions lease;
  StatusOptions status;
  ClientOptions client;
};

class KubernetesSource {
 public:
  static Result<std::unique_ptr<KubernetesSource>> create(uv_loop_t* loop, ClusterConfig cluster,
                                                          SourceOptions opts = {});
  ~KubernetesSource();
  KubernetesSource(const KubernetesSource&) = delete;
  KubernetesSource& operator=(const KubernetesSource&) = delete;

  // Starts listing/watching into `sink` and leader election. Call once.
  void start(Sink* sink);
  // Stops watching and renewing; no Sink call after. The Lease then expires,
  // or, with release_lease, a leader releases it at once (one more API call
  // on the loop, 2 s at most).
  void stop(bool release_lease = false);

  // Hand this to the Model; it writes status only while leading.
  ValidationListener* validation_listener() { return &status_; }

  bool synced() const { return synced_; }
  bool is_leader() const { return elector_ && elector_->is_leader(); }
  void on_leader_change(std::function<void(bool)> cb);

  void token_review(std::string token, TokenReviewFn cb,
                    std::vector<std::string> audiences = {});
  void get_secret(const std::string& ns, const std::string& name, SecretFn cb);

  Client& client() { return *client_; }
  LeaderElector* elector() { return elector_.get(); }
  StatusWriter& status_writer() { return status_; }
  // nullptr for a kind not watched.
  const KindWatcher* watcher(const std::string& kind) const;
  // Objects currently held (keys only), over all kinds.
  size_t object_count() const;

 private:
  KubernetesSource(std::unique_ptr<Client> client, SourceOptions opts);
  void on_kind_listed();

  std::unique_ptr<Client> client_;
  SourceOptions opts_;
  StatusWriter status_;
  std::unique_ptr<LeaderElector> elector_;
  std::vector<std::unique_ptr<KindWatcher>> watchers_;
  Sink* sink_ = nullptr;
  size_t listed_ = 0;
  bool synced_ = false;
  bool started_ = false;
};

}  // namespace warren::controller::k8s
