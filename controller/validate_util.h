// Helpers the per-kind validators share (internal to validate*.cpp): field
// access with dotted paths ("spec.rules[0].to[0]") and the checks Kubernetes
// and Istio objects need. Wording follows warren-node's config parser
// ("is required", "\"80a\" is not a port") so messages read alike.
#pragma once

#include <nlohmann/json.hpp>

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include "validate.h"

namespace warren::controller::detail {

using json = nlohmann::json;

// A value for an error message: scalars as JSON, containers by kind.
std::string show(const json& v);

// DNS-1123 label: [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63.
bool dns_label(std::string_view s);
// DNS-1123 subdomain: labels joined by '.', at most 253.
bool dns_subdomain(std::string_view s);
// IANA service name (a named port): at most 15, [a-z0-9-], a letter, no "--".
bool port_name(std::string_view s);
// Go-style duration as Istio and Gateway API write it: "1s", "500ms", "1.5h", "1h30m".
bool duration(std::string_view s);

class Checker {
 public:
  Problems problems;

  void err(const std::string& path, std::string msg) { problems.push_back({path, std::move(msg)}); }

  // The field, or nullptr when absent or null (YAML's "key:" with no value).
  static const json* get(const json& obj, std::string_view key) {
    if (!obj.is_object()) return nullptr;
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }

  // A field that must be an object when present; nullptr when absent or wrong.
  const json* object(const json& parent, const std::string& path, std::string_view key,
                     bool required = false);
  // A field that must be a string; nullopt when absent or wrong.
  std::optional<std::string> string(const json& parent, const std::string& path, std::string_view key,
                                    bool required = false);
  // A boolean field, when present.
  void boolean(const json& parent, const std::string& path, std::string_view key);
  // An integer field within [lo, hi], when present (required: must be present).
  std::optional<int64_t> integer(const json& parent, const std::string& path, std::string_view key,
                                 int64_t lo, int64_t hi, bool required = false);
  // A port number (an integer 1..65535) field.
  std::optional<uint16_t> port(const json& parent, const std::string& path, std::string_view key,
                               bool required = false);
  // A string field that must be one of `names`.
  void enumeration(const json& parent, const std::string& path, std::string_view key,
                   std::initializer_list<std::string_view> names, bool required = false);
  // A string field that must be a duration.
  void duration_field(const json& parent, const std::string& path, std::string_view key);
  // A map of strings (labels, annotations, matchLabels).
  void string_map(const json& parent, const std::string& path, std::string_view key);
  // An array of non-empty strings.
  void strings(const json& parent, const std::string& path, std::string_view key);
  // An IP address string field.
  void ip(const json& parent, const std::string& path, std::string_view key, bool required = false);
  // Istio's WorkloadSelector: {matchLabels: {...}}.
  void workload_selector(const json& parent, const std::string& path, std::string_view key);
  // Gateway API / Istio policy targetRef: {group, kind, name, namespace}.
  void target_ref(const json& ref, const std::string& path);

  // Calls fn(element, element_path, index) for each element of an array field.
  template <typename Fn>
  void each(const json& parent, const std::string& path, std::string_view key, Fn fn) {
    const json* v = get(parent, key);
    if (!v) return;
    std::string p = field_path(path, key);
    if (!v->is_array()) return err(p, "must be an array, got " + show(*v));
    for (size_t i = 0; i < v->size(); i++) fn((*v)[i], index_path(p, i), i);
  }
};

// Per-kind checks of what follows the type and object metadata.
void check_pod(Checker& c, const json& obj);
void check_service(Checker& c, const json& obj);
void check_endpoint_slice(Checker& c, const json& obj);
void check_node(Checker& c, const json& obj);
void check_request_authentication(Checker& c, const json& obj);
void check_virtual_service(Checker& c, const json& obj);
void check_destination_rule(Checker& c, const json& obj);
void check_gateway(Checker& c, const json& obj);
void check_http_route(Checker& c, const json& obj);
// AuthorizationPolicy and PeerAuthentication: warren-node's own parser.
void check_with_node_parser(Checker& c, const json& node_object);

}  // namespace warren::controller::detail
