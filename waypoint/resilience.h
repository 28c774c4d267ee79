// Resilience decisions, as Envoy makes them for Istio's settings: whether to
// retry an outcome, the jittered backoff before a retry, the retry budget,
// circuit-breaker admission (DestinationRule connectionPool) and outlier
// detection. Pure: time and randomness come in as parameters; no timers.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "destination_rule.h"
#include "route_table.h"

namespace warren::waypoint {

// How one upstream try ended.
struct Outcome {
  enum class Kind {
    kResponse,        // response headers arrived: http_status (and grpc_status)
    kReset,           // the upstream reset the stream or closed the connection
    kConnectFailure,  // no connection to the endpoint
    kRefusedStream,   // HTTP/2 REFUSED_STREAM: the request was not processed
    kTimeout,         // the per-try timeout fired
  };
  Kind kind = Kind::kResponse;
  int http_status = 0;
  std::optional<int> grpc_status;  // grpc-status from headers (trailers-only) or trailers
  bool before_request = false;     // kReset: before the request was sent (reset-before-request)

  static Outcome response(int status, std::optional<int> grpc = std::nullopt) {
    return Outcome{Kind::kResponse, status, grpc, false};
  }
  static Outcome reset(bool before_request = false) {
    return {Kind::kReset, 0, {}, before_request};
  }
  static Outcome connect_failure() { return {Kind::kConnectFailure, 0, {}, true}; }
  static Outcome refused_stream() { return {Kind::kRefusedStream, 0, {}, true}; }
  static Outcome timeout() { return {Kind::kTimeout, 0, {}, false}; }

  bool is_5xx() const;            // a 5xx, or a failure the proxy answers with one
  bool is_gateway_error() const;  // 502, 503, 504, or a local-origin failure
};

// Does the policy's retryOn cover the outcome (Envoy's retry_on semantics:
// 5xx and gateway-error include resets, connect failures and timeouts).
bool should_retry(const RetryPolicy& p, const Outcome& o);
// The same, and `retries_done` < p.attempts.
bool should_retry(const RetryPolicy& p, const Outcome& o, uint32_t retries_done);

// Envoy's fully jittered exponential backoff before retry number `attempt`
// (1 for the first retry): uniform in [0, min(base * 2^(attempt-1), max)),
// taken from `rnd` (uniform in [0, 2^32)).
std::chrono::milliseconds backoff(uint32_t attempt, uint32_t rnd,
                                  std::chrono::milliseconds base = std::chrono::milliseconds(25),
                                  std::chrono::milliseconds max = std::chrono::milliseconds(250));

// Events counted over a sliding window (retryBudget.budgetInterval): ten
// buckets of interval/10 each, so a count leaves the window between 0.9 and
// 1.0 interval after it was added. Not thread-safe (CircuitBreaker locks).
class WindowCount {
 public:
  using Clock = std::chrono::steady_clock;
  WindowCount() { set_interval(std::chrono::milliseconds(0)); }
  // Forgets every count when the interval changes.
  void set_interval(std::chrono::milliseconds interval);
  void add(Clock::time_point now);
  uint64_t sum(Clock::time_point now);

 private:
  static constexpr int kBuckets = 10;
  int64_t slot(Clock::time_point now) const;
  int64_t width_ms_;
  int64_t slot_[kBuckets];  // which slot each bucket counts; -1: none
  uint64_t count_[kBuckets];
};

// Circuit breaking for one (host, subset): Envoy's cluster resource counters
// against the DestinationRule's connectionPool. An admit_* that returns true
// must be paired with its release_*. False: the proxy answers 503 with
// response flag UO. Thread-safe (atomics), shared by the workers.
class CircuitBreaker {
 public:
  explicit CircuitBreaker(const ConnectionPoolLimits& l = {}) { set_limits(l); }
  void set_limits(const ConnectionPoolLimits& l);
  // trafficPolicy.retryBudget (nullopt: the static maxRetries applies).
  void set_retry_budget(const std::optional<RetryBudgetPolicy>& b);

  bool admit_request();  // http2MaxRequests (every active request)
  bool admit_request(std::chrono::steady_clock::time_point now);
  void release_request();
  bool admit_pending();  // http1MaxPendingRequests (waiting for a connection)
  void release_pending();
  bool admit_connection();  // tcp.maxConnections
  void release_connection();
  // http.maxRetries, or the retry budget when one is set: concurrent retries,
  // each held from when it is scheduled until its attempt ended (Envoy's
  // retries() resource).
  // With a budgetInterval the budget is on retries started in the window
  // (release_retry then only ends the concurrent count, for the stats).
  bool admit_retry();
  bool admit_retry(std::chrono::steady_clock::time_point now);
  void release_retry();
  uint64_t retry_limit() const;  // the current limit on concurrent retries (no budgetInterval)
  // Whether a connection that has carried `served` requests may carry another
  // (http.maxRequestsPerConnection; 0: unlimited).
  bool connection_reusable(uint64_t served) const;

  uint64_t active_requests() const { return requests_.load(std::memory_order_relaxed); }
  uint64_t pending_requests() const { return pending_.load(std::memory_order_relaxed); }
  uint64_t connections() const { return connections_.load(std::memory_order_relaxed); }
  uint64_t active_retries() const { return retries_.load(std::memory_order_relaxed); }

 private:
  static bool acquire(std::atomic<uint64_t>& n, uint64_t max);
  uint64_t budget_limit(uint64_t requests) const;
  static void release(std::atomic<uint64_t>& n);
  std::atomic<uint64_t> max_requests_{0}, max_pending_{0}, max_connections_{0}, max_retries_{0},
      max_per_connection_{0};
  std::atomic<uint64_t> requests_{0}, pending_{0}, connections_{0}, retries_{0};
  std::atomic<bool> budget_on_{false};
  std::atomic<double> budget_percent_{20.0};
  std::atomic<uint32_t> budget_min_{3};
  // budgetInterval: requests and retries started in the window.
  std::atomic<bool> windowed_{false};
  std::mutex window_mu_;
  std::chrono::milliseconds window_interval_{0};
  WindowCount window_requests_, window_retries_;
};

// The breakers of every (host, subset), created on first use; limits updated
// on each get (a new DestinationRule applies to live counters). Thread-safe.
class CircuitBreakers {
 public:
  std::shared_ptr<CircuitBreaker> get(std::string_view host, std::string_view subset,
                                      const ConnectionPoolLimits& limits);

 private:
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<CircuitBreaker>, std::less<>> by_key_;
};

// Outlier detection for one host's endpoints (Envoy's consecutive_5xx and
// consecutive_gateway_failure detectors, as Istio configures them).
//  - An endpoint is ejected after consecutive5xxErrors 5xx outcomes, or
//    consecutiveGatewayErrors 502/503/504 outcomes; resets, connect failures
//    and timeouts count as both (Envoy without split local-origin errors).
//    Any other outcome resets the counts; an ejection attempt resets them too.
//  - Ejection lasts baseEjectionTime x the endpoint's ejection multiplier,
//    capped at max(base, 300s); the multiplier grows by one per ejection and
//    shrinks by one per full `interval` the endpoint stayed un-ejected.
//  - maxEjectionPercent: as Envoy (all released versions up to 1.26), an
//    ejection is allowed while 100 x ejected / total < maxEjectionPercent, so
//    one endpoint of a small host can be ejected at the default 10%.
//  - Un-ejection happens when the time has passed (Envoy waits for its next
//    interval sweep; here it is exact).
// Thread-safe (one mutex); time is a parameter.
class OutlierDetector {
 public:
  using Clock = std::chrono::steady_clock;
  explicit OutlierDetector(const OutlierPolicy& p = {}) : policy_(p) {}
  void set_policy(const OutlierPolicy& p);
  // The host's endpoints: forgets the others; the total for maxEjectionPercent.
  void set_endpoints(const std::vector<std::string>& keys);
  // Records one outcome; true when it ejected the endpoint.
  bool record(std::string_view key, const Outcome& o, Clock::time_point now);
  bool ejected(std::string_view key, Clock::time_point now);
  size_t ejected_count(Clock::time_point now);
  // The ejection multiplier of an endpoint (tests, /debug).
  uint32_t multiplier(std::string_view key);

 private:
  struct State {
    uint32_t consecutive_5xx = 0, consecutive_gateway = 0;
    bool ejected = false;
    Clock::time_point uneject_at{};
    std::optional<Clock::time_point> last_uneject;
    uint32_t multiplier = 0;
  };
  void refresh(State& s, Clock::time_point now);
  size_t ejected_locked(Clock::time_point now);
  std::mutex mu_;
  OutlierPolicy policy_;
  std::map<std::string, State, std::less<>> endpoints_;
};

}  // namespace warren::waypoint
