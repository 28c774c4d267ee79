// Istio VirtualService `http[].match` compiled from the spec as written
// (nlohmann::json) and evaluated against a request with a normalised path.
// Match blocks are OR'd, the fields of a block AND'd; no blocks match all.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "headers.h"
#include "warren/result.h"

namespace re2 {
class RE2;
}

namespace warren::waypoint {

// Istio StringMatch: exact, prefix or regex (RE2, full match). kPresent is
// the empty `{}` of headers and query parameters.
struct StringMatch {
  enum class Kind { kExact, kPrefix, kRegex, kPresent };
  Kind kind = Kind::kPresent;
  std::string value;
  std::shared_ptr<const re2::RE2> re;  // with kRegex
  bool ignore_case = false;            // exact and prefix only (ignoreUriCase)
  bool matches(std::string_view s) const;
};

struct NamedMatch {
  std::string name;  // lower case
  StringMatch match;
};

// One element of `match`.
struct MatchBlock {
  std::string name;
  std::optional<StringMatch> uri, scheme, method, authority;
  std::vector<NamedMatch> headers;          // all must match
  std::vector<NamedMatch> without_headers;  // none may match
  std::vector<NamedMatch> query_params;     // all must match
  std::optional<uint32_t> port;
  // Evaluated against RequestView's source fields; a block that names them
  // never matches a request whose view does not carry them.
  std::vector<std::pair<std::string, std::string>> source_labels;
  std::string source_namespace;
  std::vector<std::string> gateways;  // parsed, not evaluated
};

struct RouteMatch {
  std::vector<MatchBlock> blocks;  // empty: matches every request
};

// What a match is evaluated against. `path` is the normalised path without
// the query (path.h), `query` the raw query without `?`.
// Header matches on :method, :authority, :scheme and :path (path and query)
// read these fields, as Envoy's pseudo-headers.
struct RequestView {
  std::string_view method;
  std::string_view authority;
  std::string_view scheme = "http";
  std::string_view path;
  std::string_view query;
  const Headers* headers = nullptr;
  std::optional<uint16_t> port;
  // The source workload, when known (sourceLabels, sourceNamespace).
  const std::vector<std::pair<std::string, std::string>>* source_labels = nullptr;
  std::string_view source_namespace;
};

// Compiles a `match` array (null or absent: match all). `pointer` is the JSON
// pointer of `match` in the resource, used in errors:
//   /http/0/match/1/uri/regex: "(" is not a valid RE2 expression: missing )
Result<RouteMatch> compile_route_match(const nlohmann::json& match, const std::string& pointer);
Result<MatchBlock> compile_match_block(const nlohmann::json& block, const std::string& pointer);

bool matches(const RouteMatch& m, const RequestView& r);
bool matches(const MatchBlock& b, const RequestView& r);

// First value of query parameter `name` in a raw query (no decoding, as
// Envoy's route matching); nullopt when absent.
std::optional<std::string_view> query_param(std::string_view query, std::string_view name);

}  // namespace warren::waypoint
