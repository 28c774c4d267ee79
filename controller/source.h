// What feeds the controller's cluster model: the Kubernetes API or a local
// directory of manifests. A source turns what it sees into upserts and removes
// of whole Kubernetes objects; the model validates, keeps the last good
// version of each object and translates.
//
// Every Sink call happens on the controller's event loop thread (a source
// that works on another thread hands its events over with uv_async).
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace warren::controller {

// Kinds the controller understands, as Kubernetes spells them.
inline constexpr const char* kKinds[] = {
    "Namespace",      "Pod",          "Service",      "EndpointSlice",
    "ServiceAccount", "Node",         "AuthorizationPolicy", "PeerAuthentication",
    "RequestAuthentication", "VirtualService", "DestinationRule", "Gateway",
    "HTTPRoute"};

struct ObjectKey {
  std::string kind;  // "Pod", "AuthorizationPolicy", ...
  std::string ns;    // empty for cluster-scoped kinds (Namespace, Node)
  std::string name;
  // "AuthorizationPolicy shop/deny-db", "Namespace shop"
  std::string to_string() const { return kind + " " + (ns.empty() ? name : ns + "/" + name); }
  bool operator==(const ObjectKey&) const = default;
  auto operator<=>(const ObjectKey&) const = default;
};

// The key of a Kubernetes JSON object (kind, metadata.namespace, metadata.name);
// fields that are missing come back empty.
ObjectKey key_of(const nlohmann::json& obj);

class Sink {
 public:
  virtual ~Sink() = default;
  // An object added or changed, as Kubernetes JSON (apiVersion, kind, metadata,
  // spec, ...). `origin` says where it came from, for error messages: a path
  // relative to the manifests directory ("shop/policy.yaml") or "kubernetes".
  virtual void upsert(const std::string& origin, nlohmann::json obj) = 0;
  // An object is gone. Removing an object the model does not hold is a no-op.
  virtual void remove(const ObjectKey& key) = 0;
  // The source's first complete view is in (every kind listed once): until
  // then the controller does not push, so nodes never see a half-listed cluster.
  virtual void synced() = 0;
};

// Told whether each object was accepted, so a source can surface the reason
// where the user looks (the object's status in Kubernetes, the log locally).
class ValidationListener {
 public:
  virtual ~ValidationListener() = default;
  // `message` names the origin, the object and the field:
  //   shop/policy.yaml: AuthorizationPolicy shop/deny-db: spec.rules[0].to[0].operation.ports[0]: "80a" is not a port
  virtual void rejected(const ObjectKey& key, const std::string& origin, const std::string& message) = 0;
  virtual void accepted(const ObjectKey& key, const std::string& origin) {}
};

}  // namespace warren::controller
