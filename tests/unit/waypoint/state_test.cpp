// The waypoint's configuration: the mesh in warren-node's shape plus the
// waypoint's identity and the routing objects, and what it fronts.
#include <catch2/catch.hpp>

#include "state.h"

using namespace warren;
using namespace warren::waypoint;
using nlohmann::json;

namespace {
json base() {
  return json::parse(R"({
    "waypoint": {"name": "waypoint", "namespace": "default", "serviceAccount": "waypoint", "address": "10.0.0.30"},
    "certificates": {"rootCert": "ca/root-cert.pem", "dir": "ca"},
    "workloads": [
      {"uid": "wp-1", "name": "waypoint", "namespace": "default", "serviceAccount": "waypoint", "node": "n",
       "ips": ["10.0.0.30"], "gateway": "waypoint"},
      {"uid": "r-1", "name": "reviews-v1", "namespace": "default", "node": "n", "ips": ["10.0.0.20"],
       "labels": {"app": "reviews", "version": "v1"}, "waypoint": "waypoint"},
      {"uid": "r-2", "name": "reviews-v2", "namespace": "default", "node": "n", "ips": ["10.0.0.21"],
       "labels": {"app": "reviews", "version": "v2"}, "waypoint": "waypoint"},
      {"uid": "o-1", "name": "other", "namespace": "other", "node": "n", "ips": ["10.0.0.40"]}
    ],
    "services": [
      {"name": "reviews", "namespace": "default", "vips": ["10.96.0.1"], "ports": [{"port": 80, "targetPort": 9080}],
       "endpoints": ["r-1", "r-2"], "waypoint": "waypoint"},
      {"name": "other", "namespace": "other", "vips": ["10.96.0.2"], "ports": [{"port": 80}], "endpoints": ["o-1"]}
    ],
    "virtualServices": [
      {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
       "metadata": {"name": "reviews", "namespace": "default"},
       "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v2"}}]}]}}
    ],
    "destinationRules": [
      {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
       "metadata": {"name": "reviews", "namespace": "default"},
       "spec": {"host": "reviews", "subsets": [{"name": "v2", "labels": {"version": "v2"}}]}}
    ]
  })");
}
}  // namespace

TEST_CASE("waypoint state: routes and subsets compile and the fronted targets are known", "[waypoint]") {
  auto st = parse_state(base());
  REQUIRE(st.ok());
  const State& s = **st;
  CHECK(s.warnings.empty());
  CHECK(s.self.identity == "spiffe://cluster.local/ns/default/sa/waypoint");
  CHECK(s.routes.size() == 1);
  CHECK(s.rules.size() == 1);
  RequestView rv;
  rv.method = "GET";
  rv.path = "/";
  auto sel = s.routes.select("reviews.default.svc.cluster.local", rv);
  REQUIRE(sel.route);
  REQUIRE(sel.route->destinations.size() == 1);
  CHECK(sel.route->destinations[0].host == "reviews.default.svc.cluster.local");
  CHECK(s.rules.subset("reviews.default.svc.cluster.local", "v2"));

  std::string why;
  auto t = s.target(*SockAddr::parse("10.96.0.1:80"), &why);
  REQUIRE(t);
  CHECK(t->host == "reviews.default.svc.cluster.local");
  CHECK(s.target(*SockAddr::parse("10.0.0.20:9080"), &why));  // a pod behind it
  CHECK_FALSE(s.target(*SockAddr::parse("10.96.0.1:81"), &why));
  CHECK(why.find("no port 81") != std::string::npos);
  CHECK_FALSE(s.target(*SockAddr::parse("10.96.0.2:80"), &why));
  CHECK(why.find("not behind waypoint default/waypoint") != std::string::npos);
  CHECK_FALSE(s.target(*SockAddr::parse("10.0.0.40:80"), &why));
}

TEST_CASE("waypoint state: errors name the field and a bad VirtualService is left out with a warning", "[waypoint]") {
  auto doc = base();
  doc["waypoint"].erase("address");
  auto st = parse_state(doc);
  REQUIRE_FALSE(st.ok());
  CHECK(st.error().message.find("/waypoint/address") != std::string::npos);

  doc = base();
  doc["virtualServices"][0]["spec"]["http"][0]["route"][0]["weight"] = "ninety";
  st = parse_state(doc);
  REQUIRE(st.ok());
  CHECK((*st)->routes.size() == 0);
  REQUIRE((*st)->warnings.size() == 1);
  CHECK((*st)->warnings[0].find("VirtualService default/reviews") != std::string::npos);

  doc = base();
  doc["virtualServices"] = "not a list";
  st = parse_state(doc);
  REQUIRE_FALSE(st.ok());
  CHECK(st.error().message.find("/virtualServices: must be an array") != std::string::npos);
}
