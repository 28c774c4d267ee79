// The pure parts of external authorization over HTTP, as Istio's
// `envoyExtAuthzHttp` extension provider (meshConfig.extensionProviders)
// configures Envoy's ext_authz filter: build the check request, read the
// answer. The caller does the I/O (connect, send, read with `timeout`) and
// calls interpret() or on_failure().
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "headers.h"
#include "warren/result.h"

namespace warren::waypoint {

struct ExtAuthzProvider {
  std::string name;
  std::string service;  // host name ("ext-authz.foo.svc.cluster.local")
  uint16_t port = 0;
  std::string path_prefix;                     // prepended to the original path
  std::chrono::milliseconds timeout{600'000};  // Istio's default: 600 s
  bool fail_open = false;                      // failOpen
  int status_on_error = 403;                   // statusOnError
  // Header name patterns: exact, "prefix*" or "*suffix", case-insensitive.
  std::vector<std::string> include_request_headers;       // includeRequestHeadersInCheck
  std::map<std::string, std::string> additional_headers;  // includeAdditionalHeadersInCheck
  std::vector<std::string> headers_to_upstream_on_allow;
  std::vector<std::string> headers_to_downstream_on_deny;  // empty: all but Host
  std::vector<std::string> headers_to_downstream_on_allow;
};

// One meshConfig.extensionProviders entry: {"name": ..., "envoyExtAuthzHttp":
// {...}}. Errors list every problem, one a line, as "<pointer>: <reason>"
// under `pointer` (e.g. "/extensionProviders/0").
Result<ExtAuthzProvider> parse_ext_authz_provider(const nlohmann::json& entry,
                                                  const std::string& pointer = "");

// The check request as HTTP/1.1 bytes: the original method, path =
// pathPrefix + the original path and query, Host as the original, an empty
// body (Content-Length: 0), and only these request headers: Authorization,
// those matching includeRequestHeadersInCheck, then
// includeAdditionalHeadersInCheck (which replace same-named ones), plus
// x-forwarded-for when `forwarded_for` is given and
// x-forwarded-proto: http. Hop-by-hop headers and values with control
// characters are never copied.
std::string build_check_request(const ExtAuthzProvider& p, std::string_view method,
                                std::string_view path_and_query, std::string_view host,
                                const Headers& request_headers,
                                std::string_view forwarded_for = {});

struct ExtAuthzVerdict {
  bool allow = false;
  int status = 0;  // deny: the status to answer with
  // Allow: headers to set on the upstream request (replacing same-named ones),
  // and to remove from it (the service's x-envoy-auth-headers-to-remove).
  Headers upstream_set;
  std::vector<std::string> upstream_remove;
  // Deny: the response headers; allow: headers to add to the response.
  Headers downstream;
  std::string body;  // deny: the service's body
};

// Envoy: status 200 allows; a 5xx is a failure (on_failure); any other status
// denies with that status, the service's body and its headers (filtered by
// headersToDownstreamOnDeny; without a list, all but Host).
ExtAuthzVerdict interpret(const ExtAuthzProvider& p, int status, const Headers& resp_headers,
                          std::string body);

// Connect error, timeout, malformed answer: deny with statusOnError (403),
// or allow when failOpen.
ExtAuthzVerdict on_failure(const ExtAuthzProvider& p);

}  // namespace warren::waypoint
