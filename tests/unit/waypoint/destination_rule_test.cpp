#include "destination_rule.h"

#include <catch2/catch.hpp>

using namespace warren::waypoint;
using nlohmann::json;
using std::chrono::milliseconds;

namespace {

const char* kReviews = "reviews.default.svc.cluster.local";

json dr(const char* name, const char* ns, json spec, const char* created = "2024-01-01T00:00:00Z") {
  return json{{"apiVersion", "networking.istio.io/v1"},
              {"kind", "DestinationRule"},
              {"metadata", {{"name", name}, {"namespace", ns}, {"creationTimestamp", created}}},
              {"spec", std::move(spec)}};
}

DestinationRules rules(std::vector<json> objs) {
  std::vector<std::string> errors;
  auto r = DestinationRules::build(objs, RouteContext{}, &errors);
  for (const auto& e : errors) FAIL(e);
  return r;
}

std::string error_of(json spec) {
  std::vector<std::string> errors;
  (void)DestinationRules::build({dr("reviews", "default", std::move(spec))}, RouteContext{},
                                &errors);
  REQUIRE(errors.size() == 1);
  return errors[0];
}

}  // namespace

TEST_CASE("destination rule: defaults without a rule are Istio's", "[destination_rule]") {
  auto r = rules({});
  const auto& p = r.policy(kReviews, "", 9080);
  CHECK(p.lb.kind == LbKind::kLeastRequest);
  CHECK(p.pool.max_connections == UINT32_MAX);
  CHECK(p.pool.max_requests == UINT32_MAX);
  CHECK(p.pool.max_requests_per_connection == 0);
  CHECK(p.pool.connect_timeout == milliseconds(10000));
  CHECK_FALSE(p.outlier.enabled);
  CHECK(r.subset(kReviews, "v1") == nullptr);
}

TEST_CASE("destination rule: traffic policy sections and outlier defaults", "[destination_rule]") {
  auto r = rules(
      {dr("reviews", "default",
          {{"host", "reviews"},
           {"trafficPolicy",
            {{"loadBalancer", {{"simple", "ROUND_ROBIN"}}},
             {"connectionPool",
              {{"tcp", {{"maxConnections", 100}, {"connectTimeout", "30ms"}}},
               {"http",
                {{"http1MaxPendingRequests", 1},
                 {"http2MaxRequests", 0},
                 {"maxRequestsPerConnection", 10},
                 {"maxRetries", 3},
                 {"idleTimeout", "1m"}}}}},
             {"outlierDetection", {{"consecutiveGatewayErrors", 2}, {"interval", "1s"}}}}}})});
  const auto& p = r.policy(kReviews, "", 9080);
  CHECK(p.lb.kind == LbKind::kRoundRobin);
  CHECK(p.pool.max_connections == 100);
  CHECK(p.pool.connect_timeout == milliseconds(30));
  CHECK(p.pool.max_pending_requests == 1);
  CHECK(p.pool.max_requests == UINT32_MAX);  // 0 keeps the default
  CHECK(p.pool.max_requests_per_connection == 10);
  CHECK(p.pool.max_retries == 3);
  CHECK(p.pool.idle_timeout == milliseconds(60000));
  CHECK(p.outlier.enabled);
  CHECK(p.outlier.consecutive_5xx == 5);
  CHECK(p.outlier.consecutive_gateway == 2);
  CHECK(p.outlier.interval == milliseconds(1000));
  CHECK(p.outlier.base_ejection_time == milliseconds(30000));
  CHECK(p.outlier.max_ejection_percent == 10);
  CHECK(p.outlier.min_health_percent == 0);
}

TEST_CASE("destination rule: subsets merge over the top level as Istio does",
          "[destination_rule]") {
  json spec = {
      {"host", "reviews.default.svc.cluster.local"},
      {"trafficPolicy",
       {{"loadBalancer", {{"simple", "RANDOM"}}},
        {"connectionPool", {{"tcp", {{"maxConnections", 10}}}}},
        {"portLevelSettings",
         {{{"port", {{"number", 9443}}}, {"loadBalancer", {{"simple", "ROUND_ROBIN"}}}}}}}},
      {"subsets",
       {{{"name", "v1"}, {"labels", {{"version", "v1"}}}},
        {{"name", "v2"},
         {"labels", {{"version", "v2"}, {"track", "canary"}}},
         {"trafficPolicy",
          {{"connectionPool", {{"http", {{"http2MaxRequests", 7}}}}},
           {"portLevelSettings",
            {{{"port", {{"number", 9080}}},
              {"outlierDetection", {{"consecutive5xxErrors", 1}}}}}}}}}}}};
  auto r = rules({dr("reviews", "default", spec)});
  // Top level, and its port-level settings replace every section.
  CHECK(r.policy(kReviews, "", 80).lb.kind == LbKind::kRandom);
  CHECK(r.policy(kReviews, "", 9443).lb.kind == LbKind::kRoundRobin);
  CHECK(r.policy(kReviews, "", 9443).pool.max_connections == UINT32_MAX);
  // v1 inherits the top level.
  const Subset* v1 = r.subset(kReviews, "v1");
  REQUIRE(v1);
  CHECK(v1->policy.lb.kind == LbKind::kRandom);
  CHECK(v1->policy.pool.max_connections == 10);
  CHECK(r.policy(kReviews, "v1", 9443).lb.kind == LbKind::kRoundRobin);
  // v2: its connectionPool replaces the top level's as a whole.
  CHECK(r.policy(kReviews, "v2", 80).lb.kind == LbKind::kRandom);
  CHECK(r.policy(kReviews, "v2", 80).pool.max_requests == 7);
  CHECK(r.policy(kReviews, "v2", 80).pool.max_connections == UINT32_MAX);
  // v2 on 9080: the subset's port-level settings replace every section.
  const auto& p = r.policy(kReviews, "v2", 9080);
  CHECK(p.outlier.enabled);
  CHECK(p.outlier.consecutive_5xx == 1);
  CHECK(p.lb.kind == LbKind::kLeastRequest);
  CHECK(p.pool.max_requests == UINT32_MAX);
  // Unknown subset: the top-level policy.
  CHECK(r.policy(kReviews, "v9", 80).lb.kind == LbKind::kRandom);

  const Subset* v2 = r.subset(kReviews, "v2");
  REQUIRE(v2);
  CHECK(subset_matches(*v2, {{"version", "v2"}, {"track", "canary"}, {"app", "reviews"}}));
  CHECK_FALSE(subset_matches(*v2, {{"version", "v2"}}));
  CHECK_FALSE(subset_matches(*v1, {{"version", "v2"}}));
  CHECK(subset_matches(Subset{}, {}));
}

TEST_CASE("destination rule: consistent hash keys", "[destination_rule]") {
  auto lb = [](json ch) {
    auto r = rules({dr(
        "reviews", "default",
        {{"host", "reviews"}, {"trafficPolicy", {{"loadBalancer", {{"consistentHash", ch}}}}}})});
    return r.policy(kReviews, "", 80).lb;
  };
  auto h = lb({{"httpHeaderName", "X-User"}});
  CHECK(h.kind == LbKind::kConsistentHash);
  CHECK(h.hash.source == ConsistentHashPolicy::Source::kHeader);
  CHECK(h.hash.name == "x-user");
  auto c = lb({{"httpCookie", {{"name", "session"}, {"ttl", "10s"}, {"path", "/"}}},
               {"ringHash", {{"minimumRingSize", 64}}}});
  CHECK(c.hash.source == ConsistentHashPolicy::Source::kCookie);
  CHECK(c.hash.cookie_ttl == milliseconds(10000));
  CHECK(c.hash.minimum_ring_size == 64);
  CHECK(lb({{"useSourceIp", true}}).hash.source == ConsistentHashPolicy::Source::kSourceIp);
  CHECK(lb({{"httpQueryParameterName", "user"}}).hash.source ==
        ConsistentHashPolicy::Source::kQueryParam);
  CHECK(lb({{"useSourceIp", true}, {"maglev", {{"tableSize", 65537}}}}).hash.maglev);
}

TEST_CASE("destination rule: several rules for one host and wildcards", "[destination_rule]") {
  auto r = rules(
      {dr("b", "default",
          {{"host", "reviews"},
           {"trafficPolicy", {{"loadBalancer", {{"simple", "RANDOM"}}}}},
           {"subsets", {{{"name", "v1"}, {"labels", {{"version", "B"}}}}, {{"name", "v2"}}}}},
          "2024-03-01T00:00:00Z"),
       dr("a", "default",
          {{"host", "reviews"}, {"subsets", {{{"name", "v1"}, {"labels", {{"version", "A"}}}}}}},
          "2024-01-01T00:00:00Z"),
       dr("w", "istio-system",
          {{"host", "*.svc.cluster.local"},
           {"trafficPolicy", {{"loadBalancer", {{"simple", "ROUND_ROBIN"}}}}}})});
  // The oldest rule's policy; subsets from both, the oldest winning a name.
  CHECK(r.policy(kReviews, "", 80).lb.kind == LbKind::kLeastRequest);
  CHECK(r.subset(kReviews, "v1")->labels.at("version") == "A");
  CHECK(r.subset(kReviews, "v2") != nullptr);
  CHECK(r.policy("ratings.default.svc.cluster.local", "", 80).lb.kind == LbKind::kRoundRobin);
  CHECK(r.has_rule_for("ratings.default.svc.cluster.local"));
  CHECK_FALSE(r.has_rule_for("example.com"));
}

TEST_CASE("destination rule: errors name the object and the JSON pointer", "[destination_rule]") {
  CHECK(error_of({{"trafficPolicy", json::object()}}) ==
        "DestinationRule default/reviews: /spec/host: is required");
  CHECK(error_of({{"host", "r"}, {"trafficPolicy", {{"loadBalancer", {{"simple", "FASTEST"}}}}}}) ==
        "DestinationRule default/reviews: /spec/trafficPolicy/loadBalancer/simple: must be one of "
        "UNSPECIFIED, ROUND_ROBIN, LEAST_REQUEST, RANDOM, PASSTHROUGH");
  CHECK(error_of({{"host", "r"},
                  {"trafficPolicy", {{"outlierDetection", {{"maxEjectionPercent", 150}}}}}}) ==
        "DestinationRule default/reviews: /spec/trafficPolicy/outlierDetection/maxEjectionPercent: "
        "must be an integer 0-100");
  CHECK(error_of({{"host", "r"},
                  {"trafficPolicy", {{"outlierDetection", {{"baseEjectionTime", "0s"}}}}}}) ==
        "DestinationRule default/reviews: /spec/trafficPolicy/outlierDetection/baseEjectionTime: "
        "must be at least 1ms");
  CHECK(error_of({{"host", "r"},
                  {"trafficPolicy", {{"connectionPool", {{"tcp", {{"maxConnections", -1}}}}}}}}) ==
        "DestinationRule default/reviews: /spec/trafficPolicy/connectionPool/tcp/maxConnections: "
        "must be a non-negative integer");
  CHECK(error_of({{"host", "r"}, {"subsets", {{{"name", "v1"}}, {{"name", "v1"}}}}}) ==
        "DestinationRule default/reviews: /spec/subsets/1/name: duplicate subset name \"v1\"");
  CHECK(error_of({{"host", "r"},
                  {"trafficPolicy",
                   {{"loadBalancer",
                     {{"consistentHash", {{"httpHeaderName", "x"}, {"useSourceIp", true}}}}}}}}) ==
        "DestinationRule default/reviews: /spec/trafficPolicy/loadBalancer/consistentHash: exactly "
        "one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName is required");
  CHECK(
      error_of({{"host", "r"},
                {"subsets",
                 {{{"name", "v1"},
                   {"trafficPolicy", {{"portLevelSettings", {{{"port", {{"number", 0}}}}}}}}}}}}) ==
      "DestinationRule default/reviews: "
      "/spec/subsets/0/trafficPolicy/portLevelSettings/0/port/number: must be a port number "
      "1-65535");
  // A bad rule rejects only itself; unknown fields are ignored.
  std::vector<std::string> errors;
  auto r = DestinationRules::build(
      {dr("bad", "default", {{"host", 5}}),
       dr("good", "default",
          {{"host", "ratings"}, {"tls", {{"mode", "ISTIO_MUTUAL"}}}, {"someday", 1}})},
      RouteContext{}, &errors);
  CHECK(errors.size() == 1);
  CHECK(r.size() == 1);
  CHECK(r.has_rule_for("ratings.default.svc.cluster.local"));
}

TEST_CASE("destination rule: retryBudget at the traffic policy and subset levels", "[destination_rule]") {
  auto r = rules({dr("reviews", "default", json::parse(R"({"host": "reviews",
      "trafficPolicy": {"retryBudget": {"percent": {"value": 25}, "minRetryConcurrency": 5},
                        "portLevelSettings": [{"port": {"number": 9080},
                                               "connectionPool": {"http": {"maxRetries": 7}}}]},
      "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                  {"name": "v2", "labels": {"version": "v2"}, "trafficPolicy": {"retryBudget": {"percent": 10}}}]})"))});
  const auto& top = r.policy(kReviews, "", 80);
  REQUIRE(top.retry_budget);
  CHECK(top.retry_budget->percent == 25);
  CHECK(top.retry_budget->min_retry_concurrency == 5);
  // Port-level settings keep the budget (it has no port-level form).
  const auto& port = r.policy(kReviews, "", 9080);
  REQUIRE(port.retry_budget);
  CHECK(port.retry_budget->percent == 25);
  CHECK(port.pool.max_retries == 7);
  CHECK(r.policy(kReviews, "v1", 80).retry_budget->percent == 25);
  const auto& v2 = r.policy(kReviews, "v2", 80);
  REQUIRE(v2.retry_budget);
  CHECK(v2.retry_budget->percent == 10);
  CHECK(v2.retry_budget->min_retry_concurrency == 3);  // Istio's default
  CHECK_FALSE(rules({dr("reviews", "default", json::parse(R"({"host": "reviews"})"))})
                  .policy(kReviews, "", 80).retry_budget);
  CHECK(error_of(json::parse(R"({"host": "reviews", "trafficPolicy": {"retryBudget": {"percent": 120}}})"))
            .find("/spec/trafficPolicy/retryBudget/percent: must be a number 0-100") != std::string::npos);
  CHECK(error_of(json::parse(R"({"host": "reviews", "trafficPolicy": {"retryBudget": {"minRetryConcurrency": -1}}})"))
            .find("/spec/trafficPolicy/retryBudget/minRetryConcurrency") != std::string::npos);
  CHECK(top.retry_budget->interval == std::chrono::milliseconds(0));  // absent: the requests in flight
  auto w = rules({dr("reviews", "default", json::parse(R"({"host": "reviews",
      "trafficPolicy": {"retryBudget": {"percent": 20, "budgetInterval": "10s"}}})"))});
  CHECK(w.policy(kReviews, "", 80).retry_budget->interval == std::chrono::seconds(10));
  CHECK(error_of(json::parse(R"({"host": "reviews", "trafficPolicy": {"retryBudget": {"budgetInterval": "ten"}}})"))
            .find("/spec/trafficPolicy/retryBudget/budgetInterval") != std::string::npos);
}
