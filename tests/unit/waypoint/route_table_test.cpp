#include "route_table.h"

#include <catch2/catch.hpp>
#include <string>

using namespace warren::waypoint;
using nlohmann::json;
using std::chrono::milliseconds;

namespace {

const char* kReviews = "reviews.default.svc.cluster.local";

json vs(const char* name, const char* ns, json spec, const char* created = "2024-01-01T00:00:00Z") {
  return json{{"apiVersion", "networking.istio.io/v1"},
              {"kind", "VirtualService"},
              {"metadata", {{"name", name}, {"namespace", ns}, {"creationTimestamp", created}}},
              {"spec", std::move(spec)}};
}

json hr(const char* name, const char* ns, json spec, const char* created = "2024-01-01T00:00:00Z") {
  return json{{"apiVersion", "gateway.networking.k8s.io/v1"},
              {"kind", "HTTPRoute"},
              {"metadata", {{"name", name}, {"namespace", ns}, {"creationTimestamp", created}}},
              {"spec", std::move(spec)}};
}

RouteTable table(std::vector<json> vss, std::vector<json> hrs = {}) {
  std::vector<std::string> errors;
  auto t = RouteTable::build(vss, hrs, RouteContext{}, &errors);
  for (const auto& e : errors) FAIL(e);
  return t;
}

std::vector<std::string> errors_of(std::vector<json> vss, std::vector<json> hrs = {}) {
  std::vector<std::string> errors;
  (void)RouteTable::build(vss, hrs, RouteContext{}, &errors);
  return errors;
}

struct Req {
  std::string method = "GET", path = "/", query;
  Headers headers;
  std::optional<uint16_t> port = 9080;
  RequestView view() const {
    RequestView v;
    v.method = method;
    v.authority = "reviews:9080";
    v.path = path;
    v.query = query;
    v.headers = &headers;
    v.port = port;
    return v;
  }
};

Req get(const char* path, Headers h = {}) {
  Req r;
  r.path = path;
  r.headers = std::move(h);
  return r;
}

const HttpRoute& route_for(const RouteTable& t, std::string_view host, const Req& q) {
  auto s = t.select(host, q.view());
  REQUIRE(s.route != nullptr);
  return *s.route;
}

json simple_route(const char* host, const char* subset = nullptr) {
  json d{{"host", host}};
  if (subset) d["subset"] = subset;
  return json{{"route", json::array({{{"destination", d}}})}};
}

}  // namespace

TEST_CASE("route table: hosts resolve in the VirtualService namespace", "[route_table]") {
  auto t = table(
      {vs("a", "default", {{"hosts", {"reviews"}}, {"http", {simple_route("reviews")}}}),
       vs("b", "shop", {{"hosts", {"ratings.other"}}, {"http", {simple_route("ratings")}}}),
       vs("c", "shop",
          {{"hosts", {"cart.shop.svc.cluster.local"}}, {"http", {simple_route("cart")}}}),
       vs("d", "shop", {{"hosts", {"*.example.com"}}, {"http", {simple_route("ext.shop.svc")}}})});
  CHECK(t.has_routes_for(kReviews));
  CHECK(t.has_routes_for("ratings.other.svc.cluster.local"));
  CHECK_FALSE(t.has_routes_for("ratings.shop.svc.cluster.local"));
  CHECK(t.has_routes_for("cart.shop.svc.cluster.local"));
  CHECK(t.has_routes_for("api.example.com"));
  CHECK(t.has_routes_for("a.b.example.com"));
  CHECK_FALSE(t.has_routes_for("example.com"));
  // Destination short names resolve in the VirtualService namespace too.
  CHECK(route_for(t, "ratings.other.svc.cluster.local", get("/")).destinations[0].host ==
        "ratings.shop.svc.cluster.local");
  CHECK(route_for(t, "x.example.com", get("/")).destinations[0].host ==
        "ext.shop.svc.cluster.local");
  auto none = t.select("productpage.default.svc.cluster.local", get("/").view());
  CHECK(none.route == nullptr);
  CHECK_FALSE(none.not_found);
}

TEST_CASE("route table: oldest VirtualService wins and exact hosts beat wildcards",
          "[route_table]") {
  auto t = table({vs("new", "default", {{"hosts", {"reviews"}}, {"http", {simple_route("v-new")}}},
                     "2024-05-01T00:00:00Z"),
                  vs("old", "default", {{"hosts", {"reviews"}}, {"http", {simple_route("v-old")}}},
                     "2023-05-01T00:00:00Z"),
                  vs("wild", "default",
                     {{"hosts", {"*.default.svc.cluster.local"}}, {"http", {simple_route("w")}}},
                     "2020-01-01T00:00:00Z"),
                  vs("all", "default", {{"hosts", {"*"}}, {"http", {simple_route("all")}}},
                     "2019-01-01T00:00:00Z")});
  auto s = t.select(kReviews, get("/").view());
  REQUIRE(s.route);
  CHECK(s.route->destinations[0].host == "v-old.default.svc.cluster.local");
  CHECK(s.source == "VirtualService default/old");
  CHECK(route_for(t, "details.default.svc.cluster.local", get("/")).destinations[0].host ==
        "w.default.svc.cluster.local");
  CHECK(route_for(t, "x.other.svc.cluster.local", get("/")).destinations[0].host ==
        "all.default.svc.cluster.local");
}

TEST_CASE("route table: first matching http route and 404 when none matches", "[route_table]") {
  json spec = {{"hosts", {"reviews"}},
               {"http",
                {{{"name", "jason"},
                  {"match", {{{"headers", {{"end-user", {{"exact", "jason"}}}}}}}},
                  {"route", {{{"destination", {{"host", "reviews"}, {"subset", "v2"}}}}}}},
                 {{"name", "api"},
                  {"match", {{{"uri", {{"exact", "/x"}}}}, {{"uri", {{"prefix", "/api/"}}}}}},
                  {"route", {{{"destination", {{"host", "reviews"}, {"subset", "v1"}}}}}}}}}};
  auto t = table({vs("reviews", "default", spec)});
  auto s = t.select(kReviews, get("/api/x", {{"End-User", "jason"}}).view());
  REQUIRE(s.route);
  CHECK(s.route->name == "jason");
  CHECK(s.matched_block == 0);
  s = t.select(kReviews, get("/api/x").view());
  REQUIRE(s.route);
  CHECK(s.route->name == "api");
  CHECK(s.matched_block == 1);
  CHECK(s.route->destinations[0].subset == "v1");
  s = t.select(kReviews, get("/other").view());
  CHECK(s.route == nullptr);
  CHECK(s.not_found);
  CHECK(s.source == "VirtualService default/reviews");
}

TEST_CASE("route table: weights as Istio writes them", "[route_table]") {
  json spec = {{"hosts", {"reviews"}},
               {"http",
                {{{"route",
                   {{{"destination", {{"host", "reviews"}, {"subset", "v1"}}}, {"weight", 1}},
                    {{"destination", {{"host", "reviews"}, {"subset", "v2"}}}, {"weight", 3}},
                    {{"destination", {{"host", "reviews"}, {"subset", "v3"}}}}}}}}}};
  auto t = table({vs("reviews", "default", spec)});
  const auto& d = route_for(t, kReviews, get("/")).destinations;
  REQUIRE(d.size() == 3);
  CHECK(d[0].weight == 1);
  CHECK(d[2].weight == 0);  // absent with several destinations: 0
  // rnd scales onto [0, 4): 0 -> v1, [1,4) -> v2, never v3.
  CHECK(pick_weighted(d, 0) == 0);
  CHECK(pick_weighted(d, 0x3fffffff) == 0);
  CHECK(pick_weighted(d, 0x40000000) == 1);
  CHECK(pick_weighted(d, 0xffffffff) == 1);
  size_t counts[3] = {};
  for (uint64_t r = 0; r < (1ull << 32); r += 1ull << 20)
    counts[pick_weighted(d, static_cast<uint32_t>(r))]++;
  CHECK(counts[0] == 1024);
  CHECK(counts[1] == 3072);
  CHECK(counts[2] == 0);
  // A single destination takes all traffic whatever its weight.
  auto one =
      table({vs("r", "default",
                {{"hosts", {"r"}},
                 {"http", {{{"route", {{{"destination", {{"host", "r"}}}, {"weight", 0}}}}}}}})});
  const auto& d1 = route_for(one, "r.default.svc.cluster.local", get("/")).destinations;
  CHECK(d1[0].weight == 100);
  CHECK(pick_weighted(d1, 12345) == 0);
}

TEST_CASE("route table: rewrite.uri replaces the matched prefix or the whole path",
          "[route_table]") {
  json spec = {
      {"hosts", {"reviews"}},
      {"http",
       {{{"match", {{{"uri", {{"exact", "/e"}}}}, {{"uri", {{"prefix", "/old/"}}}}}},
         {"rewrite", {{"uri", "/new/"}, {"authority", "reviews-v2"}}},
         {"route", {{{"destination", {{"host", "reviews"}}}}}}},
        {{"match", {{{"uri", {{"regex", "/r/.*"}}}}}},
         {"rewrite", {{"uri", "/fixed"}}},
         {"route", {{{"destination", {{"host", "reviews"}}}}}}},
        {{"match", {{{"uri", {{"prefix", "/v1/"}}}}}},
         {"rewrite", {{"uriRegexRewrite", {{"match", "^/v1/(.*)$"}, {"rewrite", "/v2/\\1"}}}}},
         {"route", {{{"destination", {{"host", "reviews"}}}}}}},
        {{"rewrite", {{"uri", "/all"}}}, {"route", {{{"destination", {{"host", "reviews"}}}}}}}}}};
  auto t = table({vs("reviews", "default", spec)});
  auto s = t.select(kReviews, get("/old/a/b").view());
  REQUIRE(s.route);
  CHECK(rewrite_path(*s.route, s.matched_block, "/old/a/b?x=1&y") == "/new/a/b?x=1&y");
  CHECK(s.route->rewrite_authority == "reviews-v2");
  s = t.select(kReviews, get("/e").view());
  CHECK(rewrite_path(*s.route, s.matched_block, "/e?q") == "/new/?q");
  s = t.select(kReviews, get("/r/zzz").view());
  CHECK(rewrite_path(*s.route, s.matched_block, "/r/zzz") == "/fixed");
  s = t.select(kReviews, get("/v1/items/3").view());
  CHECK(rewrite_path(*s.route, s.matched_block, "/v1/items/3?a=b") == "/v2/items/3?a=b");
  s = t.select(kReviews, get("/elsewhere").view());
  CHECK(s.matched_block == -1);
  CHECK(rewrite_path(*s.route, s.matched_block, "/elsewhere?k") == "/all?k");
  HttpRoute plain;
  CHECK(rewrite_path(plain, -1, "/same?x") == "/same?x");
}

TEST_CASE("route table: redirect and direct response", "[route_table]") {
  json spec = {{"hosts", {"reviews"}},
               {"http",
                {{{"match", {{{"uri", {{"prefix", "/old"}}}}}},
                  {"redirect",
                   {{"uri", "/new"},
                    {"authority", "shop.example.com"},
                    {"scheme", "https"},
                    {"port", 8443},
                    {"redirectCode", 308}}}},
                 {{"match", {{{"uri", {{"prefix", "/p"}}}}}},
                  {"redirect", {{"derivePort", "FROM_REQUEST_PORT"}}}},
                 {{"directResponse", {{"status", 503}, {"body", {{"bytes", "b3ZlcmxvYWQ="}}}}}}}}};
  auto t = table({vs("reviews", "default", spec)});
  Req q = get("/old/x");
  q.query = "a=1";
  auto s = t.select(kReviews, q.view());
  REQUIRE(s.route);
  REQUIRE(s.route->redirect);
  CHECK(s.route->redirect->code == 308);
  CHECK(redirect_location(*s.route, s.matched_block, q.view()) ==
        "https://shop.example.com:8443/new?a=1");
  q = get("/p");
  s = t.select(kReviews, q.view());
  CHECK(redirect_location(*s.route, s.matched_block, q.view()) == "http://reviews:9080/p");
  s = t.select(kReviews, get("/z").view());
  REQUIRE(s.route->direct_response);
  CHECK(s.route->direct_response->status == 503);
  CHECK(s.route->direct_response->body == "overload");
}

TEST_CASE("route table: timeouts retries fault mirrors and headers", "[route_table]") {
  json spec = {
      {"hosts", {"reviews"}},
      {"http",
       {{{"match", {{{"uri", {{"prefix", "/a"}}}}}},
         {"timeout", "1.5s"},
         {"retries",
          {{"attempts", 3},
           {"perTryTimeout", "250ms"},
           {"retryOn", "gateway-error,connect-failure,409"}}},
         {"fault",
          {{"delay", {{"fixedDelay", "2m"}, {"percentage", {{"value", 12.5}}}}},
           {"abort", {{"grpcStatus", "UNAVAILABLE"}, {"percentage", {{"value", 100}}}}}}},
         {"mirror", {{"host", "shadow"}, {"port", {{"number", 9090}}}}},
         {"mirrorPercentage", {{"value", 5}}},
         {"headers",
          {{"request", {{"set", {{"x-a", "1"}}}, {"add", {{"x-b", "2"}}}, {"remove", {"X-C"}}}},
           {"response", {{"set", {{"x-resp", "y"}}}}}}},
         {"route",
          {{{"destination", {{"host", "reviews"}}},
            {"headers", {{"request", {{"set", {{"x-dest", "v1"}}}}}}}}}}},
        {{"match", {{{"uri", {{"prefix", "/b"}}}}}},
         {"retries", {{"attempts", 0}}},
         {"route", {{{"destination", {{"host", "reviews"}}}}}}},
        simple_route("reviews")}}};
  auto t = table({vs("reviews", "default", spec)});
  const auto& a = route_for(t, kReviews, get("/a"));
  CHECK(a.timeout == milliseconds(1500));
  REQUIRE(a.retries);
  CHECK(a.retries->attempts == 3);
  CHECK(a.retries->per_try_timeout == milliseconds(250));
  CHECK(a.retries->on ==
        (kRetryOnGatewayError | kRetryOnConnectFailure | kRetryOnRetriableStatusCodes));
  CHECK(a.retries->retriable_status_codes == std::vector<int>{409});
  REQUIRE(a.fault);
  CHECK(a.fault->delay == milliseconds(120000));
  CHECK(a.fault->delay_percent == 12.5);
  CHECK(a.fault->abort_grpc_status == 14);
  REQUIRE(a.mirrors.size() == 1);
  CHECK(a.mirrors[0].dest.host == "shadow.default.svc.cluster.local");
  CHECK(a.mirrors[0].dest.port == 9090);
  CHECK(a.mirrors[0].percent == 5);
  Headers h{{"X-A", "old"}, {"x-c", "gone"}, {"keep", "k"}};
  a.request_headers.apply(h);
  CHECK(h == Headers{{"keep", "k"}, {"x-a", "1"}, {"x-b", "2"}});
  CHECK(a.response_headers.set[0].name == "x-resp");
  CHECK(a.destinations[0].request.set[0].value == "v1");
  const auto& b = route_for(t, kReviews, get("/b"));
  CHECK(b.retry_policy().attempts == 0);
  const auto& c = route_for(t, kReviews, get("/c"));
  CHECK_FALSE(c.retries);
  CHECK(c.retry_policy().attempts == 2);
  CHECK(c.retry_policy().on == kIstioDefaultRetryOn);
  CHECK(c.retry_policy().retriable_status_codes == std::vector<int>{503});
}

TEST_CASE("route table: fault decisions from injected randomness", "[route_table]") {
  FaultPolicy f;
  f.delay = milliseconds(100);
  f.delay_percent = 50;
  f.abort_http_status = 503;
  f.abort_percent = 10;
  auto d = decide_fault(f, 0, 0);
  CHECK(d.delay == milliseconds(100));
  CHECK(d.http_status == 503);
  d = decide_fault(f, 0x80000000u, 0x20000000u);  // 50% and 12.5%: both miss
  CHECK_FALSE(d.delay);
  CHECK_FALSE(d.http_status);
  CHECK(percent_hit(100, 0xffffffffu));
  CHECK_FALSE(percent_hit(0, 0));
  FaultPolicy none;
  none.delay = milliseconds(5);  // percentage absent: never
  CHECK_FALSE(decide_fault(none, 0, 0).delay);
}

TEST_CASE("route table: VirtualServices bound only to gateways are ignored", "[route_table]") {
  auto t =
      table({vs("gw", "default",
                {{"hosts", {"reviews"}}, {"gateways", {"ingress"}}, {"http", {simple_route("x")}}}),
             vs("both", "default",
                {{"hosts", {"ratings"}},
                 {"gateways", {"ingress", "mesh"}},
                 {"http",
                  {{{"match", {{{"gateways", {"ingress"}}, {"uri", {{"prefix", "/gw"}}}}}},
                    {"route", {{{"destination", {{"host", "gw-only"}}}}}}},
                   simple_route("ratings")}}})});
  CHECK_FALSE(t.has_routes_for(kReviews));
  auto& r = route_for(t, "ratings.default.svc.cluster.local", get("/gw"));
  CHECK(r.destinations[0].host == "ratings.default.svc.cluster.local");
}

TEST_CASE("route table: errors name the object and the JSON pointer", "[route_table]") {
  auto bad_weight =
      vs("reviews", "default",
         {{"hosts", {"reviews"}},
          {"http", {{{"route", {{{"destination", {{"host", "a"}}}, {"weight", -1}}}}}}}});
  auto good = vs("ok", "default", {{"hosts", {"ratings"}}, {"http", {simple_route("ratings")}}});
  std::vector<std::string> errors;
  auto t = RouteTable::build({bad_weight, good}, {}, RouteContext{}, &errors);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0] ==
        "VirtualService default/reviews: /spec/http/0/route/0/weight: must be a non-negative "
        "integer");
  CHECK(t.has_routes_for("ratings.default.svc.cluster.local"));
  CHECK_FALSE(t.has_routes_for(kReviews));

  auto one = [](json spec) {
    auto e = errors_of({vs("r", "ns1", std::move(spec))});
    REQUIRE(e.size() == 1);
    return e[0];
  };
  CHECK(one({{"http", {simple_route("a")}}}) ==
        "VirtualService ns1/r: /spec/hosts: at least one host is required");
  CHECK(one({{"hosts", {"a"}},
             {"http", {{{"timeout", "10 s"}, {"route", {{{"destination", {{"host", "a"}}}}}}}}}}) ==
        "VirtualService ns1/r: /spec/http/0/timeout: \"10 s\" is not a duration: missing or "
        "unknown unit (ns, us, ms, s, m, h)");
  CHECK(one({{"hosts", {"a"}},
             {"http",
              {{{"match", {{{"uri", {{"regex", "("}}}}}},
                {"route", {{{"destination", {{"host", "a"}}}}}}}}}})
            .rfind("VirtualService ns1/r: /spec/http/0/match/0/uri/regex: \"(\" is not a valid RE2 "
                   "expression",
                   0) == 0);
  CHECK(
      one({{"hosts", {"a"}},
           {"http",
            {{{"redirect", {{"uri", "/x"}}}, {"route", {{{"destination", {{"host", "a"}}}}}}}}}}) ==
      "VirtualService ns1/r: /spec/http/0: only one of route, redirect, directResponse may be set");
  CHECK(
      one({{"hosts", {"a"}},
           {"http",
            {{{"retries", {{"attempts", 2}, {"retryOn", "5xx,bogus"}}},
              {"route", {{{"destination", {{"host", "a"}}}}}}}}}}) ==
      "VirtualService ns1/r: /spec/http/0/retries/retryOn: \"bogus\" is not a valid retryOn value");
  CHECK(
      one({{"hosts", {"a"}},
           {"http",
            {{{"fault", {{"abort", {{"httpStatus", 700}}}}},
              {"route", {{{"destination", {{"host", "a"}}}}}}}}}}) ==
      "VirtualService ns1/r: /spec/http/0/fault/abort/httpStatus: must be an HTTP status 200-599");
  CHECK(one({{"hosts", {"a"}},
             {"http",
              {{{"mirrorPercentage", {{"value", 101}}},
                {"mirror", {{"host", "m"}}},
                {"route", {{{"destination", {{"host", "a"}}}}}}}}}}) ==
        "VirtualService ns1/r: /spec/http/0/mirrorPercentage/value: must be a number 0-100");
  CHECK(
      one({{"hosts", {"a"}},
           {"http",
            {{{"route", {{{"destination", {{"host", "a"}, {"port", {{"number", 70000}}}}}}}}}}}}) ==
      "VirtualService ns1/r: /spec/http/0/route/0/destination/port/number: must be a port number "
      "1-65535");
  CHECK(one({{"hosts", {"a"}},
             {"http",
              {{{"headers", {{"request", {{"set", {{":path", "/x"}}}}}}},
                {"route", {{{"destination", {{"host", "a"}}}}}}}}}}) ==
        "VirtualService ns1/r: /spec/http/0/headers/request/set/:path: cannot modify the :path "
        "header");
  // Unknown fields are ignored (forward compatibility).
  CHECK(errors_of({vs("r", "ns1",
                      {{"hosts", {"a"}},
                       {"futureField", 1},
                       {"http",
                        {{{"newThing", true}, {"route", {{{"destination", {{"host", "a"}}}}}}}}}})})
            .empty());
}

TEST_CASE("route table: Istio durations", "[route_table]") {
  using spec::parse_duration;
  CHECK(parse_duration("1.5s").value() == milliseconds(1500));
  CHECK(parse_duration("250ms").value() == milliseconds(250));
  CHECK(parse_duration("2m").value() == milliseconds(120000));
  CHECK(parse_duration("1h30m").value() == milliseconds(5400000));
  CHECK(parse_duration("0").value() == milliseconds(0));
  CHECK(parse_duration("0s").value() == milliseconds(0));
  CHECK(parse_duration("1500us").value() == milliseconds(1));
  for (const char* bad : {"", "s", "1", "-1s", "1x", "1.2.3s", "ms5", "1s "})
    CHECK_FALSE(parse_duration(bad).ok());
}

TEST_CASE("route table: HTTPRoute attached to a Service", "[route_table][gamma]") {
  json spec = {
      {"parentRefs", {{{"group", ""}, {"kind", "Service"}, {"name", "reviews"}}}},
      {"rules",
       {{{"matches", {{{"path", {{"type", "PathPrefix"}, {"value", "/api/"}}}}}},
         {"filters",
          {{{"type", "URLRewrite"},
            {"urlRewrite",
             {{"path", {{"type", "ReplacePrefixMatch"}, {"replacePrefixMatch", "/"}}}}}}}},
         {"backendRefs",
          {{{"name", "reviews-v1"}, {"port", 9080}, {"weight", 90}},
           {{"name", "reviews-v2"}, {"port", 9080}, {"weight", 10}}}}},
        {{"matches", {{{"path", {{"type", "Exact"}, {"value", "/api/health"}}}}}},
         {"backendRefs", {{{"name", "health"}, {"port", 8080}}}}},
        {{"matches", {{{"headers", {{{"name", "X-Canary"}, {"value", "true"}}}}}}},
         {"timeouts", {{"request", "5s"}, {"backendRequest", "1s"}}},
         {"backendRefs", {{{"name", "reviews-v3"}, {"namespace", "canary"}, {"port", 9080}}}}}}}};
  auto t = table({}, {hr("reviews", "default", spec)});
  CHECK(t.has_routes_for(kReviews));
  // Exact beats prefix, whatever the rule order.
  auto s = t.select(kReviews, get("/api/health").view());
  REQUIRE(s.route);
  CHECK(s.route->destinations[0].host == "health.default.svc.cluster.local");
  CHECK(s.source == "HTTPRoute default/reviews");
  // Prefix matches whole path elements, and rewrites them.
  s = t.select(kReviews, get("/api/v1/x").view());
  REQUIRE(s.route);
  REQUIRE(s.route->destinations.size() == 2);
  CHECK(s.route->destinations[0].weight == 90);
  CHECK(s.route->destinations[1].port == 9080);
  CHECK(rewrite_path(*s.route, s.matched_block, "/api/v1/x?q=1") == "/v1/x?q=1");
  CHECK(rewrite_path(*s.route, s.matched_block, "/api") == "/");
  CHECK(t.select(kReviews, get("/api").view()).route == s.route);
  // The longer prefix (/api/) outranks the implicit "/" of the header rule.
  s = t.select(kReviews, get("/api/x", {{"x-canary", "true"}}).view());
  CHECK(s.route->destinations.size() == 2);
  s = t.select(kReviews, get("/apix", {{"x-canary", "true"}}).view());
  REQUIRE(s.route);
  CHECK(s.route->destinations[0].host == "reviews-v3.canary.svc.cluster.local");
  CHECK(s.route->timeout == milliseconds(5000));
  CHECK(s.route->retry_policy().per_try_timeout == milliseconds(1000));
  s = t.select(kReviews, get("/apix").view());
  CHECK(s.route == nullptr);
  CHECK(s.not_found);
}

TEST_CASE("route table: HTTPRoute precedence across routes and parent ports",
          "[route_table][gamma]") {
  json older = {{"parentRefs", {{{"kind", "Service"}, {"name", "reviews"}, {"port", 9080}}}},
                {"rules",
                 {{{"matches", {{{"path", {{"value", "/a"}}}}}},
                   {"backendRefs", {{{"name", "old"}, {"port", 1}}}}}}}};
  json newer = {
      {"parentRefs", {{{"kind", "Service"}, {"name", "reviews"}}}},
      {"rules",
       {{{"matches",
          {{{"path", {{"value", "/a"}}}, {"method", "POST"}}, {{"path", {{"value", "/a"}}}}}},
         {"backendRefs", {{{"name", "new"}, {"port", 1}}}}}}}};
  json gateway = {{"parentRefs", {{{"name", "ingress"}}}},
                  {"rules", {{{"backendRefs", {{{"name", "x"}, {"port", 1}}}}}}}};
  auto t = table(
      {}, {hr("new", "default", newer, "2024-02-01T00:00:00Z"),
           hr("old", "default", older, "2024-01-01T00:00:00Z"), hr("gw", "default", gateway)});
  Req post = get("/a/b");
  post.method = "POST";
  CHECK(route_for(t, kReviews, post).destinations[0].host == "new.default.svc.cluster.local");
  CHECK(route_for(t, kReviews, get("/a/b")).destinations[0].host ==
        "old.default.svc.cluster.local");
  Req other_port = get("/a/b");
  other_port.port = 8080;  // the older route attaches to port 9080 only
  CHECK(route_for(t, kReviews, other_port).destinations[0].host == "new.default.svc.cluster.local");
  CHECK(t.size() == 1);  // the Gateway-bound route is not ours
  // A VirtualService for the host takes precedence over HTTPRoutes.
  auto both = table({vs("v", "default", {{"hosts", {"reviews"}}, {"http", {simple_route("vs")}}})},
                    {hr("new", "default", newer)});
  CHECK(route_for(both, kReviews, get("/a")).destinations[0].host ==
        "vs.default.svc.cluster.local");
}

TEST_CASE("route table: HTTPRoute filters redirects and errors", "[route_table][gamma]") {
  json spec = {
      {"parentRefs", {{{"kind", "Service"}, {"name", "reviews"}}}},
      {"rules",
       {{{"matches", {{{"path", {{"value", "/old"}}}}}},
         {"filters",
          {{{"type", "RequestRedirect"},
            {"requestRedirect",
             {{"scheme", "https"},
              {"hostname", "example.com"},
              {"path", {{"type", "ReplacePrefixMatch"}, {"replacePrefixMatch", "/new"}}}}}}}}},
        {{"matches", {{{"path", {{"value", "/m"}}}}}},
         {"filters",
          {{{"type", "RequestHeaderModifier"},
            {"requestHeaderModifier",
             {{"set", {{{"name", "x-a"}, {"value", "1"}}}}, {"remove", {"x-b"}}}}},
           {{"type", "RequestMirror"},
            {"requestMirror",
             {{"backendRef", {{"name", "shadow"}, {"port", 80}}},
              {"fraction", {{"numerator", 1}, {"denominator", 4}}}}}}}},
         {"backendRefs", {{{"name", "m"}, {"port", 80}}}}},
        {{"matches", {{{"path", {{"value", "/none"}}}}}}}}}};
  auto t = table({}, {hr("r", "default", spec)});
  Req q = get("/old/page");
  auto s = t.select(kReviews, q.view());
  REQUIRE(s.route);
  REQUIRE(s.route->redirect);
  CHECK(s.route->redirect->code == 302);
  CHECK(redirect_location(*s.route, s.matched_block, q.view()) == "https://example.com/new/page");
  s = t.select(kReviews, get("/m").view());
  CHECK(s.route->request_headers.set[0].name == "x-a");
  CHECK(s.route->request_headers.remove[0] == "x-b");
  REQUIRE(s.route->mirrors.size() == 1);
  CHECK(s.route->mirrors[0].percent == 25);
  s = t.select(kReviews, get("/none").view());
  REQUIRE(s.route->direct_response);
  CHECK(s.route->direct_response->status == 500);

  auto one = [](json rules) {
    auto e = errors_of({}, {hr("r", "default",
                               {{"parentRefs", {{{"kind", "Service"}, {"name", "x"}}}},
                                {"rules", std::move(rules)}})});
    REQUIRE(e.size() == 1);
    return e[0];
  };
  CHECK(one({{{"backendRefs", {{{"name", "a"}}}}}}) ==
        "HTTPRoute default/r: /spec/rules/0/backendRefs/0/port: is required for a Service backend");
  CHECK(one({{{"matches", {{{"path", {{"type", "Glob"}, {"value", "/x"}}}}}}}}) ==
        "HTTPRoute default/r: /spec/rules/0/matches/0/path/type: must be Exact, PathPrefix or "
        "RegularExpression");
  CHECK(one({{{"filters", {{{"type", "ExtensionRef"}}}}}}) ==
        "HTTPRoute default/r: /spec/rules/0/filters/0/type: \"ExtensionRef\" filters are not "
        "supported");
  CHECK(one({{{"timeouts", {{"request", "soon"}}}}})
            .rfind("HTTPRoute default/r: /spec/rules/0/timeouts/request: ", 0) == 0);
}

TEST_CASE("route table: header operations apply in Envoy order", "[route_table]") {
  HeaderOps ops;
  ops.remove = {"x-del"};
  ops.set = {{"x-set", "new"}};
  ops.add = {{"x-add", "2"}};
  Headers h{{"X-Set", "a"}, {"x-set", "b"}, {"X-Del", "1"}, {"x-add", "1"}};
  ops.apply(h);
  CHECK(h == Headers{{"x-add", "1"}, {"x-set", "new"}, {"x-add", "2"}});
  CHECK_FALSE(ops.empty());
  CHECK(HeaderOps{}.empty());
}
