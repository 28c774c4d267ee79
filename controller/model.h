// The cluster model: every object the sources feed in, validated, and its
// translation into the resources warren-node reads (DESIGN.md §6). Owned by
// the controller's loop thread.
//
// Resources are node-independent JSON fragments in the shape of warren-node's
// config (common/include/warren/config.h), each under a stable id:
//   workload/<uid>            one element of "workloads"
//   service/<ns>/<name>       one element of "services"
//   policy/<ns>/<name>        one element of "policies" (the Istio object)
//   peerauth/<ns>/<name>      one element of "peerAuthentications"
//   namespace/<name>          one element of "namespaces" ({name, labels})
// A node's config is its own bootstrap (name, address, listeners, capture)
// plus every resource.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "source.h"

namespace warren::controller {

using ResourcePtr = std::shared_ptr<const nlohmann::json>;

// One translated change: what to upsert and what to remove, at `version`.
struct Delta {
  uint64_t version = 0;
  std::vector<std::pair<std::string, ResourcePtr>> upserts;  // id, body
  std::vector<std::string> removes;                          // ids
  bool empty() const { return upserts.empty() && removes.empty(); }
};

struct ModelOptions {
  std::string trust_domain = "cluster.local";
  std::string root_namespace = "istio-system";
};

class Model : public Sink {
 public:
  explicit Model(ModelOptions opts, ValidationListener* listener = nullptr);
  ~Model() override;

  // Sink: record the change; translation happens in flush().
  void upsert(const std::string& origin, nlohmann::json obj) override;
  void remove(const ObjectKey& key) override;
  void synced() override;
  bool is_synced() const;

  // Translates everything changed since the last flush. Returns the resources
  // that changed (version = previous + 1), or an empty Delta (version
  // unchanged) when nothing the nodes see changed.
  Delta flush();

  uint64_t version() const;
  // Every current resource, by id.
  const std::map<std::string, ResourcePtr>& resources() const;

  // Whether a pod running as `spiffe_id` is scheduled on `node` (the CA's
  // check before it signs).
  bool identity_on_node(const std::string& node, const std::string& spiffe_id) const;

  // Objects rejected by validation, with their messages (for /debug and tests).
  std::map<ObjectKey, std::string> rejected() const;
  size_t object_count() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace warren::controller
