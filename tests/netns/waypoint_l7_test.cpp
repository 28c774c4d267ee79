// Issue 5 end to end, the L7 features through a controller-placed waypoint
// (see placement_test.cpp for the placement itself): HTTP from a captured
// client pod goes node → waypoint → node → server pods, every feature
// configured with the Istio objects as manifests. One cluster and mesh per
// test case, several features per case; big request counts run on kept-alive
// connections inside one warren-podtool http-get. Root only.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "e2e/h2_backend.h"
#include "e2e/test_issuer.h"
#include "harness.h"
#include "mesh.h"
#include "test_util.h"

using namespace warren::netns;
using warren::e2e::wait_until;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

const char* kSvcSuffix = ".default.svc.cluster.local";

// warren-podtool http-get from a pod with extra flags; the parsed JSON line.
json http_get(Cluster& c, const PodInfo& from, const std::string& to, const std::string& path,
              std::vector<std::string> flags = {}) {
  std::vector<std::string> argv{podtool_path(), "http-get", "--to", to, "--path", path, "--timeout-ms", "5000"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  auto r = c.exec_in_pod(from, argv);
  INFO(r.output);
  auto j = podtool_json(r.output);
  return j.is_object() ? j : json{{"ok", false}, {"output", r.output}};
}

int count_of(const json& summary, const char* key, const std::string& what) {
  return summary.contains(key) ? summary[key].value(what, 0) : 0;
}

std::unique_ptr<warren::e2e::Process> http_serve(Cluster& c, const PodInfo& p, const std::string& name,
                                                 std::vector<std::string> flags = {}) {
  std::vector<std::string> argv{podtool_path(), "http-serve", "--port", "8080", "--name", name};
  argv.insert(argv.end(), flags.begin(), flags.end());
  auto s = c.spawn_in_pod(p, argv, "http-" + p.name + ".log");
  REQUIRE(wait_until([&] { return s->log().find("listening") != std::string::npos || !s->alive(); }, 5s));
  REQUIRE(s->alive());
  return s;
}

json gateway(const std::string& name) {
  return {{"apiVersion", "gateway.networking.k8s.io/v1"},
          {"kind", "Gateway"},
          {"metadata", {{"name", name}, {"namespace", "default"}}},
          {"spec",
           {{"gatewayClassName", "warren-waypoint"},
            {"listeners", json::array({{{"name", "mesh"}, {"port", 15008}, {"protocol", "HBONE"}}})}}}};
}

// A Service behind the waypoint.
json service(const std::string& name, const std::string& vip, const std::string& app) {
  json s = service_manifest(name, "default", vip, 80, 8080, {{"app", app}});
  s["metadata"]["labels"] = {{"warren.io/use-waypoint", "waypoint"}};
  return s;
}

json dest(const std::string& host, const std::string& subset = "") {
  json d = {{"host", host + kSvcSuffix}};
  if (!subset.empty()) d["subset"] = subset;
  return d;
}

json virtual_service(const std::string& host, const json& http) {
  return {{"apiVersion", "networking.istio.io/v1"},
          {"kind", "VirtualService"},
          {"metadata", {{"name", host}, {"namespace", "default"}}},
          {"spec", {{"hosts", {host + kSvcSuffix}}, {"http", http}}}};
}

json destination_rule(const std::string& host, const json& spec_rest) {
  json spec = spec_rest;
  spec["host"] = host + kSvcSuffix;
  return {{"apiVersion", "networking.istio.io/v1"},
          {"kind", "DestinationRule"},
          {"metadata", {{"name", host}, {"namespace", "default"}}},
          {"spec", spec}};
}

json reviews_subsets() {
  return destination_rule("reviews", {{"subsets", json::array({{{"name", "v1"}, {"labels", {{"version", "v1"}}}},
                                                                {{"name", "v2"}, {"labels", {{"version", "v2"}}}}})}});
}

// An AuthorizationPolicy bound to the waypoint (targetRefs: the Gateway).
json waypoint_policy(const std::string& name, const json& spec_rest) {
  json spec = spec_rest;
  spec["targetRefs"] = json::array({{{"kind", "Gateway"}, {"group", "gateway.networking.k8s.io"}, {"name", "waypoint"}}});
  return {{"apiVersion", "security.istio.io/v1"},
          {"kind", "AuthorizationPolicy"},
          {"metadata", {{"name", name}, {"namespace", "default"}}},
          {"spec", spec}};
}

// istio_requests_total of the waypoint whose labels contain `match` (-1: it
// does not answer).
double waypoint_requests(Mesh& m, const std::map<std::string, std::string>& match) {
  json w = m.waypoint("default", "waypoint");
  if (w.is_null()) return -1;
  auto body = http_get_in(w.value("netnsPath", ""), w.value("ip", ""), 15020, "/metrics");
  if (body.empty()) return -1;
  return warren::e2e::metric_sum(warren::e2e::parse_metrics(body), "istio_requests_total", match);
}

// The waypoint's access log lines (JSON, on its stdout) with these fields.
int access_log_lines(Mesh& m, const std::map<std::string, std::string>& match) {
  std::istringstream in(m.waypoint_log("default", "waypoint"));
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] != '{') continue;
    json j = json::parse(line, nullptr, false);
    if (!j.is_object()) continue;
    bool all = true;
    for (const auto& [k, v] : match) {
      if (!j.contains(k)) {
        all = false;
        break;
      }
      std::string got = j[k].is_string() ? j[k].get<std::string>() : j[k].dump();
      all = all && got == v;
    }
    n += all;
  }
  return n;
}

// The mesh with one waypoint slot, the manifests written and the waypoint
// ready with them.
void place_waypoint(Mesh& mesh, const std::vector<json>& docs) {
  auto& ctl = mesh.controller();
  ctl.write_manifest("40-l7.yaml", to_yaml_documents(docs));
  REQUIRE(wait_until([&] { return !mesh.waypoint("default", "waypoint").is_null(); }, 10s));
  bool ready = mesh.wait_waypoint_ready("default", "waypoint");
  INFO(mesh.waypoint_log("default", "waypoint") << ctl.log());
  REQUIRE(ready);
  REQUIRE(ctl.wait_acked(3, 0, 10s));  // both nodes and the waypoint
}

}  // namespace

TEST_CASE("waypoint L7: canary split and rewrite and retries and timeout and faults and DENY through a placed waypoint") {
  // node-1: pod-1-1 client, pod-1-2 flaky (every other request 503), pod-1-3
  // the waypoint's slot; node-2: pod-2-1 reviews v1, pod-2-2 reviews v2.
  auto c = Cluster::create(topo(2, 3));
  auto v1 = http_serve(*c, c->pod(2, 1), "reviews-v1");
  auto v2 = http_serve(*c, c->pod(2, 2), "reviews-v2");
  auto flaky = http_serve(*c, c->pod(1, 2), "flaky", {"--fail-every", "2"});
  MeshOptions o;
  o.controller = true;
  o.waypoint_slots = {c->pod(1, 3).name};
  o.pod_specs[c->pod(1, 1).name].labels = {{"app", "client"}};
  o.pod_specs[c->pod(1, 2).name].labels = {{"app", "flaky"}};
  o.pod_specs[c->pod(2, 1).name].labels = {{"app", "reviews"}, {"version", "v1"}};
  o.pod_specs[c->pod(2, 2).name].labels = {{"app", "reviews"}, {"version", "v2"}};
  o.pod_specs[c->pod(2, 3).name].labels = {{"app", "idle"}};
  Mesh mesh(*c, o);

  json reviews_http = json::array({
      {{"match", json::array({{{"uri", {{"prefix", "/catalog"}}}}})},
       {"rewrite", {{"uri", "/shop"}}},
       {"route", json::array({{{"destination", dest("reviews", "v1")}}})}},
      {{"match", json::array({{{"uri", {{"prefix", "/slow"}}}}})},
       {"timeout", "500ms"},
       {"route", json::array({{{"destination", dest("reviews", "v1")}}})}},
      {{"match", json::array({{{"uri", {{"prefix", "/abort"}}}}})},
       {"fault", {{"abort", {{"httpStatus", 418}, {"percentage", {{"value", 30}}}}}}},
       {"route", json::array({{{"destination", dest("reviews", "v1")}}})}},
      {{"match", json::array({{{"uri", {{"prefix", "/delay"}}}}})},
       {"fault", {{"delay", {{"fixedDelay", "100ms"}, {"percentage", {{"value", 20}}}}}}},
       {"route", json::array({{{"destination", dest("reviews", "v1")}}})}},
      {{"route", json::array({{{"destination", dest("reviews", "v1")}, {"weight", 90}},
                              {{"destination", dest("reviews", "v2")}, {"weight", 10}}})}}});
  json flaky_http = json::array({
      {{"match", json::array({{{"uri", {{"prefix", "/noretry"}}}}})},
       {"retries", {{"attempts", 0}}},
       {"route", json::array({{{"destination", dest("flaky")}}})}},
      {{"retries", {{"attempts", 3}, {"retryOn", "5xx"}}}, {"route", json::array({{{"destination", dest("flaky")}}})}}});
  json deny = waypoint_policy(
      "deny-admin-and-delete",
      {{"action", "DENY"},
       {"rules", json::array({{{"to", json::array({{{"operation", {{"paths", {"/admin", "/admin/*"}}}}}})}},
                              {{"to", json::array({{{"operation", {{"methods", {"DELETE"}}}}}})}}})}});
  place_waypoint(mesh, {gateway("waypoint"), service("reviews", "10.96.0.20", "reviews"),
                        service("flaky", "10.96.0.21", "flaky"), reviews_subsets(),
                        virtual_service("reviews", reviews_http), virtual_service("flaky", flaky_http), deny});
  const PodInfo& client = c->pod(1, 1);
  const std::string reviews = "10.96.0.20:80", flaky_vip = "10.96.0.21:80";
  INFO("waypoint log (with its access log):\n" << mesh.waypoint_log("default", "waypoint"));

  // Canary: 90/10 by weight within ±5 % over 2000 requests (4 kept-alive connections).
  auto canary = http_get(*c, client, reviews, "/",
                         {"--count", "2000", "--keepalive", "--concurrency", "4", "--summary"});
  INFO("canary: " << canary.dump());
  CHECK(canary["ok"] == true);
  CHECK(count_of(canary, "status_counts", "200") == 2000);
  int to_v1 = count_of(canary, "backend_counts", "reviews-v1");
  int to_v2 = count_of(canary, "backend_counts", "reviews-v2");
  CHECK(to_v1 + to_v2 == 2000);
  CHECK(to_v1 >= 1700);
  CHECK(to_v1 <= 1900);
  CHECK(waypoint_requests(mesh, {{"reporter", "waypoint"}, {"response_code", "200"}}) >= 2000);

  // Prefix rewrite: the server sees /shop.
  auto rw = http_get(*c, client, reviews, "/catalog/item/7?q=1", {"--show-body"});
  CHECK(rw["statuses"] == json::array({200}));
  CHECK(rw["bodies"] == json::array({"reviews-v1 GET /shop/item/7?q=1\n"}));

  // L7 DENY on a path and on a method; the rest passes.
  CHECK(http_get(*c, client, reviews, "/admin")["statuses"] == json::array({403}));
  CHECK(http_get(*c, client, reviews, "/admin/users")["statuses"] == json::array({403}));
  CHECK(http_get(*c, client, reviews, "/anything", {"--method", "DELETE"})["statuses"] == json::array({403}));
  CHECK(http_get(*c, client, reviews, "/administrator")["statuses"] == json::array({200}));

  // Retries: without them the flapping upstream fails every other request,
  // with them (attempts 3 on 5xx) every request succeeds.
  auto noretry = http_get(*c, client, flaky_vip, "/noretry", {"--count", "10", "--keepalive", "--summary"});
  INFO("noretry: " << noretry.dump());
  CHECK(count_of(noretry, "status_counts", "503") == 5);
  CHECK(count_of(noretry, "status_counts", "200") == 5);
  auto retried = http_get(*c, client, flaky_vip, "/flap", {"--count", "20", "--keepalive", "--summary"});
  INFO("retried: " << retried.dump());
  CHECK(count_of(retried, "status_counts", "200") == 20);
  CHECK(count_of(retried, "backend_counts", "flaky") == 20);

  // Route timeout (500 ms) against a 3 s answer: 504, flag UT; a quick
  // answer on the same route is fine.
  CHECK(http_get(*c, client, reviews, "/slow", {"--header", "x-delay-ms: 3000"})["statuses"] == json::array({504}));
  CHECK(http_get(*c, client, reviews, "/slow")["statuses"] == json::array({200}));
  CHECK(wait_until([&] { return waypoint_requests(mesh, {{"response_flags", "UT"}}) == 1; }, 3s));
  CHECK(wait_until([&] { return access_log_lines(mesh, {{"response_flags", "UT"}, {"response_code", "504"}}) == 1; },
                   3s));

  // Fault abort at 30 % of 1000 requests (±5 %), each one flag FI.
  auto abort = http_get(*c, client, reviews, "/abort",
                        {"--count", "1000", "--keepalive", "--concurrency", "4", "--summary"});
  INFO("abort: " << abort.dump());
  int aborted = count_of(abort, "status_counts", "418");
  CHECK(aborted + count_of(abort, "status_counts", "200") == 1000);
  CHECK(aborted >= 250);
  CHECK(aborted <= 350);
  CHECK(waypoint_requests(mesh, {{"response_flags", "FI"}}) == aborted);

  // Fault delay of 100 ms on 20 % of 1000 requests (±5 %): flag DI, and the
  // client waited the delay for each of them: the waypoint's timers count
  // from a clock read when they start, not from libuv's time cached at the
  // start of the loop iteration (common/src/defer.cpp), so the only slack is
  // libuv's whole-millisecond clock (a delay may end up to 1 ms early).
  auto delay = http_get(*c, client, reviews, "/delay",
                        {"--count", "1000", "--keepalive", "--concurrency", "8", "--summary", "--slow-ms", "99"});
  INFO("delay: " << delay.dump());
  CHECK(count_of(delay, "status_counts", "200") == 1000);
  double delayed = waypoint_requests(mesh, {{"response_flags", "DI"}});
  INFO("delayed " << delayed);
  CHECK(delayed >= 150);
  CHECK(delayed <= 250);
  CHECK(delay.value("slow", 0) >= delayed);
}

TEST_CASE("waypoint L7: a circuit breaker trips with UO and outlier ejection lets a healed endpoint back") {
  // node-1: pod-1-1 client, pod-1-2 the waypoint's slot; node-2: pod-2-1
  // backend-1 (fails while a file exists), pod-2-2 backend-2.
  auto c = Cluster::create(topo(2, 2));
  std::string broken = c->dir() + "/backend-1-broken";
  auto b1 = http_serve(*c, c->pod(2, 1), "backend-1", {"--fail-while", broken});
  auto b2 = http_serve(*c, c->pod(2, 2), "backend-2");
  MeshOptions o;
  o.controller = true;
  o.waypoint_slots = {c->pod(1, 2).name};
  o.pod_specs[c->pod(1, 1).name].labels = {{"app", "client"}};
  o.pod_specs[c->pod(2, 1).name].labels = {{"app", "backend"}};
  o.pod_specs[c->pod(2, 2).name].labels = {{"app", "backend"}};
  Mesh mesh(*c, o);
  // Two services over the same pods: "gated" with a one-connection pool,
  // "outlier" with outlier detection and no retries.
  json gated_dr = destination_rule(
      "gated", {{"trafficPolicy",
                 {{"connectionPool",
                   {{"tcp", {{"maxConnections", 1}}}, {"http", {{"http1MaxPendingRequests", 1}, {"http2MaxRequests", 1}}}}}}}});
  json outlier_dr = destination_rule(
      "outlier", {{"trafficPolicy",
                   {{"loadBalancer", {{"simple", "ROUND_ROBIN"}}},
                    {"outlierDetection",
                     {{"consecutive5xxErrors", 2}, {"interval", "1s"}, {"baseEjectionTime", "4s"},
                      {"maxEjectionPercent", 100}}}}}});
  json outlier_vs = virtual_service(
      "outlier", json::array({{{"retries", {{"attempts", 0}}}, {"route", json::array({{{"destination", dest("outlier")}}})}}}));
  place_waypoint(mesh, {gateway("waypoint"), service("gated", "10.96.0.30", "backend"),
                        service("outlier", "10.96.0.31", "backend"), gated_dr, outlier_dr, outlier_vs});
  const PodInfo& client = c->pod(1, 1);
  INFO("waypoint log (with its access log):\n" << mesh.waypoint_log("default", "waypoint"));

  // Circuit breaker: 6 requests at once that each hold the one connection
  // for 1.5 s; those over the pool's limit are answered 503 with flag UO.
  auto burst = http_get(*c, client, "10.96.0.30:80", "/cb",
                        {"--count", "6", "--concurrency", "6", "--header", "x-delay-ms: 1500", "--summary"});
  INFO("burst: " << burst.dump());
  int ok = count_of(burst, "status_counts", "200"), overflow = count_of(burst, "status_counts", "503");
  CHECK(ok >= 1);
  CHECK(overflow >= 1);
  CHECK(ok + overflow == 6);
  CHECK(wait_until([&] { return waypoint_requests(mesh, {{"response_flags", "UO"}}) == overflow; }, 3s));
  CHECK(wait_until(
      [&] { return access_log_lines(mesh, {{"response_flags", "UO"}, {"response_code", "503"}}) == overflow; }, 3s));
  // Once the burst is over the next request goes through.
  CHECK(http_get(*c, client, "10.96.0.30:80", "/after")["statuses"] == json::array({200}));

  // Outlier detection: backend-1 fails; after two consecutive 5xx it is
  // ejected and backend-2 takes everything.
  std::ofstream(broken) << "broken\n";
  auto failing = http_get(*c, client, "10.96.0.31:80", "/o", {"--count", "20", "--keepalive"});
  INFO("failing: " << failing.dump());
  REQUIRE(failing["ok"] == true);
  int failures = 0;
  for (size_t i = 0; i < failing["statuses"].size(); i++)
    if (failing["statuses"][i] == 503) {
      failures++;
      CHECK(failing["backends"][i] == "backend-1");
    }
  CHECK(failures == 2);
  auto ejected = http_get(*c, client, "10.96.0.31:80", "/o", {"--count", "10", "--keepalive", "--summary"});
  INFO("ejected: " << ejected.dump());
  CHECK(count_of(ejected, "backend_counts", "backend-2") == 10);
  CHECK(count_of(ejected, "status_counts", "200") == 10);
  // Healed: once its ejection time (4 s: the two runs above must fit in it)
  // is over it is back in the rotation.
  std::filesystem::remove(broken);
  json back;
  bool returned = wait_until(
      [&] {
        back = http_get(*c, client, "10.96.0.31:80", "/o", {"--count", "10", "--keepalive", "--summary"});
        return count_of(back, "backend_counts", "backend-1") > 0;
      },
      20s, 500ms);
  INFO("back: " << back.dump());
  CHECK(returned);
  CHECK(count_of(back, "status_counts", "200") == 10);
}


TEST_CASE("waypoint L7: a JWT with keys from a jwksUri is required and accepted and its claims authorize") {
  // node-1: pod-1-1 client, pod-1-2 the waypoint's slot; node-2: pod-2-1 and
  // pod-2-2 the api backends (they echo the request headers they got).
  auto c = Cluster::create(topo(2, 2));
  auto a1 = http_serve(*c, c->pod(2, 1), "api-1", {"--echo-headers"});
  auto a2 = http_serve(*c, c->pod(2, 2), "api-2", {"--echo-headers"});
  MeshOptions o;
  o.controller = true;
  o.waypoint_slots = {c->pod(1, 2).name};
  o.pod_specs[c->pod(1, 1).name].labels = {{"app", "client"}};
  o.pod_specs[c->pod(2, 1).name].labels = {{"app", "api"}};
  o.pod_specs[c->pod(2, 2).name].labels = {{"app", "api"}};
  Mesh mesh(*c, o);
  auto& ctl = mesh.controller();

  // The identity provider's JWKS, served over HTTP in the controller's netns
  // (the controller fetches it and pushes the keys to the waypoint inline).
  warren::e2e::TestIssuer iss;
  std::string jwks_file = c->dir() + "/jwks.json";
  std::ofstream(jwks_file) << iss.jwks();
  warren::e2e::Process idp({nsexec_path(), "--netns", ctl.netns_path(), "--", podtool_path(), "http-serve", "--port",
                            "18080", "--address", "127.0.0.1", "--name", "idp", "--body-file", jwks_file},
                           c->log_path("idp.log"));
  REQUIRE(wait_until([&] { return idp.log().find("listening") != std::string::npos || !idp.alive(); }, 5s));
  REQUIRE(idp.alive());
  const std::string jwks_uri = "http://127.0.0.1:18080/.well-known/jwks.json";

  json ra = {{"apiVersion", "security.istio.io/v1"},
             {"kind", "RequestAuthentication"},
             {"metadata", {{"name", "jwt"}, {"namespace", "default"}}},
             {"spec",
              {{"targetRefs",
                json::array({{{"kind", "Gateway"}, {"group", "gateway.networking.k8s.io"}, {"name", "waypoint"}}})},
               {"jwtRules", json::array({{{"issuer", "https://issuer.example"},
                                          {"audiences", {"api"}},
                                          {"jwksUri", jwks_uri},
                                          {"outputPayloadToHeader", "x-jwt-payload"}}})}}}};
  json allow = waypoint_policy(
      "require-jwt",
      {{"action", "ALLOW"},
       {"rules", json::array({{{"from", json::array({{{"source", {{"requestPrincipals", {"https://issuer.example/*"}}}}}})},
                               {"when", json::array({{{"key", "request.auth.claims[group]"}, {"values", {"admins"}}}})}}})}});
  place_waypoint(mesh, {gateway("waypoint"), service("api", "10.96.0.40", "api"), ra, allow});
  const PodInfo& client = c->pod(1, 1);
  const std::string api = "10.96.0.40:80";
  INFO("waypoint log (with its access log):\n" << mesh.waypoint_log("default", "waypoint"));

  auto now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  auto claims = [&](const std::string& sub, const std::string& group, long long exp) {
    return json{{"iss", "https://issuer.example"}, {"sub", sub}, {"aud", "api"}, {"group", group}, {"exp", exp}};
  };
  std::string good = iss.token(claims("alice", "admins", now + 600));
  std::string wrong_group = iss.token(claims("bob", "users", now + 600));
  std::string expired = iss.token(claims("alice", "admins", now - 600));
  warren::e2e::TestIssuer other;  // right claims, a key the JWKS does not have
  std::string forged = other.token(claims("mallory", "admins", now + 600));
  auto bearer = [](const std::string& t) { return "authorization: Bearer " + t; };

  // The controller fetched the keys and the waypoint holds them: a good
  // token goes through (polled: the fetch and the push take a moment).
  json r;
  bool accepted = wait_until(
      [&] {
        r = http_get(*c, client, api, "/data", {"--header", bearer(good), "--show-body"});
        return r["statuses"] == json::array({200});
      },
      15s, 200ms);
  INFO("controller log:\n" << ctl.log() << "\nidp log:\n" << idp.log() << "\nlast: " << r.dump());
  REQUIRE(accepted);
  // The backend got the payload header and not the token.
  std::string body = r["bodies"][0];
  CHECK(body.find("x-jwt-payload: ") != std::string::npos);
  CHECK(body.find("authorization:") == std::string::npos);

  CHECK(http_get(*c, client, api, "/data")["statuses"] == json::array({403}));  // no token: no principal
  CHECK(http_get(*c, client, api, "/data", {"--header", bearer(wrong_group)})["statuses"] == json::array({403}));
  CHECK(http_get(*c, client, api, "/data", {"--header", bearer(expired)})["statuses"] == json::array({401}));
  CHECK(http_get(*c, client, api, "/data", {"--header", bearer(forged)})["statuses"] == json::array({401}));
  CHECK(http_get(*c, client, api, "/data", {"--header", bearer(good), "--count", "5", "--keepalive"})["statuses"] ==
        json::array({200, 200, 200, 200, 200}));
}

namespace {
// An h2c gRPC backend (tests/e2e/h2_backend.h) in a pod's netns: built in a
// thread that joined the netns, so its listening socket lives there (its
// accept and serving threads need not: a socket keeps its netns).
std::unique_ptr<warren::e2e::H2Backend> h2_backend_in(const PodInfo& p, const std::string& name,
                                                      warren::e2e::H2Backend::Handler h) {
  std::unique_ptr<warren::e2e::H2Backend> b;
  std::string error;
  std::thread t([&] {
    int ns = ::open(p.netns_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) {
      error = "setns " + p.netns_path;
      if (ns >= 0) ::close(ns);
      return;
    }
    ::close(ns);
    try {
      b = std::make_unique<warren::e2e::H2Backend>(p.ip, 8080, name, std::move(h));
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  t.join();
  INFO(error);
  REQUIRE(b);
  return b;
}

// One gRPC call with nghttp (h2c, prior knowledge) from a pod: the response's
// :status and grpc-status (headers or trailers; -1 when absent) and the raw
// verbose output.
struct GrpcCall {
  int status = 0, grpc_status = -1;
  std::string grpc_message, output;
};
GrpcCall grpc_call(Cluster& c, const PodInfo& from, const std::string& url, const std::string& body_file) {
  auto r = c.exec_in_pod(from, {"nghttp", "-v", "-n", "-t", "5", "-H", "content-type: application/grpc", "-H",
                                "te: trailers", "-d", body_file, url});
  GrpcCall g;
  g.output = r.output;
  std::istringstream in(r.output);
  for (std::string line; std::getline(in, line);) {
    auto field = [&](const std::string& name) -> std::optional<std::string> {
      auto at = line.find(") " + name + ": ");
      if (line.find("recv (stream_id=") == std::string::npos || at == std::string::npos) return std::nullopt;
      return line.substr(at + name.size() + 4);
    };
    if (auto v = field(":status")) g.status = std::atoi(v->c_str());
    if (auto v = field("grpc-status")) g.grpc_status = std::atoi(v->c_str());
    if (auto v = field("grpc-message")) g.grpc_message = *v;
  }
  return g;
}
}  // namespace

TEST_CASE("waypoint L7: gRPC through a placed waypoint keeps status codes and trailers") {
  // node-1: pod-1-1 client (nghttp), pod-1-2 the waypoint's slot; node-2:
  // pod-2-1 an h2c gRPC backend.
  auto c = Cluster::create(topo(2, 2));
  using warren::e2e::H2Msg;
  using warren::e2e::H2Reply;
  auto backend = h2_backend_in(c->pod(2, 1), "grpc-1", [](const H2Msg& m) {
    H2Reply r;
    r.headers = {{"content-type", "application/grpc"}};
    if (m.path == "/shop.Catalog/Get") {
      r.trailers = {{"grpc-status", "5"}, {"grpc-message", "item%207%20not%20found"}};
    } else if (m.path == "/shop.Catalog/Missing") {
      r.trailers_only = true;
      r.headers.push_back({"grpc-status", "12"});
    } else {
      r.body = m.body;
      r.trailers = {{"grpc-status", "0"}};
    }
    return r;
  });
  MeshOptions o;
  o.controller = true;
  o.waypoint_slots = {c->pod(1, 2).name};
  o.pod_specs[c->pod(1, 1).name].labels = {{"app", "client"}};
  o.pod_specs[c->pod(2, 1).name].labels = {{"app", "grpc"}};
  o.pod_specs[c->pod(2, 2).name].labels = {{"app", "idle"}};
  Mesh mesh(*c, o);
  json svc = service("grpc", "10.96.0.50", "grpc");
  svc["spec"]["ports"][0]["appProtocol"] = "grpc";  // h2c to the pods
  json deny = waypoint_policy(
      "deny-admin-rpc",
      {{"action", "DENY"}, {"rules", json::array({{{"to", json::array({{{"operation", {{"paths", {"/shop.Admin/*"}}}}}})}}})}});
  place_waypoint(mesh, {gateway("waypoint"), svc, deny});
  const PodInfo& client = c->pod(1, 1);
  INFO("waypoint log (with its access log):\n" << mesh.waypoint_log("default", "waypoint"));
  std::string body = c->dir() + "/grpc-request.bin";
  {
    std::string payload = "hello", frame(5, '\0');
    frame[4] = static_cast<char>(payload.size());
    std::ofstream(body, std::ios::binary) << frame << payload;
  }
  const std::string base = "http://10.96.0.50:80";

  auto ok = grpc_call(*c, client, base + "/shop.Catalog/List", body);
  INFO(ok.output);
  CHECK(ok.status == 200);
  CHECK(ok.grpc_status == 0);
  auto nf = grpc_call(*c, client, base + "/shop.Catalog/Get", body);
  INFO(nf.output);
  CHECK(nf.status == 200);
  CHECK(nf.grpc_status == 5);
  CHECK(nf.grpc_message == "item%207%20not%20found");
  auto un = grpc_call(*c, client, base + "/shop.Catalog/Missing", body);
  INFO(un.output);
  CHECK(un.status == 200);
  CHECK(un.grpc_status == 12);
  // L7 DENY answered by the waypoint as gRPC: PERMISSION_DENIED.
  auto denied = grpc_call(*c, client, base + "/shop.Admin/DropTables", body);
  INFO(denied.output);
  CHECK(denied.status == 200);
  CHECK(denied.grpc_status == 7);
  CHECK(backend->requests() == 3);
  for (auto [code, n] : {std::pair<const char*, double>{"0", 1}, {"5", 1}, {"12", 1}, {"7", 1}})
    CHECK(wait_until(
        [&] {
          return waypoint_requests(mesh, {{"reporter", "waypoint"}, {"request_protocol", "grpc"},
                                          {"grpc_response_status", code}}) == n;
        },
        3s));
}

TEST_CASE("waypoint L7: a CUSTOM policy asks the ext-authz provider of the istio ConfigMap") {
  // node-1: pod-1-1 client, pod-1-2 the waypoint's slot; node-2: pod-2-1 the
  // api backend (echoes the request headers it got), pod-2-2 the ext-authz
  // service: it allows a request carrying x-user: alice and denies the rest
  // with 401 and its own body and headers.
  auto c = Cluster::create(topo(2, 2));
  auto api_srv = http_serve(*c, c->pod(2, 1), "api", {"--echo-headers"});
  auto authz = http_serve(*c, c->pod(2, 2), "ext-authz", {"--require-header", "x-user: alice", "--fail-status", "401"});
  MeshOptions o;
  o.controller = true;
  o.waypoint_slots = {c->pod(1, 2).name};
  o.pod_specs[c->pod(1, 1).name].labels = {{"app", "client"}};
  o.pod_specs[c->pod(2, 1).name].labels = {{"app", "api"}};
  o.pod_specs[c->pod(2, 2).name].labels = {{"app", "ext-authz"}};
  Mesh mesh(*c, o);
  auto& ctl = mesh.controller();

  // /data is checked by the provider; /public is not.
  json custom = waypoint_policy(
      "ext-authz", {{"action", "CUSTOM"},
                    {"provider", {{"name", "ext-authz"}}},
                    {"rules", json::array({{{"to", json::array({{{"operation", {{"paths", {"/data"}}}}}})}}})}});
  // The ext-authz Service is not behind the waypoint (no use-waypoint label).
  json authz_svc = service_manifest("ext-authz", "default", "10.96.0.41", 8000, 8080, {{"app", "ext-authz"}});
  place_waypoint(mesh, {gateway("waypoint"), service("api", "10.96.0.40", "api"), authz_svc, custom});
  const PodInfo& client = c->pod(1, 1);
  const std::string api = "10.96.0.40:80";
  INFO("waypoint log (with its access log):\n" << mesh.waypoint_log("default", "waypoint"));

  // No meshConfig yet: the provider is unknown, the request is denied.
  CHECK(http_get(*c, client, api, "/data", {"--header", "x-user: alice"})["statuses"] == json::array({403}));
  CHECK(http_get(*c, client, api, "/public")["statuses"] == json::array({200}));

  // Istio's meshConfig, as Istio users write it: the ConfigMap istio of the
  // root namespace. A second provider is broken: it is rejected alone.
  ctl.write_manifest("45-istio-mesh.yaml", R"(apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
data:
  mesh: |-
    accessLogFile: /dev/stdout
    extensionProviders:
    - name: ext-authz
      envoyExtAuthzHttp:
        service: ext-authz.default.svc.cluster.local
        port: 8000
        timeout: 2s
        pathPrefix: /check
        includeRequestHeadersInCheck: ["x-user"]
        headersToUpstreamOnAllow: ["x-backend"]
        headersToDownstreamOnDeny: ["content-type", "x-backend"]
    - name: broken
      envoyExtAuthzHttp:
        service: broken.default.svc.cluster.local
)");
  json r;
  bool allowed = wait_until(
      [&] {
        r = http_get(*c, client, api, "/data", {"--header", "x-user: alice", "--show-body"});
        return r["statuses"] == json::array({200});
      },
      10s, 200ms);
  INFO("controller log:\n" << ctl.log() << "\nlast: " << r.dump() << "\next-authz log:\n" << authz->log());
  REQUIRE(allowed);
  // Allowed: the backend got the request, with the header the provider set
  // on allow (x-backend: ext-authz, headersToUpstreamOnAllow).
  CHECK(r["backends"] == json::array({"api"}));
  std::string body = r["bodies"][0];
  CHECK(body.find("x-backend: ext-authz") != std::string::npos);
  CHECK(body.find("x-user: alice") != std::string::npos);
  std::string rejected = ctl.get("/debug/rejected");
  CHECK(rejected.find("ConfigMap istio-system/istio") != std::string::npos);
  CHECK(rejected.find("extensionProviders[1].envoyExtAuthzHttp.port") != std::string::npos);

  // Denied: the provider's status, body (it saw pathPrefix + the path) and
  // the headers of headersToDownstreamOnDeny; the backend never sees it.
  auto denied = http_get(*c, client, api, "/data", {"--header", "x-user: mallory", "--show-body"});
  CHECK(denied["statuses"] == json::array({401}));
  CHECK(denied["backends"] == json::array({"ext-authz"}));
  CHECK(denied["bodies"][0].get<std::string>().find("ext-authz GET /check/data") == 0);
  CHECK(http_get(*c, client, api, "/data")["statuses"] == json::array({401}));
  CHECK(http_get(*c, client, api, "/public")["backends"] == json::array({"api"}));  // not checked
  CHECK(http_get(*c, client, api, "/data", {"--header", "x-user: alice", "--count", "3", "--keepalive"})["statuses"] ==
        json::array({200, 200, 200}));

  // The provider goes down: fail closed, 403.
  authz->stop();
  CHECK(http_get(*c, client, api, "/data", {"--header", "x-user: alice"})["statuses"] == json::array({403}));
  CHECK(http_get(*c, client, api, "/public")["statuses"] == json::array({200}));

  // Back up, then the ConfigMap goes: the blocks are pushed again without
  // the provider, which is unknown again (403 with the service up).
  authz = http_serve(*c, c->pod(2, 2), "ext-authz", {"--require-header", "x-user: alice", "--fail-status", "401"});
  CHECK(wait_until(
      [&] { return http_get(*c, client, api, "/data", {"--header", "x-user: alice"})["statuses"] == json::array({200}); },
      5s, 200ms));
  ctl.remove_manifest("45-istio-mesh.yaml");
  CHECK(wait_until([&] { return ctl.get("/debug/rejected").find("istio-system/istio") == std::string::npos; }, 5s));
  CHECK(wait_until(
      [&] { return http_get(*c, client, api, "/data", {"--header", "x-user: alice"})["statuses"] == json::array({403}); },
      5s, 200ms));
  CHECK(http_get(*c, client, api, "/data", {"--header", "x-user: mallory"})["statuses"] == json::array({403}));
}
