#include "resilience.h"

#include <catch2/catch.hpp>

using namespace warren::waypoint;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

namespace {

RetryPolicy retry_on(const char* list) {
  RetryPolicy p;
  auto r = parse_retry_on(list, p);
  REQUIRE(r.ok());
  return p;
}

OutlierPolicy outliers(uint32_t c5xx, uint32_t cgw = 0, uint32_t max_pct = 100) {
  OutlierPolicy p;
  p.enabled = true;
  p.consecutive_5xx = c5xx;
  p.consecutive_gateway = cgw;
  p.max_ejection_percent = max_pct;
  return p;
}

std::vector<std::string> keys(size_t n) {
  std::vector<std::string> k;
  for (size_t i = 0; i < n; i++) k.push_back("ep" + std::to_string(i));
  return k;
}

}  // namespace

TEST_CASE("resilience: Istio default retry policy", "[resilience]") {
  const RetryPolicy& p = default_retry_policy();
  CHECK(p.attempts == 2);
  CHECK(should_retry(p, Outcome::response(503)));
  CHECK_FALSE(should_retry(p, Outcome::response(500)));
  CHECK_FALSE(should_retry(p, Outcome::response(502)));
  CHECK(should_retry(p, Outcome::connect_failure()));
  CHECK(should_retry(p, Outcome::refused_stream()));
  CHECK_FALSE(should_retry(p, Outcome::reset()));
  CHECK_FALSE(should_retry(p, Outcome::timeout()));
  CHECK(should_retry(p, Outcome::response(200, 14)));  // gRPC UNAVAILABLE
  CHECK(should_retry(p, Outcome::response(200, 1)));   // CANCELLED
  CHECK_FALSE(should_retry(p, Outcome::response(200, 13)));
  CHECK_FALSE(should_retry(p, Outcome::response(200, 0)));
  CHECK(should_retry(p, Outcome::response(503), 1));
  CHECK_FALSE(should_retry(p, Outcome::response(503), 2));  // attempts used up
}

TEST_CASE("resilience: retryOn conditions as Envoy reads them", "[resilience]") {
  auto p5 = retry_on("5xx");
  CHECK(should_retry(p5, Outcome::response(500)));
  CHECK(should_retry(p5, Outcome::response(599)));
  CHECK_FALSE(should_retry(p5, Outcome::response(404)));
  CHECK(should_retry(p5, Outcome::reset()));
  CHECK(should_retry(p5, Outcome::connect_failure()));
  CHECK(should_retry(p5, Outcome::timeout()));
  auto gw = retry_on("gateway-error");
  CHECK(should_retry(gw, Outcome::response(502)));
  CHECK(should_retry(gw, Outcome::response(504)));
  CHECK_FALSE(should_retry(gw, Outcome::response(500)));
  auto reset = retry_on("reset");
  CHECK(should_retry(reset, Outcome::reset()));
  CHECK_FALSE(should_retry(reset, Outcome::response(503)));
  auto cf = retry_on("connect-failure");
  CHECK(should_retry(cf, Outcome::connect_failure()));
  CHECK_FALSE(should_retry(cf, Outcome::reset()));
  CHECK_FALSE(should_retry(cf, Outcome::refused_stream()));
  auto c4 = retry_on("retriable-4xx");
  CHECK(should_retry(c4, Outcome::response(409)));
  CHECK_FALSE(should_retry(c4, Outcome::response(429)));
  auto codes = retry_on(" 429 , 418");
  CHECK(codes.on == kRetryOnRetriableStatusCodes);
  CHECK(should_retry(codes, Outcome::response(429)));
  CHECK(should_retry(codes, Outcome::response(418)));
  CHECK_FALSE(should_retry(codes, Outcome::response(503)));
  auto rbr = retry_on("reset-before-request");
  CHECK(should_retry(rbr, Outcome::reset(true)));
  CHECK_FALSE(should_retry(rbr, Outcome::reset(false)));
  auto grpc = retry_on("deadline-exceeded,internal,resource-exhausted");
  CHECK(should_retry(grpc, Outcome::response(200, 4)));
  CHECK(should_retry(grpc, Outcome::response(200, 13)));
  CHECK(should_retry(grpc, Outcome::response(200, 8)));
  CHECK_FALSE(should_retry(grpc, Outcome::response(200, 14)));
  CHECK(retry_on("envoy-ratelimited").on == 0);
  RetryPolicy x;
  CHECK_FALSE(parse_retry_on("5xx,nope", x).ok());
  CHECK_FALSE(parse_retry_on("99", x).ok());
  CHECK_FALSE(parse_retry_on("600", x).ok());
}

TEST_CASE("resilience: fully jittered exponential backoff", "[resilience]") {
  // Interval: 25, 50, 100, 200, then capped at 250.
  CHECK(backoff(1, 24, milliseconds(25), milliseconds(250)) == milliseconds(24));
  CHECK(backoff(1, 25, milliseconds(25), milliseconds(250)) == milliseconds(0));
  CHECK(backoff(2, 49) == milliseconds(49));
  CHECK(backoff(2, 50) == milliseconds(0));
  CHECK(backoff(3, 99) == milliseconds(99));
  CHECK(backoff(4, 199) == milliseconds(199));
  CHECK(backoff(5, 249) == milliseconds(249));
  CHECK(backoff(5, 250) == milliseconds(0));
  CHECK(backoff(40, 0xffffffffu) < milliseconds(250));
  CHECK(backoff(0, 7) == milliseconds(7));
  for (uint32_t r = 0; r < 100000; r += 997) CHECK(backoff(3, r) < milliseconds(100));
  CHECK(backoff(2, 150, milliseconds(100), milliseconds(1000)) == milliseconds(150));
}

TEST_CASE("resilience: retry budget over a budgetInterval window", "[resilience]") {
  using std::chrono::steady_clock;
  auto t0 = steady_clock::time_point{} + seconds(1000);
  RetryBudgetPolicy p;
  p.percent = 25;
  p.min_retry_concurrency = 2;
  p.interval = seconds(10);
  CircuitBreaker cb;
  cb.set_retry_budget(p);
  // Only the floor at first: 2 retries in the window, however long they last.
  CHECK(cb.admit_retry(t0));
  cb.release_retry();
  CHECK(cb.admit_retry(t0 + seconds(1)));
  cb.release_retry();
  CHECK_FALSE(cb.admit_retry(t0 + seconds(2)));  // none in flight, but 2 started in the window
  CHECK(cb.active_retries() == 0);
  // 40 requests started in the window: 25% is 10 retries in it.
  for (int i = 0; i < 40; i++) {
    REQUIRE(cb.admit_request(t0 + seconds(3)));
    cb.release_request();
  }
  int more = 0;
  while (cb.admit_retry(t0 + seconds(4))) {
    cb.release_retry();
    if (++more > 100) break;
  }
  CHECK(more == 8);  // 10 in the window, 2 of them already spent
  // The first two retries (t0, t0+1s) leave the window after ~10 s: two more.
  CHECK(cb.admit_retry(t0 + milliseconds(11'100)));
  CHECK(cb.admit_retry(t0 + milliseconds(11'100)));
  CHECK_FALSE(cb.admit_retry(t0 + milliseconds(11'100)));
  // Everything leaves: the floor again.
  auto later = t0 + seconds(60);
  CHECK(cb.admit_retry(later));
  CHECK(cb.admit_retry(later));
  CHECK_FALSE(cb.admit_retry(later));
  // A changed interval starts an empty window; no interval: the in-flight budget.
  p.interval = seconds(5);
  cb.set_retry_budget(p);
  CHECK(cb.admit_retry(later));
  p.interval = milliseconds(0);
  cb.set_retry_budget(p);
  for (int i = 0; i < 5; i++) cb.release_retry();
  CHECK(cb.admit_retry(later));
  CHECK(cb.admit_retry(later));
  CHECK_FALSE(cb.admit_retry(later));  // 2 in flight = max(2, 25% of 0)
}

TEST_CASE("resilience: circuit breaker admission against connectionPool", "[resilience]") {
  ConnectionPoolLimits l;
  l.max_requests = 2;
  l.max_pending_requests = 1;
  l.max_connections = 1;
  l.max_retries = 1;
  l.max_requests_per_connection = 3;
  CircuitBreaker cb(l);
  CHECK(cb.admit_request());
  CHECK(cb.admit_request());
  CHECK_FALSE(cb.admit_request());  // 503 UO
  cb.release_request();
  CHECK(cb.admit_request());
  CHECK(cb.active_requests() == 2);
  CHECK(cb.admit_pending());
  CHECK_FALSE(cb.admit_pending());
  cb.release_pending();
  CHECK(cb.admit_connection());
  CHECK_FALSE(cb.admit_connection());
  CHECK(cb.admit_retry());
  CHECK_FALSE(cb.admit_retry());
  CHECK(cb.connection_reusable(2));
  CHECK_FALSE(cb.connection_reusable(3));
  CHECK(CircuitBreaker{}.connection_reusable(1000000));
  // Defaults are Istio's: effectively unlimited.
  CircuitBreaker open;
  for (int i = 0; i < 1000; i++) CHECK(open.admit_request());

  CircuitBreakers all;
  auto a = all.get("reviews.default.svc.cluster.local", "v1", l);
  auto b = all.get("reviews.default.svc.cluster.local", "v2", l);
  CHECK(a != b);
  CHECK(a->admit_connection());
  ConnectionPoolLimits more = l;
  more.max_connections = 2;
  auto a2 = all.get("reviews.default.svc.cluster.local", "v1", more);
  CHECK(a2 == a);
  CHECK(a2->admit_connection());  // the new limit applies to the live counters
  CHECK_FALSE(a2->admit_connection());
}

TEST_CASE("resilience: outlier detection ejects after consecutive 5xx", "[resilience]") {
  OutlierDetector d(outliers(3));
  d.set_endpoints(keys(4));
  auto t0 = Clock::time_point{} + seconds(1000);
  CHECK_FALSE(d.record("ep0", Outcome::response(500), t0));
  CHECK_FALSE(d.record("ep0", Outcome::response(500), t0));
  CHECK_FALSE(d.record("ep0", Outcome::response(200), t0));  // resets the count
  CHECK_FALSE(d.record("ep0", Outcome::response(503), t0));
  CHECK_FALSE(d.record("ep0", Outcome::connect_failure(), t0));  // counts as a 5xx
  CHECK(d.record("ep0", Outcome::reset(), t0));
  CHECK(d.ejected("ep0", t0));
  CHECK_FALSE(d.ejected("ep1", t0));
  CHECK(d.ejected("ep0", t0 + seconds(29)));
  CHECK_FALSE(d.ejected("ep0", t0 + seconds(30)));  // baseEjectionTime x 1
  CHECK(d.multiplier("ep0") == 1);
  // Ejected again right away: twice as long.
  auto t1 = t0 + seconds(31);
  for (int i = 0; i < 3; i++) d.record("ep0", Outcome::response(502), t1);
  CHECK(d.ejected("ep0", t1 + seconds(59)));
  CHECK_FALSE(d.ejected("ep0", t1 + seconds(60)));
  CHECK(d.multiplier("ep0") == 2);
  // After staying healthy for three intervals (10s), the multiplier decays.
  auto t2 = t1 + seconds(60) + seconds(30);
  for (int i = 0; i < 3; i++) d.record("ep0", Outcome::response(500), t2);
  CHECK(d.multiplier("ep0") == 1);  // 2 - 2 (floored at 0), then + 1
  CHECK_FALSE(d.ejected("ep0", t2 + seconds(30)));
}

TEST_CASE("resilience: outlier detection gateway errors and disabled detectors", "[resilience]") {
  auto t = Clock::time_point{} + seconds(5);
  OutlierDetector gw(outliers(0, 2));
  gw.set_endpoints(keys(2));
  CHECK_FALSE(gw.record("ep0", Outcome::response(500), t));  // 5xx detector off
  CHECK_FALSE(gw.record("ep0", Outcome::response(504), t));
  CHECK(gw.record("ep0", Outcome::timeout(), t));
  CHECK_FALSE(gw.record("ep1", Outcome::response(502), t));
  CHECK_FALSE(gw.record("ep1", Outcome::response(500), t));  // a non-gateway 5xx resets it
  CHECK_FALSE(gw.record("ep1", Outcome::response(502), t));
  OutlierDetector off;  // no outlierDetection in the rule
  for (int i = 0; i < 10; i++) CHECK_FALSE(off.record("ep0", Outcome::response(500), t));
  CHECK_FALSE(off.ejected("ep0", t));
}

TEST_CASE("resilience: maxEjectionPercent caps ejections", "[resilience]") {
  auto t = Clock::time_point{} + seconds(5);
  auto fail = [&](OutlierDetector& d, const std::string& k) {
    return d.record(k, Outcome::response(500), t);
  };
  // 10% of 3 endpoints: one ejection allowed (0% ejected < 10%), not two.
  OutlierDetector d(outliers(1, 0, 10));
  d.set_endpoints(keys(3));
  CHECK(fail(d, "ep0"));
  CHECK_FALSE(fail(d, "ep1"));
  CHECK(d.ejected_count(t) == 1);
  // 50% of 4: two.
  OutlierDetector half(outliers(1, 0, 50));
  half.set_endpoints(keys(4));
  CHECK(fail(half, "ep0"));
  CHECK(fail(half, "ep1"));
  CHECK_FALSE(fail(half, "ep2"));
  CHECK(half.ejected_count(t) == 2);
  // 0%: never.
  OutlierDetector none(outliers(1, 0, 0));
  none.set_endpoints(keys(4));
  CHECK_FALSE(fail(none, "ep0"));
  // Endpoints leaving drop their state.
  half.set_endpoints({"ep2", "ep3"});
  CHECK(half.ejected_count(t) == 0);
  CHECK_FALSE(half.ejected("ep0", t));
}

TEST_CASE("resilience: maxRetries and the retry budget limit concurrent retries", "[resilience]") {
  ConnectionPoolLimits l;
  CircuitBreaker none(l);
  CHECK(none.retry_limit() == UINT32_MAX);  // Istio's default maxRetries
  l.max_retries = 1;
  CircuitBreaker cb(l);
  CHECK(cb.admit_retry());
  CHECK_FALSE(cb.admit_retry());  // one retry in flight: the second is refused
  cb.release_retry();
  CHECK(cb.admit_retry());
  cb.release_retry();
  // A retry budget replaces maxRetries: max(min concurrency, percent of active + pending).
  RetryBudgetPolicy b;
  b.percent = 50;
  b.min_retry_concurrency = 2;
  cb.set_retry_budget(b);
  CHECK(cb.retry_limit() == 2);
  for (int i = 0; i < 10; ++i) REQUIRE(cb.admit_request());
  CHECK(cb.retry_limit() == 5);
  REQUIRE(cb.admit_pending());
  REQUIRE(cb.admit_pending());
  CHECK(cb.retry_limit() == 6);
  for (int i = 0; i < 6; ++i) CHECK(cb.admit_retry());
  CHECK_FALSE(cb.admit_retry());
  CHECK(cb.active_retries() == 6);
  // Without it, maxRetries again.
  cb.set_retry_budget(std::nullopt);
  CHECK(cb.retry_limit() == 1);
}
