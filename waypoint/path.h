// Request-path normalisation before routing and before policy, as Istio
// (meshConfig.pathNormalization) and Envoy (normalize_path, merge_slashes,
// path_with_escaped_slashes_action) do it, so that `/admin`, `//admin`,
// `/%61dmin` and `/public/../admin` are one path to a DENY rule.
#pragma once

#include <string>
#include <string_view>

#include "warren/result.h"

namespace warren::waypoint {

// Envoy's path_with_escaped_slashes_action, for %2F and %5C in the path.
enum class EscapedSlashes {
  kKeepUnchanged,        // leave them (hex upper-cased)
  kRejectRequest,        // error: the proxy answers 400
  kUnescapeAndRedirect,  // unescape, then the proxy redirects to the result
  kUnescapeAndForward,   // unescape and carry on with the result
};

// A raw `\` in the path.
enum class Backslash {
  kToSlash,  // Envoy's canonicalisation (and Istio BASE) turns it into `/`
  kKeep,
  kReject,
};

struct PathOptions {
  bool normalize = true;      // RFC 3986 §6.2.2: decode unreserved, upper-case hex, dot segments
  bool merge_slashes = true;  // `//a///b` -> `/a/b`
  EscapedSlashes escaped_slashes = EscapedSlashes::kKeepUnchanged;
  Backslash backslash = Backslash::kToSlash;

  // Istio's meshConfig.pathNormalization.normalization: NONE, BASE,
  // MERGE_SLASHES, DECODE_AND_MERGE_SLASHES. The defaults above are
  // MERGE_SLASHES, which the waypoint uses when nothing is configured.
  static Result<PathOptions> from_istio(std::string_view level);
};

struct NormalizedPath {
  std::string path;   // normalised, starts with `/` (or is `*`)
  std::string query;  // after the first `?`, unchanged, without the `?`
  bool has_query = false;
  bool redirect = false;  // kUnescapeAndRedirect unescaped something: answer 307 to `target()`
  std::string target() const { return has_query ? path + "?" + query : path; }
};

// Normalises an origin-form request target (`/path?query`). `*` is accepted
// only when method is OPTIONS. Errors (kInvalidArgument) name the reason; the
// proxy answers 400 to them.
Result<NormalizedPath> normalize_target(std::string_view target, std::string_view method = "GET",
                                        const PathOptions& opts = {});

// Only the path steps (no query split, no `*`): for a path already split.
Result<std::string> normalize_path(std::string_view path, const PathOptions& opts = {});

}  // namespace warren::waypoint
