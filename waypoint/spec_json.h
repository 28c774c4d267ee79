// Readers for Kubernetes objects as JSON, shared by the spec compilers
// (route_virtual_service.cpp, route_http_route.cpp, destination_rule.cpp).
// Each reader checks one value and throws SpecError naming its JSON pointer;
// a compiler catches it per object, so one bad object rejects only itself.
#pragma once

#include <nlohmann/json.hpp>
#include <re2/re2.h>

#include <chrono>
#include <memory>
#include <string>

#include "route_table.h"

namespace warren::waypoint::spec {

// A spec error: the JSON pointer (empty when `why` already starts with one).
struct SpecError {
  std::string ptr, why;
  std::string text() const { return ptr.empty() ? why : ptr + ": " + why; }
};
[[noreturn]] void fail(const std::string& ptr, std::string why);

// The member `k` of an object, null when absent, null or `o` is no object.
const nlohmann::json* get(const nlohmann::json& o, const char* k);
// JSON pointers one level down.
std::string p_(const std::string& p, const char* k);
std::string p_(const std::string& p, size_t i);

const nlohmann::json& object(const nlohmann::json& v, const std::string& p);
const nlohmann::json& list(const nlohmann::json& v, const std::string& p);
std::string string(const nlohmann::json& v, const std::string& p);
std::string nonempty(const nlohmann::json& v, const std::string& p);
// An integer in [lo, hi]; `what` completes "must be ...".
int64_t integer(const nlohmann::json& v, const std::string& p, int64_t lo, int64_t hi, const char* what);
uint16_t port(const nlohmann::json& v, const std::string& p);
// A duration string ("1.5s"); `positive`: at least 1ms.
std::chrono::milliseconds duration(const nlohmann::json& v, const std::string& p, bool positive = false);
// A number 0-100, and Istio's Percent {value: 0..100}.
double percent_value(const nlohmann::json& v, const std::string& p);
double percentage(const nlohmann::json& v, const std::string& p);

// "<namespace>/<name>" of an object as written ("default" namespace when none).
std::string object_id(const nlohmann::json& o);
// metadata: name (required), namespace ("default"), and the precedence order
// "<creationTimestamp> <ns>/<name>".
struct Meta {
  std::string ns, name, order;
};
Meta meta(const nlohmann::json& o);

// A header name a route may modify (not a pseudo-header, not Host, a token).
void check_header_name(const std::string& n, const std::string& p);
// A compiled RE2 (full-match use is the caller's).
std::shared_ptr<const re2::RE2> regex(const std::string& pattern, const std::string& p);

}  // namespace warren::waypoint::spec
