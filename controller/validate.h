// Validation of the Kubernetes objects the sources feed in. An invalid object
// rejects only itself; the model keeps its last good version (model.h).
//
// Problems name a field with a dotted path ("spec.rules[0].to[0]"), and a
// rejection message names the origin and the object too:
//   shop/policy.yaml: AuthorizationPolicy shop/deny-db: spec.rules[0].to[0].operation.ports[0]: "80a" is not a port
//
// AuthorizationPolicy and PeerAuthentication go through warren-node's own
// parser (warren::config::parse), as the node will receive them, so the
// controller never sends what a node would reject. The other kinds are checked
// on the fields the controller reads (types, names, IPs, ports, selectors...);
// unknown fields are not errors for them, so existing Istio and Kubernetes
// YAML is accepted unchanged.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <vector>

#include "source.h"

namespace warren::controller {

struct Problem {
  std::string path;     // dotted; empty for the object itself
  std::string message;  // "is required", "\"80a\" is not a port"
};
using Problems = std::vector<Problem>;

// Whether `kind` is one of kKinds.
bool is_known_kind(std::string_view kind);
// Namespace and Node have no namespace; every other known kind has one.
bool is_cluster_scoped(std::string_view kind);
// The apiVersions accepted for a kind ("v1", "security.istio.io/v1", ...).
const std::vector<std::string>& api_versions(std::string_view kind);

// Checks an object of a known kind: type metadata (apiVersion matching the
// kind), object metadata (name, namespace, labels, annotations) and the
// fields of that kind. A missing apiVersion is accepted (Kubernetes list
// responses leave it out of items). Empty when valid.
Problems validate_object(const nlohmann::json& obj);

// The AuthorizationPolicy or PeerAuthentication as nodes receive it:
// apiVersion, kind, metadata {name, namespace, annotations (istio.io and
// warren.io ones only)}, spec and any other top-level field but status (so a
// misspelt top-level field is still reported by the node's parser).
nlohmann::json node_policy_object(const nlohmann::json& obj);

// One line per problem: "<origin>: <Kind> <ns>/<name>: <path>: <message>"
// (the path part left out when empty), lines joined by '\n'.
std::string format_problems(const std::string& origin, const ObjectKey& key, const Problems& problems);

// A JSON pointer into `obj` as a dotted path: "/spec/rules/0/to/0" →
// "spec.rules[0].to[0]"; keys that are not plain identifiers are quoted:
// "/metadata/annotations/istio.io~1dry-run" → metadata.annotations["istio.io/dry-run"].
std::string pointer_to_path(const nlohmann::json& obj, std::string_view pointer);

// Path building: "a" + "b" → "a.b" (or a["b.c"]), "a" + 3 → "a[3]".
std::string field_path(const std::string& path, std::string_view key);
std::string index_path(const std::string& path, size_t i);

}  // namespace warren::controller
