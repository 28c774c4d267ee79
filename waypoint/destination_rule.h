// Istio networking.istio.io/v1 DestinationRule compiled into per (host,
// subset, port) traffic policies: load balancer, connection pool limits
// (circuit breaking) and outlier detection, merged as Istio merges them.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "route_table.h"

namespace warren::waypoint {

enum class LbKind { kRoundRobin, kLeastRequest, kRandom, kPassthrough, kConsistentHash };

struct ConsistentHashPolicy {
  enum class Source { kHeader, kCookie, kSourceIp, kQueryParam };
  Source source = Source::kHeader;
  std::string name;  // header (lower case), cookie or query parameter name
  std::string cookie_path;
  // httpCookie.ttl: absent: never generate a cookie; 0: a session cookie.
  std::optional<std::chrono::milliseconds> cookie_ttl;
  uint64_t minimum_ring_size = 1024;  // ringHash.minimumRingSize
  bool maglev = false;                // maglev requested (served by the ring hash)
};

struct LbPolicy {
  LbKind kind = LbKind::kLeastRequest;  // Istio's default (UNSPECIFIED)
  ConsistentHashPolicy hash;            // with kConsistentHash
};

// connectionPool.http.h2UpgradePolicy.
enum class H2Upgrade { kDefault, kDoNotUpgrade, kUpgrade };

// Istio ConnectionPoolSettings; absent or 0 values take Istio's defaults.
// Requests an upstream connection (HTTP/2) or leg (HTTP/1.1) carries before
// it retires when maxRequestsPerConnection does not say (Istio: unlimited);
// 1,000 made a new HBONE stream and backend connection every half second per
// leg at 2,000 req/s (bench/l7, stop 15).
inline constexpr uint64_t kDefaultMaxRequestsPerConnection = 10000;

struct ConnectionPoolLimits {
  uint32_t max_connections = UINT32_MAX;              // tcp.maxConnections
  uint32_t max_pending_requests = UINT32_MAX;         // http.http1MaxPendingRequests
  uint32_t max_requests = UINT32_MAX;                 // http.http2MaxRequests
  uint32_t max_requests_per_connection = 0;           // http.maxRequestsPerConnection; 0: unlimited
  uint32_t max_retries = UINT32_MAX;                  // http.maxRetries
  std::chrono::milliseconds connect_timeout{10'000};  // tcp.connectTimeout
  std::chrono::milliseconds idle_timeout{3'600'000};  // http.idleTimeout (Envoy: 1h)
  H2Upgrade h2_upgrade = H2Upgrade::kDefault;         // http.h2UpgradePolicy
  bool use_client_protocol = false;                   // http.useClientProtocol
};

struct OutlierPolicy {
  bool enabled = false;              // outlierDetection present
  uint32_t consecutive_5xx = 5;      // consecutive5xxErrors; 0: off
  uint32_t consecutive_gateway = 0;  // consecutiveGatewayErrors; 0: off
  std::chrono::milliseconds interval{10'000};
  std::chrono::milliseconds base_ejection_time{30'000};
  std::chrono::milliseconds max_ejection_time{300'000};  // Envoy's default cap
  uint32_t max_ejection_percent = 10;
  uint32_t min_health_percent = 0;  // Envoy's healthy_panic_threshold
};

// trafficPolicy.retryBudget (Envoy's circuit breaker retry_budget): concurrent
// retries limited to max(minRetryConcurrency, percent% of the cluster's active
// and pending requests); when set it replaces connectionPool.http.maxRetries.
// With budgetInterval (> 0) the budget counts over that window instead: the
// retries started in the last interval may be at most max(minRetryConcurrency,
// percent% of the requests started in it) (Envoy's budget_interval, Gateway
// API's BackendTrafficPolicy retryConstraint.budget.interval).
struct RetryBudgetPolicy {
  double percent = 20.0;               // percent (a number or {value}); Istio's default 20
  uint32_t min_retry_concurrency = 3;  // minRetryConcurrency; 0 or absent: 3
  std::chrono::milliseconds interval{0};  // budgetInterval; 0: requests in flight now
};

struct TrafficPolicy {
  LbPolicy lb;
  ConnectionPoolLimits pool;
  OutlierPolicy outlier;
  std::optional<RetryBudgetPolicy> retry_budget;
};

struct Subset {
  std::string name;
  std::map<std::string, std::string> labels;
  TrafficPolicy policy;  // merged over the rule's top-level policy (no port)
  std::map<uint16_t, TrafficPolicy> port_policies;  // with portLevelSettings
};

// Every label of the subset is on the pod with the same value.
bool subset_matches(const Subset& s, const std::map<std::string, std::string>& pod_labels);

class DestinationRules {
 public:
  // Compiles every object; an invalid one is reported in `errors`
  // ("DestinationRule <ns>/<name>: <json pointer>: <reason>") and left out.
  // Several rules for one host merge as Istio does: the oldest's traffic
  // policy, subsets from all (the oldest wins a name).
  static DestinationRules build(const std::vector<nlohmann::json>& rules, const RouteContext& ctx,
                                std::vector<std::string>* errors);

  // The policy for a request to `host` (FQDN), `subset` ("" for none) and
  // service `port`. Unknown host or subset: the rule's or Istio's defaults.
  const TrafficPolicy& policy(std::string_view host, std::string_view subset, uint16_t port) const;
  const Subset* subset(std::string_view host, std::string_view name) const;
  bool has_rule_for(std::string_view host) const { return find(host) != nullptr; }
  size_t size() const { return rules_.size(); }

  struct Rule {
    std::string host;   // FQDN or wildcard
    std::string order;  // creationTimestamp + ns/name
    TrafficPolicy policy;
    std::map<uint16_t, TrafficPolicy> port_policies;
    std::vector<Subset> subsets;
  };

 private:
  const Rule* find(std::string_view host) const;
  std::vector<Rule> rules_;
};

}  // namespace warren::waypoint
