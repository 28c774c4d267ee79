// warren-waypoint between two warren-nodes on loopback: the client's node
// sends traffic for the echo service to the waypoint over HBONE, the waypoint
// routes each HTTP/1.1 request (VirtualService, DestinationRule) and forwards
// it over HBONE to the chosen pod through node-b.
#include <catch2/catch.hpp>
#include <algorithm>
#include <set>
#include <sstream>

#include "test_issuer.h"
#include "waypoint_fixture.h"

using namespace warren::e2e;
using nlohmann::json;

namespace {
// Counts answers by backend over `n` requests on `conns` keep-alive connections.
std::map<std::string, int> spread(WaypointMesh& w, int n, int conns,
                                  const std::vector<std::pair<std::string, std::string>>& h = {}) {
  std::map<std::string, int> by;
  std::vector<HttpClientConn> cs;
  for (int i = 0; i < conns; ++i) cs.push_back(w.connect());
  for (int i = 0; i < n; ++i) {
    auto r = cs[i % conns].request("GET", "/spread/" + std::to_string(i), h);
    by[r.status == 200 ? r.header("x-backend") : "status " + std::to_string(r.status)]++;
  }
  return by;
}
}  // namespace

TEST_CASE("waypoint: requests to a service behind it are routed there and reach the pods", "[e2e][waypoint]") {
  WaypointMesh w;
  HttpBackend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  auto c = w.connect();
  for (int i = 0; i < 4; ++i) {
    auto r = c.request("GET", "/hello?x=" + std::to_string(i));
    REQUIRE(r.status == 200);
    CHECK(r.body.find("GET /hello?x=" + std::to_string(i)) != std::string::npos);
  }
  // One client connection, several requests: all over the waypoint. (Which pod
  // each goes to is the default LEAST_REQUEST balancer's choice: with equal
  // load it picks at random, so both pods need not be seen in 4 requests.)
  CHECK(v1.requests() + v2.requests() == 4);
  // Upstream keep-alive: one connection per pod, reused (a new HBONE stream and
  // backend connection per request would show here).
  for (int i = 0; i < 6; ++i) REQUIRE(c.request("GET", "/again").status == 200);
  auto c2 = w.connect();
  for (int i = 0; i < 4; ++i) REQUIRE(c2.request("GET", "/other-client").status == 200);
  CHECK(v1.connections() + v2.connections() <= 3);
  // The backend saw the proxy's headers and the client's address.
  auto seen = v1.seen();
  for (auto& q : v2.seen()) seen.push_back(q);
  REQUIRE(!seen.empty());
  CHECK(seen[0].header("x-forwarded-for") == w.s.client);
  CHECK(!seen[0].header("x-request-id").empty());
  CHECK(!seen[0].header("traceparent").empty());
  CHECK(v1.requests() + v2.requests() == 14);
  // Waypoint metrics: reporter="waypoint", Istio's labels.
  auto m = w.metrics();
  CHECK(metric_sum(m, "istio_requests_total",
                   {{"reporter", "waypoint"},
                    {"response_code", "200"},
                    {"source_workload", "sleep"},
                    {"destination_service", "echo.default.svc.cluster.local"}}) == 14);
  // Access log: one JSON line per request.
  CHECK(wait_until([&] { return read_file(w.access_log()).find("/hello?x=3") != std::string::npos; }, 5s));
}

TEST_CASE("waypoint: canary 90/10 split by subsets over 2000 requests", "[e2e][waypoint]") {
  WaypointMesh w;
  w.routing["destinationRules"] = json::array({echo_subsets()});
  w.routing["virtualServices"] = json::array({vs("echo", json::parse(R"([
    {"route": [{"destination": {"host": "echo", "subset": "v1"}, "weight": 90},
               {"destination": {"host": "echo", "subset": "v2"}, "weight": 10}]}])"))});
  HttpBackend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  auto by = spread(w, 2000, 8);
  INFO("v1 " << by["v1"] << ", v2 " << by["v2"]);
  CHECK(by["v1"] + by["v2"] == 2000);
  CHECK(by["v1"] >= 1700);  // 90 % +- 5 %
  CHECK(by["v1"] <= 1900);
}

TEST_CASE("waypoint: header match routes to v2 and a prefix rewrite reaches the server", "[e2e][waypoint]") {
  WaypointMesh w;
  w.routing["destinationRules"] = json::array({echo_subsets()});
  w.routing["virtualServices"] = json::array({vs("echo", json::parse(R"([
    {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
     "route": [{"destination": {"host": "echo", "subset": "v2"}}]},
    {"match": [{"uri": {"prefix": "/catalog"}}],
     "rewrite": {"uri": "/shop"},
     "headers": {"request": {"set": {"x-route": "catalog"}}, "response": {"add": {"x-served-by": "waypoint"}}},
     "route": [{"destination": {"host": "echo", "subset": "v1"}}]},
    {"route": [{"destination": {"host": "echo", "subset": "v1"}}]}])"))});
  HttpBackend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  auto c = w.connect();
  for (int i = 0; i < 5; ++i) {
    auto r = c.request("GET", "/reviews", {{"end-user", "jason"}});
    REQUIRE(r.status == 200);
    CHECK(r.header("x-backend") == "v2");
    auto o = c.request("GET", "/reviews", {{"end-user", "other"}});
    REQUIRE(o.status == 200);
    CHECK(o.header("x-backend") == "v1");
  }
  auto r = c.request("GET", "/catalog/item/7?q=1");
  REQUIRE(r.status == 200);
  CHECK(r.body == "v1 GET /shop/item/7?q=1\n");
  CHECK(r.header("x-served-by") == "waypoint");
  auto seen = v1.seen();
  REQUIRE(!seen.empty());
  CHECK(seen.back().header("x-route") == "catalog");
}

TEST_CASE("waypoint: retries turn a flapping upstream into successes", "[e2e][waypoint]") {
  WaypointMesh w;
  w.routing["virtualServices"] = json::array({vs("echo", json::parse(R"([
    {"route": [{"destination": {"host": "echo"}}], "retries": {"attempts": 3, "retryOn": "5xx"}}])"))});
  std::atomic<int> n{0};
  auto flap = [&](const HttpReq& req) {
    HttpResp r;
    if (n++ % 2 == 0) r.status = 503;
    r.body = "ok " + req.target;
    return r;
  };
  HttpBackend v1(w.s.echo1, 8080, "v1", flap), v2(w.s.echo2, 8080, "v2", flap);
  w.start();
  auto c = w.connect();
  for (int i = 0; i < 10; ++i) {
    auto r = c.request("GET", "/flap/" + std::to_string(i));
    CHECK(r.status == 200);
  }
  CHECK(v1.requests() + v2.requests() >= 15);  // about one retry per request
}

TEST_CASE("waypoint: a route timeout answers 504 with flag UT", "[e2e][waypoint]") {
  WaypointMesh w;
  w.routing["virtualServices"] = json::array({vs("echo", json::parse(R"([
    {"route": [{"destination": {"host": "echo"}}], "timeout": "300ms"}])"))});
  auto slow = [](const HttpReq& req) {
    HttpResp r;
    if (req.target == "/slow") r.delay = std::chrono::milliseconds(2000);
    r.body = "done";
    return r;
  };
  HttpBackend v1(w.s.echo1, 8080, "v1", slow), v2(w.s.echo2, 8080, "v2", slow);
  w.start();
  auto c = w.connect();
  auto r = c.request("GET", "/slow");
  CHECK(r.status == 504);
  auto d = w.connect();
  CHECK(d.request("GET", "/fast").status == 200);
  CHECK(metric_sum(w.metrics(), "istio_requests_total", {{"reporter", "waypoint"}, {"response_flags", "UT"}}) == 1);
}

TEST_CASE("waypoint: injected aborts hit the configured percentage and delays are applied", "[e2e][waypoint]") {
  WaypointMesh w;
  w.routing["virtualServices"] = json::array({vs("echo", json::parse(R"([
    {"match": [{"uri": {"prefix": "/abort"}}],
     "fault": {"abort": {"httpStatus": 418, "percentage": {"value": 30}}},
     "route": [{"destination": {"host": "echo"}}]},
    {"match": [{"uri": {"prefix": "/delay"}}],
     "fault": {"delay": {"fixedDelay": "200ms", "percentage": {"value": 100}}},
     "route": [{"destination": {"host": "echo"}}]}])"))});
  HttpBackend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  auto c = w.connect();
  int aborted = 0;
  for (int i = 0; i < 1000; ++i) {
    auto r = c.request("GET", "/abort");
    REQUIRE((r.status == 200 || r.status == 418));
    aborted += r.status == 418;
  }
  INFO("aborted " << aborted << " of 1000");
  CHECK(aborted >= 250);
  CHECK(aborted <= 350);
  auto t0 = Clock::now();
  CHECK(c.request("GET", "/delay").status == 200);
  CHECK(Clock::now() - t0 >= std::chrono::milliseconds(190));
  CHECK(metric_sum(w.metrics(), "istio_requests_total", {{"response_flags", "FI"}}) == aborted);
}

TEST_CASE("waypoint: the destination node refuses clients that bypass the waypoint", "[e2e][waypoint]") {
  WaypointMesh w;
  HttpBackend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  // A raw HBONE client with the client workload's identity, straight to node-b.
  auto h = hbone_client(w.s.m, w.s.client, w.s.echo1, "default", "sleep");
  REQUIRE(h->ok());
  REQUIRE(h->handshake());
  REQUIRE(h->send_headers(1, {{":method", "CONNECT"}, {":authority", w.s.echo1 + ":8080"}}));
  CHECK(h->response_status(1) == 401);
  // Traffic to the pod IP goes through the waypoint too (the pod is behind it).
  auto r = w.s.m.socks(w.s.client, w.s.echo1, 8080);
  REQUIRE(r.reply == 0);
  HttpClientConn c(std::move(r.fd));
  auto resp = c.request("GET", "/direct");
  CHECK(resp.status == 200);
  CHECK(resp.header("x-backend") == "v1");
  CHECK(metric_sum(w.metrics(), "istio_requests_total", {{"reporter", "waypoint"}}) == 1);
}

TEST_CASE("waypoint: smuggling attempts and oversized heads are refused before any upstream sees them", "[e2e][waypoint]") {
  WaypointMesh w;
  HttpBackend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  struct Case {
    const char* what;
    std::string raw;
    int status;
  };
  std::vector<Case> cases = {
      {"CL and TE", "POST / HTTP/1.1\r\nhost: echo\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", 400},
      {"two CL", "POST / HTTP/1.1\r\nhost: echo\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab", 400},
      {"obs-fold", "GET / HTTP/1.1\r\nhost: echo\r\nx-a: 1\r\n 2\r\n\r\n", 400},
      {"bare LF", "GET / HTTP/1.1\nhost: echo\n\n", 400},
      {"bad chunk size", "POST / HTTP/1.1\r\nhost: echo\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", 400},
      {"TE not chunked", "POST / HTTP/1.1\r\nhost: echo\r\ntransfer-encoding: chunked, identity\r\n\r\n", 400},
      {"huge header", "GET / HTTP/1.1\r\nhost: echo\r\nx-big: " + std::string(70000, 'a') + "\r\n\r\n", 431},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    auto conn = w.connect();
    REQUIRE(conn.send_raw(c.raw));
    auto r = conn.read_response();
    CHECK(r.status == c.status);
    CHECK(r.header("connection") == "close");
  }
  CHECK(v1.requests() + v2.requests() == 0);
  // Paths are normalised before routing and forwarding.
  auto c = w.connect();
  auto r = c.request("GET", "/public/../admin//x/./y?q=1");
  REQUIRE(r.status == 200);
  CHECK(r.body.find("GET /admin/x/y?q=1") != std::string::npos);
  r = c.request("GET", "/%61dmin");
  REQUIRE(r.status == 200);
  CHECK(r.body.find("GET /admin") != std::string::npos);
}

TEST_CASE("waypoint: request and response bodies stream both ways with chunked and keep-alive", "[e2e][waypoint]") {
  WaypointMesh w;
  auto big = [](const HttpReq& req) {
    HttpResp r;
    r.body = req.method == "POST" ? "got " + std::to_string(req.body.size()) : std::string(3 << 20, 'x');
    return r;
  };
  HttpBackend v1(w.s.echo1, 8080, "v1", big), v2(w.s.echo2, 8080, "v2", big);
  w.start();
  auto c = w.connect();
  // A 2 MiB request body, then a 3 MiB response, on one connection.
  auto r = c.request("POST", "/upload", {}, std::string(2 << 20, 'b'), std::chrono::seconds(30));
  CHECK(r.status == 200);
  CHECK(r.body == "got 2097152");
  r = c.request("GET", "/download", {}, "", std::chrono::seconds(30));
  CHECK(r.status == 200);
  CHECK(r.body.size() == (3u << 20));
  // A chunked request body.
  REQUIRE(c.send_raw("POST /chunked HTTP/1.1\r\nhost: echo\r\ntransfer-encoding: chunked\r\n\r\n"
                     "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"));
  r = c.read_response();
  CHECK(r.status == 200);
  CHECK(r.body == "got 11");
}

TEST_CASE("waypoint: a slowloris head times out with 408 and the connection closes", "[e2e][waypoint]") {
  WaypointMesh w;  // requestHeadersTimeout 1s
  HttpBackend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  auto c = w.connect();
  REQUIRE(c.send_raw("GET /slow HTTP/1.1\r\nhost: ec"));
  auto r = c.read_response(false, std::chrono::seconds(10));
  CHECK(r.status == 408);
  CHECK(wait_closed(c.fd(), 5s));
  // An idle keep-alive connection is not a slow head: it stays usable.
  auto d = w.connect();
  CHECK(d.request("GET", "/a").status == 200);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  CHECK(d.request("GET", "/b").status == 200);
  CHECK(v1.requests() + v2.requests() == 2);
}

namespace {
json waypoint_policy(const std::string& name, const std::string& body) {
  json p = json::parse(body);
  p["apiVersion"] = "security.istio.io/v1";
  p["kind"] = "AuthorizationPolicy";
  p["metadata"] = {{"name", name}, {"namespace", "default"}};
  p["spec"]["targetRefs"] = json::parse(R"([{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}])");
  return p;
}
}  // namespace

TEST_CASE("waypoint: L7 DENY on a path and method holds against path-normalisation bypasses", "[e2e][waypoint]") {
  WaypointMesh w;
  w.s.m.add_policy(waypoint_policy("deny-admin", R"({"spec": {"action": "DENY", "rules": [
      {"to": [{"operation": {"paths": ["/admin", "/admin/*"]}}]},
      {"to": [{"operation": {"methods": ["DELETE"]}}]}]}})"));
  HttpBackend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  auto c = w.connect();
  for (const char* p : {"/admin", "//admin", "/%61dmin", "/public/../admin", "/admin/users", "/ADMIN/../admin"}) {
    INFO(p);
    auto r = c.request("GET", p);
    CHECK(r.status == 403);
    CHECK(r.body == "RBAC: access denied");
  }
  CHECK(c.request("DELETE", "/anything").status == 403);
  CHECK(c.request("GET", "/public").status == 200);
  CHECK(c.request("GET", "/administrator").status == 200);
  CHECK(v1.requests() + v2.requests() == 2);
  // The node does not apply a waypoint's policy at L4 (it has targetRefs).
  auto m = w.metrics();
  CHECK(metric_sum(m, "istio_requests_total", {{"reporter", "waypoint"}, {"response_code", "403"}}) == 7);
}

TEST_CASE("waypoint: CUSTOM authorization asks the ext-authz service and follows its answer", "[e2e][waypoint]") {
  WaypointMesh w;
  std::string authz_ip = w.s.m.ip(60);
  w.s.m.add_workload({"authz-1", "ext-authz", "default", "ext-authz", "node-b", authz_ip, "NONE", {{"app", "ext-authz"}}});
  w.s.m.add_service("ext-authz", w.s.m.ip(101), 9000, 9000, {"authz-1"});
  w.s.m.add_policy(waypoint_policy("ext", R"({"spec": {"action": "CUSTOM", "provider": {"name": "my-authz"},
      "rules": [{"to": [{"operation": {"paths": ["/protected/*"]}}]}]}})"));
  w.routing["extensionProviders"] = json::parse(R"([{"name": "my-authz", "envoyExtAuthzHttp": {
      "service": "ext-authz.default.svc.cluster.local", "port": 9000, "timeout": "2s",
      "includeRequestHeadersInCheck": ["x-allow"], "headersToUpstreamOnAllow": ["x-authz-user"]}}])");
  HttpBackend authz(authz_ip, 9000, "authz", [](const HttpReq& req) {
    HttpResp r;
    if (req.header("x-allow") == "yes") {
      r.headers.push_back({"x-authz-user", "alice"});
    } else {
      r.status = 403;
      r.body = "denied by ext-authz";
    }
    return r;
  });
  HttpBackend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  auto c = w.connect();
  auto r = c.request("GET", "/protected/a", {{"x-allow", "yes"}});
  CHECK(r.status == 200);
  r = c.request("GET", "/protected/b", {{"x-allow", "no"}});
  CHECK(r.status == 403);
  CHECK(r.body == "denied by ext-authz");
  CHECK(c.request("GET", "/open").status == 200);  // not covered by the CUSTOM rule
  CHECK(authz.requests() == 2);
  // The allowed request reached the backend with the header the service added.
  bool saw = false;
  for (auto* b : {&v1, &v2})
    for (auto& q : b->seen())
      if (q.target == "/protected/a") saw = q.header("x-authz-user") == "alice";
  CHECK(saw);
  CHECK(metric_sum(w.metrics(), "istio_requests_total", {{"response_flags", "UAEX"}}) == 1);
}

TEST_CASE("waypoint: CUSTOM authorization fails closed when the service is down", "[e2e][waypoint]") {
  WaypointMesh w;
  w.s.m.add_policy(waypoint_policy("ext", R"({"spec": {"action": "CUSTOM", "provider": {"name": "gone"},
      "rules": [{}]}})"));
  w.routing["extensionProviders"] = json::parse(R"([{"name": "gone", "envoyExtAuthzHttp": {
      "service": ")" + w.s.m.ip(61) + R"(", "port": 9000, "timeout": "500ms"}}])");
  HttpBackend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  auto c = w.connect();
  CHECK(c.request("GET", "/x").status == 403);
  CHECK(v1.requests() + v2.requests() == 0);
}

TEST_CASE("waypoint: a circuit breaker trips with 503 UO when the connection pool is full", "[e2e][waypoint]") {
  WaypointMesh w;
  w.routing["destinationRules"] = json::parse(R"([{"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
      "metadata": {"name": "echo", "namespace": "default"},
      "spec": {"host": "echo", "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 1},
               "http": {"http1MaxPendingRequests": 1, "http2MaxRequests": 1}}}}}])");
  auto slow = [](const HttpReq&) {
    HttpResp r;
    r.delay = std::chrono::milliseconds(1000);  // holds the one connection while the others arrive
    r.body = "slow";
    return r;
  };
  HttpBackend v1(w.s.echo1, 8080, "v1", slow), v2(w.s.echo2, 8080, "v2", slow);
  w.start();
  std::vector<HttpClientConn> cs;
  for (int i = 0; i < 4; ++i) cs.push_back(w.connect());
  for (auto& c : cs) REQUIRE(c.send_raw("GET /cb HTTP/1.1\r\nhost: echo\r\n\r\n"));
  int ok = 0, uo = 0;
  for (auto& c : cs) {
    auto r = c.read_response();
    ok += r.status == 200;
    uo += r.status == 503;
  }
  CHECK(ok >= 1);
  CHECK(uo >= 1);
  CHECK(ok + uo == 4);
  CHECK(metric_sum(w.metrics(), "istio_requests_total", {{"response_flags", "UO"}}) == uo);
  // Once the burst is over the next request goes through.
  CHECK(cs[0].request("GET", "/after").status == 200);
}

TEST_CASE("waypoint: outlier detection ejects a failing endpoint and lets it back", "[e2e][waypoint]") {
  WaypointMesh w;
  w.routing["destinationRules"] = json::parse(R"([{"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
      "metadata": {"name": "echo", "namespace": "default"},
      "spec": {"host": "echo", "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"},
               "outlierDetection": {"consecutive5xxErrors": 2, "interval": "1s", "baseEjectionTime": "2s",
                                    "maxEjectionPercent": 100}}}}])");
  w.routing["virtualServices"] = json::array({vs("echo", json::parse(R"([
    {"route": [{"destination": {"host": "echo"}}], "retries": {"attempts": 0}}])"))});
  std::atomic<bool> broken{true};
  HttpBackend v1(w.s.echo1, 8080, "v1", [&](const HttpReq&) {
    HttpResp r;
    if (broken) r.status = 503;
    return r;
  });
  HttpBackend v2(w.s.echo2, 8080, "v2");
  w.start();
  auto c = w.connect();
  int failures = 0;
  for (int i = 0; i < 20; ++i) {
    auto st = c.request("GET", "/o").status;
    REQUIRE(st != 0);
    failures += st == 503;
  }
  CHECK(failures == 2);  // two 503s from v1, then it is ejected and v2 takes everything
  auto before = v1.requests();
  for (int i = 0; i < 10; ++i) CHECK(c.request("GET", "/o").status == 200);
  CHECK(v1.requests() == before);
  // Healed and past its ejection time: back in the rotation.
  broken = false;
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  for (int i = 0; i < 10; ++i) CHECK(c.request("GET", "/o").status == 200);
  CHECK(v1.requests() > before);
}


TEST_CASE("waypoint: JWT required by policy and accepted when valid", "[e2e][waypoint]") {
  warren::e2e::TestIssuer iss;
  WaypointMesh w;
  json ra = {{"apiVersion", "security.istio.io/v1"},
             {"kind", "RequestAuthentication"},
             {"metadata", {{"name", "jwt"}, {"namespace", "default"}}},
             {"spec",
              {{"targetRefs", json::parse(R"([{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}])")},
               {"jwtRules", {{{"issuer", "https://issuer.example"}, {"audiences", {"echo"}}, {"jwks", iss.jwks()},
                              {"outputPayloadToHeader", "x-jwt-payload"}}}}}}};
  w.routing["requestAuthentications"] = json::array({ra});
  w.s.m.add_policy(waypoint_policy("require-jwt", R"({"spec": {"action": "ALLOW", "rules": [
      {"from": [{"source": {"requestPrincipals": ["https://issuer.example/*"]}}],
       "when": [{"key": "request.auth.claims[group]", "values": ["admins"]}]}]}})"));
  HttpBackend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  auto now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::string good = iss.token({{"iss", "https://issuer.example"}, {"sub", "alice"}, {"aud", "echo"},
                                {"group", "admins"}, {"exp", now + 600}});
  std::string wrong_group = iss.token({{"iss", "https://issuer.example"}, {"sub", "bob"}, {"aud", "echo"},
                                       {"group", "users"}, {"exp", now + 600}});
  std::string expired = iss.token({{"iss", "https://issuer.example"}, {"sub", "alice"}, {"aud", "echo"},
                                   {"group", "admins"}, {"exp", now - 600}});
  auto c = w.connect();
  CHECK(c.request("GET", "/data").status == 403);  // no token: no request principal
  auto r = c.request("GET", "/data", {{"authorization", "Bearer " + good}});
  CHECK(r.status == 200);
  CHECK(c.request("GET", "/data", {{"authorization", "Bearer " + wrong_group}}).status == 403);
  CHECK(c.request("GET", "/data", {{"authorization", "Bearer " + expired}}).status == 401);
  std::string tampered = good;
  tampered[tampered.size() / 2] = tampered[tampered.size() / 2] == 'A' ? 'B' : 'A';
  CHECK(c.request("GET", "/data", {{"authorization", "Bearer " + tampered}}).status == 401);
  // The backend got the payload header and not the token.
  bool ok = false;
  for (auto* b : {&v1, &v2})
    for (auto& q : b->seen()) ok = ok || (!q.header("x-jwt-payload").empty() && q.header("authorization").empty());
  CHECK(ok);
  CHECK(v1.requests() + v2.requests() == 1);
}

TEST_CASE("waypoint: trace context is propagated and sampled spans reach a Zipkin collector", "[e2e][waypoint]") {
  WaypointMesh w;
  std::string collector = w.s.m.ip(70);
  HttpBackend zipkin(collector, 9411, "zipkin", [](const HttpReq&) {
    HttpResp r;
    r.status = 202;
    return r;
  });
  w.tracing = {{"zipkin", collector + ":9411"}, {"samplingPercent", 0}};
  HttpBackend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  auto c = w.connect();
  const std::string trace = "4bf92f3577b34da6a3ce929d0e0e4736";
  auto r = c.request("GET", "/traced", {{"traceparent", "00-" + trace + "-00f067aa0ba902b7-01"},
                                         {"x-request-id", "req-1"}});
  REQUIRE(r.status == 200);
  CHECK(c.request("GET", "/unsampled").status == 200);  // no decision from the caller, 0 %: not exported
  // The backend sees the same trace with the waypoint's span as parent, and the request id kept.
  bool propagated = false;
  for (auto* b : {&v1, &v2})
    for (auto& q : b->seen())
      if (q.target == "/traced")
        propagated = q.header("traceparent").rfind("00-" + trace + "-", 0) == 0 &&
                     q.header("traceparent").find("00f067aa0ba902b7") == std::string::npos &&
                     q.header("x-request-id") == "req-1";
  CHECK(propagated);
  // One span, batched within the exporter's flush interval.
  REQUIRE(wait_until([&] { return zipkin.requests() >= 1; }, 10s));
  auto posts = zipkin.seen();
  auto spans = json::parse(posts[0].body);
  REQUIRE(spans.is_array());
  REQUIRE(spans.size() == 1);
  CHECK(spans[0]["traceId"] == trace);
  CHECK(spans[0]["parentId"] == "00f067aa0ba902b7");
  CHECK(spans[0]["kind"] == "SERVER");
}

TEST_CASE("waypoint: a mirror gets a copy of each request with a shadow host and its answers are dropped", "[e2e][waypoint]") {
  WaypointMesh w;
  w.routing["destinationRules"] = json::array({echo_subsets()});
  w.routing["virtualServices"] = json::array({vs("echo", json::parse(R"([
    {"route": [{"destination": {"host": "echo", "subset": "v1"}}],
     "mirror": {"host": "echo", "subset": "v2"}, "mirrorPercentage": {"value": 100}}])"))});
  HttpBackend v1(w.s.echo1, 8080, "v1");
  HttpBackend v2(w.s.echo2, 8080, "v2", [](const HttpReq&) {
    HttpResp r;
    r.status = 500;  // the mirror's failures never reach the client
    return r;
  });
  w.start();
  auto c = w.connect();
  for (int i = 0; i < 5; ++i) {
    auto r = c.request("POST", "/m/" + std::to_string(i), {}, "payload-" + std::to_string(i));
    CHECK(r.status == 200);
    CHECK(r.header("x-backend") == "v1");
  }
  REQUIRE(wait_until([&] { return v2.requests() == 5; }, 10s));
  auto seen = v2.seen();
  CHECK(seen[0].header("host") == "echo-shadow");
  CHECK(seen[0].body.rfind("payload-", 0) == 0);
  CHECK(v1.requests() == 5);
}

TEST_CASE("waypoint: a Gateway API HTTPRoute attached to the service routes rewrites and splits", "[e2e][waypoint]") {
  WaypointMesh w;
  // A second service for the v2 pod: HTTPRoute backends are Services.
  w.s.m.add_service("echo-v2", w.s.m.ip(101), 80, 8080, {"echo-2"});
  w.routing["httpRoutes"] = json::array({json::parse(R"({
    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
    "metadata": {"name": "echo", "namespace": "default"},
    "spec": {
      "parentRefs": [{"group": "", "kind": "Service", "name": "echo", "port": 80}],
      "rules": [
        {"matches": [{"headers": [{"name": "x-canary", "value": "yes"}]}],
         "backendRefs": [{"name": "echo-v2", "port": 80}]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/catalog"}}],
         "filters": [{"type": "URLRewrite",
                      "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/shop"}}},
                     {"type": "ResponseHeaderModifier",
                      "responseHeaderModifier": {"set": [{"name": "x-served-by", "value": "httproute"}]}}],
         "backendRefs": [{"name": "echo-v2", "port": 80}]},
        {"matches": [{"path": {"type": "Exact", "value": "/old"}}],
         "filters": [{"type": "RequestRedirect", "requestRedirect": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/new"}, "statusCode": 301}}]},
        {"backendRefs": [{"name": "echo", "port": 80, "weight": 1}]}
      ]}})")});
  HttpBackend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  auto c = w.connect();
  for (int i = 0; i < 5; ++i) {
    auto r = c.request("GET", "/reviews", {{"x-canary", "yes"}});
    REQUIRE(r.status == 200);
    CHECK(r.header("x-backend") == "v2");
  }
  auto r = c.request("GET", "/catalog/item/7?q=1");
  REQUIRE(r.status == 200);
  CHECK(r.body == "v2 GET /shop/item/7?q=1\n");
  CHECK(r.header("x-served-by") == "httproute");
  auto redirect = c.request("GET", "/old");
  CHECK(redirect.status == 301);
  CHECK(redirect.header("location").find("/new") != std::string::npos);
  // The catch-all rule: the echo service, either pod.
  auto rest = spread(w, 40, 2);
  CHECK(rest["v1"] + rest["v2"] == 40);
  CHECK(v2.requests() >= 6);
}

TEST_CASE("waypoint: an AUDIT policy marks the access log entries it matches and counts them", "[e2e][waypoint]") {
  WaypointMesh w;
  w.s.m.add_policy(waypoint_policy("audit-admin", R"({"spec": {"action": "AUDIT", "rules": [
      {"to": [{"operation": {"paths": ["/admin/*"]}}]}]}})"));
  w.s.m.add_policy(waypoint_policy("deny-secret", R"({"spec": {"action": "DENY", "rules": [
      {"to": [{"operation": {"paths": ["/admin/secret"]}}]}]}})"));
  HttpBackend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  auto c = w.connect();
  CHECK(c.request("GET", "/admin/users").status == 200);   // audited, allowed
  CHECK(c.request("GET", "/public").status == 200);        // not audited
  CHECK(c.request("GET", "/admin/secret").status == 403);  // audited and denied
  std::vector<json> lines;
  CHECK(wait_until([&] {
    lines.clear();
    std::istringstream in(read_file(w.access_log()));
    for (std::string l; std::getline(in, l);)
      if (!l.empty()) lines.push_back(json::parse(l));
    return lines.size() >= 3;
  }, 5s));
  REQUIRE(lines.size() == 3);
  std::map<std::string, json> by_path;
  for (auto& l : lines) by_path[l["path"].get<std::string>()] = l;
  CHECK(by_path["/admin/users"].value("access_log_hint", false) == true);
  CHECK(by_path["/admin/users"].value("audit_policy", "") == "default/audit-admin");
  CHECK(by_path["/admin/secret"].value("access_log_hint", false) == true);
  CHECK(by_path["/admin/secret"]["response_code"] == 403);
  CHECK_FALSE(by_path["/public"].contains("access_log_hint"));
  CHECK_FALSE(by_path["/public"].contains("audit_policy"));
  auto m = w.metrics();
  CHECK(metric_sum(m, "warren_waypoint_rbac_audit_total", {{"result", "logged"}}) == 2);
  CHECK(metric_sum(m, "warren_waypoint_rbac_audit_total", {{"result", "not_logged"}}) == 1);
}

namespace {
json pool_rule(const std::string& pool) {
  json r = json::parse(R"({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
      "metadata": {"name": "echo", "namespace": "default"}, "spec": {"host": "echo"}})");
  r["spec"]["trafficPolicy"] = json::parse(pool);
  return r;
}
// The access log lines so far, once there are at least `n`.
std::vector<json> access_lines(WaypointMesh& w, size_t n) {
  std::vector<json> lines;
  wait_until([&] {
    lines.clear();
    std::istringstream in(read_file(w.access_log()));
    for (std::string l; std::getline(in, l);)
      if (!l.empty()) lines.push_back(json::parse(l));
    return lines.size() >= n;
  }, 5s);
  return lines;
}
}  // namespace

TEST_CASE("waypoint: http1MaxPendingRequests queues requests for a free connection and overflows past it",
          "[e2e][waypoint]") {
  WaypointMesh w;
  w.routing["destinationRules"] = json::array(
      {pool_rule(R"({"connectionPool": {"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1}}})")});
  auto slow = [](const HttpReq& req) {
    HttpResp r;
    if (req.target == "/hold") r.delay = std::chrono::milliseconds(1500);  // holds the one connection
    r.body = "done " + req.target;
    return r;
  };
  HttpBackend v1(w.s.echo1, 8080, "v1", slow), v2(w.s.echo2, 8080, "v2", slow);
  w.start();
  auto a = w.connect(), b = w.connect(), c = w.connect();
  REQUIRE(a.send_raw("GET /hold HTTP/1.1\r\nhost: echo\r\n\r\n"));
  REQUIRE(wait_until([&] { return v1.requests() + v2.requests() == 1; }, 5s));
  REQUIRE(b.send_raw("GET /queued HTTP/1.1\r\nhost: echo\r\n\r\n"));
  REQUIRE(c.send_raw("GET /queued HTTP/1.1\r\nhost: echo\r\n\r\n"));
  // One of the two takes the one pending slot and waits for the connection;
  // the other overflows (503 UO) at once.
  auto rb = b.read_response(), rc = c.read_response();
  std::multiset<int> got{rb.status, rc.status};
  CHECK(got == std::multiset<int>{200, 503});
  CHECK((rb.status == 200 ? rb : rc).body == "done /queued");
  CHECK(a.read_response().status == 200);
  CHECK(v1.requests() + v2.requests() == 2);  // the overflowed one never reached a pod
  CHECK(metric_sum(w.metrics(), "istio_requests_total", {{"reporter", "waypoint"}, {"response_flags", "UO"}}) == 1);
}

TEST_CASE("waypoint: a request waiting for a connection times out with the route timeout", "[e2e][waypoint]") {
  WaypointMesh w;
  w.routing["destinationRules"] = json::array(
      {pool_rule(R"({"connectionPool": {"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 10}}})")});
  w.routing["virtualServices"] = json::array({vs("echo", json::parse(R"([
    {"match": [{"uri": {"prefix": "/fast"}}], "route": [{"destination": {"host": "echo"}}], "timeout": "1s"},
    {"route": [{"destination": {"host": "echo"}}]}])"))});
  auto slow = [](const HttpReq& req) {
    HttpResp r;
    if (req.target == "/hold") r.delay = std::chrono::milliseconds(3000);
    r.body = "done";
    return r;
  };
  HttpBackend v1(w.s.echo1, 8080, "v1", slow), v2(w.s.echo2, 8080, "v2", slow);
  w.start();
  auto a = w.connect(), b = w.connect();
  REQUIRE(a.send_raw("GET /hold HTTP/1.1\r\nhost: echo\r\n\r\n"));
  REQUIRE(wait_until([&] { return v1.requests() + v2.requests() == 1; }, 5s));
  auto rb = b.request("GET", "/fast/1");  // queued behind /hold, then the route timeout
  CHECK(rb.status == 504);
  CHECK(v1.requests() + v2.requests() == 1);  // it never reached a pod
  CHECK(a.read_response().status == 200);
  // The queue is empty again: the next request gets the connection.
  CHECK(b.request("GET", "/fast/2").status == 200);
  auto m = w.metrics();
  CHECK(metric_sum(m, "istio_requests_total", {{"reporter", "waypoint"}, {"response_flags", "UT"}}) == 1);
  CHECK(metric_sum(m, "istio_requests_total", {{"reporter", "waypoint"}, {"response_code", "200"}}) == 2);
}

TEST_CASE("waypoint: maxRetries holds a retry slot for the whole retry and refuses others past it",
          "[e2e][waypoint]") {
  WaypointMesh w;
  w.routing["destinationRules"] = json::array({pool_rule(R"({"connectionPool": {"http": {"maxRetries": 1}}})")});
  w.routing["virtualServices"] = json::array({vs("echo", json::parse(R"([
    {"route": [{"destination": {"host": "echo"}}], "retries": {"attempts": 2, "retryOn": "5xx"}}])"))});
  auto failing = [](const HttpReq&) {
    HttpResp r;
    r.status = 503;
    r.delay = std::chrono::milliseconds(400);  // every attempt takes a while: retries overlap
    r.body = "down";
    return r;
  };
  HttpBackend v1(w.s.echo1, 8080, "v1", failing), v2(w.s.echo2, 8080, "v2", failing);
  w.start();
  auto a = w.connect(), b = w.connect();
  REQUIRE(a.send_raw("GET /a HTTP/1.1\r\nhost: echo\r\n\r\n"));
  REQUIRE(b.send_raw("GET /b HTTP/1.1\r\nhost: echo\r\n\r\n"));
  CHECK(a.read_response().status == 503);
  CHECK(b.read_response().status == 503);
  auto lines = access_lines(w, 2);
  REQUIRE(lines.size() == 2);
  std::vector<int> attempts;
  for (auto& l : lines) attempts.push_back(l["upstream_request_attempt_count"].get<int>());
  std::sort(attempts.begin(), attempts.end());
  // One request retried (holding the only retry slot through its retries);
  // the other got its original 503 without a retry.
  CHECK(attempts[0] == 1);
  CHECK(attempts[1] == 3);
  CHECK(v1.requests() + v2.requests() == 4);
}

TEST_CASE("waypoint: the L4 parts of its AuthorizationPolicies apply to opaque TCP", "[e2e][waypoint]") {
  WaypointMesh w;
  // Rule 1 has an HTTP-only field (left out on TCP); rule 2 is L4 only.
  w.s.m.add_policy(waypoint_policy("allow-mixed", R"({"spec": {"rules": [
      {"from": [{"source": {"namespaces": ["default"]}}], "to": [{"operation": {"methods": ["GET"]}}]},
      {"from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}}],
       "to": [{"operation": {"ports": ["80"]}}]}]}})"));
  EchoServer e1(w.s.echo1, 8080), e2(w.s.echo2, 8080);
  w.start();
  // Binary bytes: not HTTP, so the waypoint carries them opaquely.
  const std::string msg("\x00\x01\x02opaque\xff", 10);
  auto echoed = [&] {
    auto r = w.s.m.socks(w.s.client, w.s.vip, 80);
    if (r.reply != 0) return false;
    set_recv_timeout(r.fd.get(), 5s);
    if (!send_all(r.fd.get(), msg.data(), msg.size())) return false;
    std::string back(msg.size(), '\0');
    return recv_exact(r.fd.get(), back.data(), back.size()) && back == msg;
  };
  CHECK(echoed());
  // Only an HTTP rule names the client: no ALLOW rule matches the TCP stream.
  w.s.m.clear_policies();
  w.s.m.add_policy(waypoint_policy("allow-http", R"({"spec": {"rules": [
      {"from": [{"source": {"namespaces": ["default"]}}], "to": [{"operation": {"methods": ["GET"]}}]}]}})"));
  w.update_routing();
  CHECK_FALSE(echoed());
  // A DENY rule with an HTTP-only field denies more on TCP (the field is dropped).
  w.s.m.clear_policies();
  w.s.m.add_policy(waypoint_policy("deny-admin", R"({"spec": {"action": "DENY", "rules": [
      {"from": [{"source": {"namespaces": ["default"]}}], "to": [{"operation": {"paths": ["/admin"]}}]}]}})"));
  w.update_routing();
  CHECK_FALSE(echoed());
  auto m = w.metrics();
  CHECK(metric_sum(m, "warren_waypoint_tcp_rbac_total", {{"result", "allowed"}}) == 1);
  CHECK(metric_sum(m, "warren_waypoint_tcp_rbac_total", {{"result", "denied"}}) == 2);
  CHECK(e1.accepted() + e2.accepted() == 1);
}
