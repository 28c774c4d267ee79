// The fake API server's object store: what etcd plus the API server's
// registry do, reduced to what the controller's tests need, with no I/O.
//
// - One global resourceVersion counter (like etcd's revision): every create,
//   update, patch and delete takes the next number; each object carries the
//   version of its last change.
// - Per resource type, the history of watch events (ADDED/MODIFIED/DELETED),
//   so a watch from resourceVersion R replays everything after R. compact()
//   forgets history: watches from older versions and continue tokens minted
//   before then get 410 Gone, as after an etcd compaction.
// - Lists in key order ("<ns>/<name>"), with limit/continue paging. Items of
//   built-in types come without kind/apiVersion, as the real API server's
//   typed lists encode them; custom resources (CRDs) keep theirs.
// - Errors are Kubernetes Status objects with the real reasons and codes
//   (NotFound 404, AlreadyExists 409, Conflict 409, Expired 410, Invalid 422).
//
// Not thread-safe: the server thread owns it.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace warren::fakes {

struct ResourceType {
  std::string kind, group, version, plural;
  bool namespaced = true;
  bool builtin = true;  // false: a custom resource (CRD)
  std::string api_version() const { return group.empty() ? version : group + "/" + version; }
};

// The types the fake serves: the controller's 13 kinds plus Lease, Secret,
// ConfigMap and Deployment (waypoints).
const std::vector<ResourceType>& resource_types();
const ResourceType* find_type_by_kind(const std::string& kind);
const ResourceType* find_type(const std::string& group, const std::string& version,
                              const std::string& plural);

// A response: HTTP status and body (the object, a list, or a Status).
struct Outcome {
  int code = 200;
  nlohmann::json body;
  bool ok() const { return code >= 200 && code < 300; }
};

nlohmann::json make_status(int code, const std::string& reason, const std::string& message);

struct WatchEvent {
  uint64_t rv = 0;
  std::string type;  // ADDED, MODIFIED, DELETED
  nlohmann::json object;
};

class Store {
 public:
  // Called after each change, with the event (the object has kind/apiVersion).
  using Listener = std::function<void(const ResourceType&, const WatchEvent&)>;
  explicit Store(uint64_t first_rv = 1000);
  void set_listener(Listener l) { listener_ = std::move(l); }

  uint64_t resource_version() const { return rv_; }
  uint64_t compacted() const { return compacted_; }
  void compact() { compacted_ = rv_; }

  // Whether a type's API is installed (false: every request gets 404).
  void set_served(const std::string& kind, bool served);
  bool served(const ResourceType& t) const;

  Outcome create(const ResourceType& t, nlohmann::json obj, const std::string& ns = {});
  // PUT: replaces the object; a metadata.resourceVersion that is set must match.
  Outcome update(const ResourceType& t, nlohmann::json obj);
  // RFC 7386 merge patch of the object, or only of its status (status
  // subresource). A metadata.resourceVersion in the patch is a precondition.
  Outcome patch(const ResourceType& t, const std::string& ns, const std::string& name,
                const nlohmann::json& patch, bool status_only);
  Outcome remove(const ResourceType& t, const std::string& ns, const std::string& name);
  Outcome get(const ResourceType& t, const std::string& ns, const std::string& name) const;
  std::optional<nlohmann::json> find(const ResourceType& t, const std::string& ns,
                                     const std::string& name) const;

  // `ns` empty: every namespace. `limit` 0: no paging.
  Outcome list(const ResourceType& t, const std::string& ns, size_t limit,
               const std::string& cont) const;

  // Events of `t` (in `ns`, or all) after `rv`, for a watch; 410 Expired
  // Status when rv is older than the last compaction. rv "" or "0" gives
  // ADDED events for every current object instead.
  Outcome events_since(const ResourceType& t, const std::string& ns, const std::string& rv,
                       std::vector<WatchEvent>* out) const;

  size_t object_count(const ResourceType& t) const;

 private:
  using Objects = std::map<std::string, nlohmann::json>;  // "<ns>/<name>" or "<name>"
  static std::string key(const ResourceType& t, const std::string& ns, const std::string& name);
  void emit(const ResourceType& t, const std::string& type, const nlohmann::json& obj);
  nlohmann::json with_type(const ResourceType& t, nlohmann::json obj) const;

  uint64_t rv_;
  uint64_t compacted_ = 0;
  std::map<std::string, Objects> objects_;                 // by plural.group
  std::map<std::string, std::vector<WatchEvent>> history_;  // by plural.group
  std::map<std::string, bool> served_;                     // by kind; default true
  Listener listener_;
};

}  // namespace warren::fakes
