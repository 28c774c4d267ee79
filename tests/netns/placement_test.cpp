// Issue 5 end to end: warren-controller places waypoints (its
// --waypoint-launcher starts them as pods of the netns cluster, see
// MeshOptions::waypoint_slots), pushes them the routing objects and signs
// their certificates; HTTP from a captured client pod goes node → waypoint →
// node → server pods. Root only.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "harness.h"
#include "mesh.h"
#include "test_util.h"

using namespace warren::netns;
using warren::e2e::wait_until;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// http-get from a pod; the parsed JSON line ({ok, statuses, backends}).
json http_get(Cluster& c, const PodInfo& from, const std::string& to, const std::string& path,
              const std::string& header = "", int count = 1) {
  std::vector<std::string> argv{podtool_path(), "http-get", "--to", to, "--path", path, "--count",
                                std::to_string(count), "--timeout-ms", "3000"};
  if (!header.empty()) argv.insert(argv.end(), {"--header", header});
  auto r = c.exec_in_pod(from, argv);
  INFO(r.output);
  auto j = podtool_json(r.output);
  return j.is_object() ? j : json{{"ok", false}, {"output", r.output}};
}

std::unique_ptr<warren::e2e::Process> http_serve(Cluster& c, const PodInfo& p, const std::string& name) {
  auto s = c.spawn_in_pod(p, {podtool_path(), "http-serve", "--port", "8080", "--name", name},
                          "http-" + p.name + ".log");
  REQUIRE(wait_until([&] { return s->log().find("listening") != std::string::npos || !s->alive(); }, 5s));
  REQUIRE(s->alive());
  return s;
}

json gateway(const std::string& name, const std::string& for_sa = "") {
  json md = {{"name", name}, {"namespace", "default"}};
  if (!for_sa.empty()) md["annotations"] = {{"warren.io/for-service-account", for_sa}};
  return {{"apiVersion", "gateway.networking.k8s.io/v1"},
          {"kind", "Gateway"},
          {"metadata", md},
          {"spec",
           {{"gatewayClassName", "warren-waypoint"},
            {"listeners", json::array({{{"name", "mesh"}, {"port", 15008}, {"protocol", "HBONE"}}})}}}};
}

// reviews: a header-matched request goes to v2, the rest to `default_subset`.
json reviews_routes(const std::string& default_subset) {
  auto dest = [](const std::string& subset) {
    return json::array({{{"destination", {{"host", "reviews.default.svc.cluster.local"}, {"subset", subset}}}}});
  };
  return {{"apiVersion", "networking.istio.io/v1"},
          {"kind", "VirtualService"},
          {"metadata", {{"name", "reviews"}, {"namespace", "default"}}},
          {"spec",
           {{"hosts", {"reviews.default.svc.cluster.local"}},
            {"http", json::array({{{"match", json::array({{{"headers", {{"x-canary", {{"exact", "yes"}}}}}}})},
                                   {"route", dest("v2")}},
                                  {{"route", dest(default_subset)}}})}}}};
}

json subsets() {
  return {{"apiVersion", "networking.istio.io/v1"},
          {"kind", "DestinationRule"},
          {"metadata", {{"name", "reviews"}, {"namespace", "default"}}},
          {"spec",
           {{"host", "reviews.default.svc.cluster.local"},
            {"subsets", json::array({{{"name", "v1"}, {"labels", {{"version", "v1"}}}},
                                     {{"name", "v2"}, {"labels", {{"version", "v2"}}}}})}}}};
}

// An L7 DENY on `path` bound to waypoint `gw` (targetRefs: the Gateway).
json deny_path(const std::string& name, const std::string& gw, const std::string& path) {
  return {{"apiVersion", "security.istio.io/v1"},
          {"kind", "AuthorizationPolicy"},
          {"metadata", {{"name", name}, {"namespace", "default"}}},
          {"spec",
           {{"targetRefs", json::array({{{"kind", "Gateway"}, {"group", "gateway.networking.k8s.io"}, {"name", gw}}})},
            {"action", "DENY"},
            {"rules", json::array({{{"to", json::array({{{"operation", {{"paths", {path}}}}}})}}})}}}};
}

json service(const std::string& name, const std::string& vip, const std::string& app, const std::string& waypoint) {
  json s = service_manifest(name, "default", vip, 80, 8080, {{"app", app}});
  if (!waypoint.empty()) s["metadata"]["labels"] = {{"warren.io/use-waypoint", waypoint}};
  return s;
}

double waypoint_requests(Mesh& m, const std::string& gw) {
  json w = m.waypoint("default", gw);
  if (w.is_null()) return -1;
  auto body = http_get_in(w.value("netnsPath", ""), w.value("ip", ""), 15020, "/metrics");
  return warren::e2e::metric_sum(warren::e2e::parse_metrics(body), "istio_requests_total", {});
}

}  // namespace

TEST_CASE("waypoint: the controller places waypoints that route and authorize live-edited HTTP") {
  // node-1: pod-1-1 client, pod-1-2 ratings (service account "ratings"), pod-1-3 a waypoint slot;
  // node-2: pod-2-1 reviews v1, pod-2-2 reviews v2, pod-2-3 a waypoint slot.
  auto c = Cluster::create(topo(2, 3));
  auto v1 = http_serve(*c, c->pod(2, 1), "reviews-v1");
  auto v2 = http_serve(*c, c->pod(2, 2), "reviews-v2");
  auto ratings = http_serve(*c, c->pod(1, 2), "ratings");
  MeshOptions o;
  o.controller = true;
  o.waypoint_slots = {c->pod(1, 3).name, c->pod(2, 3).name};
  o.pod_specs[c->pod(1, 1).name].labels = {{"app", "client"}};
  o.pod_specs[c->pod(1, 2).name] = PodSpec{"", "", "ratings", "", {{"app", "ratings"}}};
  o.pod_specs[c->pod(2, 1).name].labels = {{"app", "reviews"}, {"version", "v1"}};
  o.pod_specs[c->pod(2, 2).name].labels = {{"app", "reviews"}, {"version", "v2"}};
  Mesh mesh(*c, o);
  auto& ctl = mesh.controller();

  // A namespace waypoint for the reviews Service and one for the ratings
  // service account; routing and L7 policy for each.
  ctl.write_manifest("40-waypoints.yaml",
                     to_yaml_documents({gateway("waypoint"), gateway("ratings-wp", "ratings"),
                                        service("reviews", "10.96.0.20", "reviews", "waypoint"),
                                        service("ratings", "10.96.0.21", "ratings", ""), subsets(),
                                        deny_path("no-admin", "waypoint", "/admin"),
                                        deny_path("no-secret", "ratings-wp", "/secret")}));
  ctl.write_manifest("41-reviews-routes.yaml", to_yaml(reviews_routes("v1")));
  REQUIRE(wait_until([&] { return !mesh.waypoint("default", "waypoint").is_null() &&
                                  !mesh.waypoint("default", "ratings-wp").is_null(); }, 10s));
  bool ready = mesh.wait_waypoint_ready("default", "waypoint") && mesh.wait_waypoint_ready("default", "ratings-wp");
  INFO(mesh.waypoint_log("default", "waypoint") << mesh.waypoint_log("default", "ratings-wp") << ctl.log());
  REQUIRE(ready);
  REQUIRE(ctl.wait_acked(4, 0, 10s));  // both nodes and both waypoints
  // The waypoint got its own block and certificate from the controller.
  auto dump = mesh.waypoint_config_dump("default", "waypoint");
  CHECK(dump["waypoint"]["identity"] == "spiffe://cluster.local/ns/default/sa/waypoint");
  CHECK(dump["waypoint"]["address"] == mesh.waypoint("default", "waypoint")["ip"]);
  CHECK(dump["source"]["controller"]["connected"] == true);

  const PodInfo& client = c->pod(1, 1);
  std::string reviews = "10.96.0.20:80";
  // Header route to v2, the rest to v1; L7 DENY on /admin answered 403.
  auto plain = http_get(*c, client, reviews, "/", "", 4);
  INFO("waypoint log (with its access log):\n" << mesh.waypoint_log("default", "waypoint"));
  CHECK(plain["statuses"] == json::array({200, 200, 200, 200}));
  CHECK(plain["backends"] == json::array({"reviews-v1", "reviews-v1", "reviews-v1", "reviews-v1"}));
  auto canary = http_get(*c, client, reviews, "/", "x-canary: yes", 2);
  CHECK(canary["backends"] == json::array({"reviews-v2", "reviews-v2"}));
  CHECK(http_get(*c, client, reviews, "/admin")["statuses"] == json::array({403}));
  CHECK(waypoint_requests(mesh, "waypoint") >= 7);

  // A live edit of the VirtualService file: everything to v2, no restart.
  json pid = mesh.waypoint("default", "waypoint")["pid"];
  uint64_t before = ctl.version();
  ctl.write_manifest("41-reviews-routes.yaml", to_yaml(reviews_routes("v2")));
  REQUIRE(wait_until([&] { return ctl.version() > before; }, 5s));
  bool moved = wait_until(
      [&] { return http_get(*c, client, reviews, "/")["backends"] == json::array({"reviews-v2"}); }, 5s, 100ms);
  CHECK(moved);
  CHECK(http_get(*c, client, reviews, "/", "", 3)["backends"] ==
        json::array({"reviews-v2", "reviews-v2", "reviews-v2"}));
  CHECK(mesh.waypoint("default", "waypoint")["pid"] == pid);
  // A bad edit is rejected alone: the last good routes stay in force.
  json bad = reviews_routes("v1");
  bad["spec"]["http"][1]["route"][0]["weight"] = "all";
  ctl.write_manifest("41-reviews-routes.yaml", to_yaml(bad));
  CHECK(wait_until([&] { return ctl.get("/debug/rejected").find("reviews") != std::string::npos; }, 5s));
  CHECK(http_get(*c, client, reviews, "/", "", 2)["backends"] == json::array({"reviews-v2", "reviews-v2"}));

  // The per-service-account waypoint: only ratings' pod goes through it.
  double rw_before = waypoint_requests(mesh, "ratings-wp");
  std::string ratings_pod = c->pod(1, 2).ip + ":8080";
  CHECK(http_get(*c, client, ratings_pod, "/")["backends"] == json::array({"ratings"}));
  CHECK(http_get(*c, client, ratings_pod, "/secret")["statuses"] == json::array({403}));
  // Both requests went through ratings-wp (the 403 is its own answer).
  CHECK(wait_until([&] { return waypoint_requests(mesh, "ratings-wp") >= rw_before + 2; }, 2s));
  double rw_after = waypoint_requests(mesh, "ratings-wp");
  // reviews v1 runs as another account: reached directly by pod IP, its
  // /secret is not ratings-wp's business.
  CHECK(http_get(*c, client, c->pod(2, 1).ip + ":8080", "/secret")["backends"] == json::array({"reviews-v1"}));
  CHECK(waypoint_requests(mesh, "ratings-wp") == rw_after);

  // The Gateway goes: the launcher stops its waypoint and removes its pod.
  ctl.write_manifest("40-waypoints.yaml",
                     to_yaml_documents({gateway("waypoint"), service("reviews", "10.96.0.20", "reviews", "waypoint"),
                                        service("ratings", "10.96.0.21", "ratings", ""), subsets(),
                                        deny_path("no-admin", "waypoint", "/admin")}));
  CHECK(wait_until([&] { return mesh.waypoint("default", "ratings-wp").is_null(); }, 10s));
  CHECK(wait_until(
      [&] { return http_get(*c, client, ratings_pod, "/secret")["backends"] == json::array({"ratings"}); }, 5s, 100ms));
}
