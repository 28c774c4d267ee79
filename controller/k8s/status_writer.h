// Surfaces the model's validation verdicts where Kubernetes users look: the
// object's status. A ValidationListener (source.h) that writes only while
// this replica is the leader, never blocks the loop, and keeps state only for
// objects that are or were rejected.
//
// What is written (one shape for every kind it writes to):
//   status.conditions[type=Accepted] =
//     {type: "Accepted", status: "False", reason: "Invalid", message,
//      observedGeneration, lastTransitionTime}
//   and, once a rejected object is accepted again,
//     {type: "Accepted", status: "True", reason: "Accepted", message: "", ...}
// Other conditions in status.conditions are kept. HTTPRoute's status has no
// top-level conditions (Gateway API): there the condition goes into
// status.parents[], one entry per spec.parentRefs with controllerName
// "warren.io/controller", keeping other controllers' entries.
//
// Kinds written: the Istio kinds (AuthorizationPolicy, PeerAuthentication,
// RequestAuthentication, VirtualService, DestinationRule) and Gateway API's
// Gateway and HTTPRoute. Core kinds (Pod, Service, ...) are left alone: their
// status belongs to the kubelet and other controllers; their rejections are
// only in the controller's log.
//
// How: GET the object, merge the condition into its current status, PATCH
// .../<name>/status with application/merge-patch+json carrying
// metadata.resourceVersion (so a concurrent status change gives 409 and the
// write is redone, up to max_conflict_retries). Failed writes are retried
// after retry_delay. A message already present (observed on the object when
// the source sees it, e.g. written by a previous leader) is not written
// again, so the MODIFIED event caused by our own write settles; the source
// calls observe() with each object before the model sees it.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <map>
#include <string>

#include "k8s/http_client.h"
#include "source.h"

typedef struct uv_timer_s uv_timer_t;  // NOLINT: same declaration as uv.h

namespace warren::controller::k8s {

struct StatusOptions {
  std::string condition_type = "Accepted";
  std::string controller_name = "warren.io/controller";  // HTTPRoute status.parents
  std::chrono::milliseconds retry_delay{5'000};
  int max_conflict_retries = 3;
};

class StatusWriter : public ValidationListener {
 public:
  StatusWriter(Client* client, StatusOptions opts = {});
  ~StatusWriter() override;

  void rejected(const ObjectKey& key, const std::string& origin,
                const std::string& message) override;
  void accepted(const ObjectKey& key, const std::string& origin) override;

  // The object as the source is about to hand it to the model: notes the
  // Accepted condition it already carries.
  void observe(const nlohmann::json& obj);
  // The object was deleted.
  void forget(const ObjectKey& key);
  // Writing starts when leading (catching up on verdicts noted meanwhile).
  void set_leader(bool leader);

  // Objects whose status still has to be written.
  size_t pending() const;
  uint64_t writes() const { return writes_; }  // successful PATCHes

 private:
  enum class Cond { kNone, kTrue, kFalse };
  struct Entry {
    bool want_ok = false;
    std::string want_msg;
    Cond have = Cond::kNone;
    std::string have_msg;
    bool in_flight = false;
    int conflicts = 0;
  };
  static bool dirty(const Entry& e);
  void kick(const ObjectKey& key);
  void on_get(const ObjectKey& key, Result<HttpResponse> r);
  void on_patch(const ObjectKey& key, bool sent_ok, const std::string& sent_msg,
                Result<HttpResponse> r);
  nlohmann::json condition(const nlohmann::json& obj, bool ok, const std::string& msg) const;
  nlohmann::json status_patch(const ObjectKey& key, const nlohmann::json& obj, bool ok,
                              const std::string& msg) const;
  void retry_later();

  Client* client_;
  StatusOptions opts_;
  bool leader_ = false;
  std::map<ObjectKey, Entry> entries_;
  std::map<ObjectKey, Client::CallId> calls_;
  uv_timer_t* timer_ = nullptr;
  uint64_t writes_ = 0;
};

}  // namespace warren::controller::k8s
