// Waypoint routing: Istio networking.istio.io/v1 VirtualService `http` routes
// and Gateway API HTTPRoute (GAMMA: parentRefs naming a Service) compiled from
// the specs as written (nlohmann::json) into one immutable table, and the pure
// per-request decisions on it: which route, which weighted destination, the
// rewritten path, the redirect target, the fault to inject. No I/O here.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "headers.h"
#include "route_match.h"
#include "warren/result.h"

namespace re2 {
class RE2;
}

namespace warren::waypoint {

// Istio HeaderOperations / Gateway API HTTPHeaderFilter. Names in `remove`
// are lower case. apply(): removals first, then `set` (replaces every value of
// the name), then `add` (appends), as Envoy's header parser does.
struct HeaderOps {
  Headers set, add;
  std::vector<std::string> remove;
  void apply(Headers& h) const;
  bool empty() const { return set.empty() && add.empty() && remove.empty(); }
};

struct RouteDestination {
  std::string host;  // FQDN, e.g. reviews.default.svc.cluster.local
  std::string subset;
  std::optional<uint16_t> port;
  uint32_t weight = 100;
  HeaderOps request, response;
};

// Envoy retry_on conditions, as Istio's `retryOn` comma list names them.
enum RetryOn : uint32_t {
  kRetryOn5xx = 1u << 0,
  kRetryOnGatewayError = 1u << 1,  // 502, 503, 504
  kRetryOnReset = 1u << 2,
  kRetryOnConnectFailure = 1u << 3,
  kRetryOnRetriable4xx = 1u << 4,  // 409
  kRetryOnRefusedStream = 1u << 5,
  kRetryOnRetriableStatusCodes = 1u << 6,
  kRetryOnGrpcCancelled = 1u << 7,
  kRetryOnGrpcDeadlineExceeded = 1u << 8,
  kRetryOnGrpcInternal = 1u << 9,
  kRetryOnGrpcResourceExhausted = 1u << 10,
  kRetryOnGrpcUnavailable = 1u << 11,
  kRetryOnResetBeforeRequest = 1u << 12,
};
// Istio's default policy:
// "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes" + 503.
inline constexpr uint32_t kIstioDefaultRetryOn = kRetryOnConnectFailure | kRetryOnRefusedStream |
                                                 kRetryOnGrpcUnavailable | kRetryOnGrpcCancelled |
                                                 kRetryOnRetriableStatusCodes;

// A default-constructed policy is Istio's default (2 retries).
struct RetryPolicy {
  uint32_t attempts = 2;                         // retries after the first try; 0: none
  std::chrono::milliseconds per_try_timeout{0};  // 0: none
  uint32_t on = kIstioDefaultRetryOn;            // RetryOn bits
  std::vector<int> retriable_status_codes{503};
  std::chrono::milliseconds backoff_base{25};  // Envoy's default; HTTPRoute retry.backoff
};
// Parses Istio's `retryOn` list into `p.on` and `p.retriable_status_codes`
// (numbers are status codes and imply retriable-status-codes). Error: the reason.
Result<void> parse_retry_on(std::string_view list, RetryPolicy& p);

struct FaultPolicy {
  std::optional<std::chrono::milliseconds> delay;
  double delay_percent = 0;  // absent percentage: 0, as Istio/Envoy
  std::optional<int> abort_http_status;
  std::optional<int> abort_grpc_status;
  double abort_percent = 0;
};

struct Redirect {
  std::string uri;             // empty: keep the path
  bool uri_is_prefix = false;  // HTTPRoute ReplacePrefixMatch: replaces the matched prefix
  std::string authority, scheme;
  std::optional<uint16_t> port;
  bool port_from_request = false;  // Istio derivePort: FROM_REQUEST_PORT
  int code = 301;
};

struct DirectResponse {
  int status = 200;
  std::string body;
};

struct Mirror {
  RouteDestination dest;
  double percent = 100;
};

struct HttpRoute {
  std::string name;
  RouteMatch match;
  std::vector<RouteDestination> destinations;
  // Istio rewrite.uri: replaces the matched prefix (whole path for exact/regex).
  std::optional<std::string> rewrite_uri;
  std::optional<std::string> rewrite_authority;
  std::optional<Redirect> redirect;
  std::optional<DirectResponse> direct_response;
  HeaderOps request_headers, response_headers;
  std::vector<Mirror> mirrors;
  std::optional<std::chrono::milliseconds> timeout;  // absent or 0: none
  // Absent: Istio's default policy applies (retry_policy()); attempts 0: disabled.
  std::optional<RetryPolicy> retries;
  std::optional<FaultPolicy> fault;

  // Filled by the compiler, read by rewrite_path() / redirect_location().
  std::vector<std::string> block_prefixes;  // per match block: its path prefix, "" if none
  bool gateway_api = false;                 // from an HTTPRoute: path-element prefix semantics
  bool rewrite_full_path = false;           // HTTPRoute ReplaceFullPath
  std::shared_ptr<const re2::RE2> rewrite_regex;  // Istio rewrite.uriRegexRewrite
  std::string rewrite_regex_sub;

  const RetryPolicy& retry_policy() const;
};

// Istio's default retry policy (for routes without `retries`, and for the
// default route when no VirtualService applies).
const RetryPolicy& default_retry_policy();

struct RouteSelection {
  const HttpRoute* route = nullptr;
  int matched_block = -1;  // index in route->match.blocks; -1: the route has no blocks
  std::string source;      // "VirtualService ns/name" or "HTTPRoute ns/name", for logs
  // Routes apply to the host but none matched: the proxy answers 404 (flag NR).
  // False with route == nullptr: nothing applies, route to the service itself.
  bool not_found = false;
};

struct RouteContext {
  std::string cluster_domain = "cluster.local";
};

class RouteTable {
 public:
  // Compiles every object; an invalid object is reported in `errors` (one
  // line "<kind> <ns>/<name>: <json pointer>: <reason>") and left out.
  static RouteTable build(const std::vector<nlohmann::json>& virtual_services,
                          const std::vector<nlohmann::json>& http_routes, const RouteContext& ctx,
                          std::vector<std::string>* errors);

  // The route for a request to the service whose FQDN is `host`. The first
  // VirtualService (exact host before wildcard, most specific wildcard first,
  // then oldest, then ns/name) decides; else the HTTPRoutes attached to the
  // service, merged in Gateway API precedence order.
  RouteSelection select(std::string_view host, const RequestView& r) const;
  bool has_routes_for(std::string_view host) const;
  size_t size() const { return entries_.size(); }

  struct Rule {
    HttpRoute route;
    std::optional<uint16_t> port;  // HTTPRoute parentRef port
    std::string source;
  };
  struct Entry {
    std::vector<std::string> hosts;  // FQDNs, "*.suffix" or "*"
    bool virtual_service = true;
    std::vector<Rule> rules;
    std::string order;  // creationTimestamp + ns/name
  };

 private:
  const Entry* find(std::string_view host) const;
  std::vector<Entry> entries_;
};

// Weighted pick: `rnd` uniform in [0, 2^32). One destination: always it.
// All weights 0: the first.
size_t pick_weighted(const std::vector<RouteDestination>& d, uint32_t rnd);

// The path after the route's rewrite given the matched block. Istio
// rewrite.uri: prefix matches replace the prefix, others the whole path;
// HTTPRoute ReplacePrefixMatch replaces whole path elements. The query is kept.
std::string rewrite_path(const HttpRoute& r, int matched_block, std::string_view path_and_query);

// The Location of the route's redirect, from the request (scheme, authority, path).
std::string redirect_location(const HttpRoute& r, int matched_block, const RequestView& req);

// Fault decision from two uniform values in [0, 2^32) (one per fault kind).
struct FaultDecision {
  std::optional<std::chrono::milliseconds> delay;
  std::optional<int> http_status;  // abort with this status
  std::optional<int> grpc_status;  // abort with this gRPC status (HTTP 200 + trailers)
};
FaultDecision decide_fault(const FaultPolicy& f, uint32_t rnd_delay, uint32_t rnd_abort);
// True with probability percent/100 for a uniform rnd.
bool percent_hit(double percent, uint32_t rnd);

// Shared by the spec compilers (route_table.cpp, destination_rule.cpp).
namespace spec {
// Go/Istio duration: "1.5s", "250ms", "2m", "1h30m", "0". Not negative.
Result<std::chrono::milliseconds> parse_duration(std::string_view s);
// A host as written in namespace `ns`: "reviews" -> reviews.<ns>.svc.<domain>,
// "reviews.other" -> reviews.other.svc.<domain>, "a.b.svc" -> a.b.svc.<domain>,
// longer names and wildcards kept. Lower-cased.
std::string resolve_host(std::string_view host, std::string_view ns, const RouteContext& ctx);
// `pattern` is an FQDN, "*" or "*.suffix".
bool host_matches(std::string_view pattern, std::string_view host);
// The specificity of a pattern matching a host: larger is more specific.
size_t host_specificity(std::string_view pattern);
// JSON pointer escaping of an object key (RFC 6901).
std::string escape(std::string_view key);
}  // namespace spec

}  // namespace warren::waypoint
