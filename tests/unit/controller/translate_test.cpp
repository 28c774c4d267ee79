#include <catch2/catch.hpp>

#include "model_fixtures.h"
#include "translate.h"

using namespace warren::controller;
using namespace fixtures;
using nlohmann::json;

TEST_CASE("translate: pod extraction keeps what translation needs", "[controller][translate]") {
  json p = json::parse(R"({"apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1", "deletionTimestamp": "2024-01-01T00:00:00Z",
                 "labels": {"b": "2", "a": "1"},
                 "annotations": {"warren.io/exclude-outbound-ports": "53", "kubectl.kubernetes.io/last-applied-configuration": "{}"},
                 "managedFields": [{"manager": "kubectl"}]},
    "spec": {"serviceAccount": "legacy", "nodeName": "n1",
             "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 8080, "name": "http"}, {"containerPort": 9090}]}]},
    "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]}})");
  PodInfo info = pod_info(p);
  CHECK(info.uid == "u-1");
  CHECK(info.service_account == "legacy");
  CHECK(info.node == "n1");
  CHECK(info.labels == Labels{{"a", "1"}, {"b", "2"}});
  CHECK(info.annotations == Labels{{"warren.io/exclude-outbound-ports", "53"}});
  CHECK(info.ips == std::vector<std::string>{"10.0.0.1", "fd00::1"});
  CHECK(info.named_ports == std::vector<std::pair<std::string, uint16_t>>{{"http", 8080}});
  CHECK(info.deleting);
  CHECK(info.is_workload());
  p["status"] = {{"phase", "Failed"}};
  CHECK(pod_info(p).terminated());
  CHECK_FALSE(pod_info(p).is_workload());
  p.erase("status");
  CHECK(pod_info(p).phase == PodPhase::kPending);
}

TEST_CASE("translate: service extraction", "[controller][translate]") {
  json s = service("shop", "dual", "10.96.0.1", {{"app", "x"}},
                   json::parse(R"([{"port": 80, "targetPort": "http"}, {"port": 53, "protocol": "UDP"}, {"port": 443, "protocol": "TCP"}])"));
  s["spec"]["clusterIPs"] = {"10.96.0.1", "fd00::10"};
  ServiceInfo info = service_info(s);
  CHECK(info.vips == std::vector<std::string>{"10.96.0.1", "fd00::10"});
  REQUIRE(info.ports.size() == 2);
  CHECK(info.ports[0].target_name == "http");
  CHECK(info.ports[0].target_port == 0);
  CHECK(info.ports[1].port == 443);
  CHECK(info.selector == Labels{{"app", "x"}});
  CHECK(service_info(service("shop", "headless", "None", nullptr)).vips.empty());

  json r = service_resource(info, info.vips, {8080, 0}, {"u1"}, "example.internal");
  CHECK(r == json::parse(R"({"name": "dual", "namespace": "shop", "hostname": "dual.shop.svc.example.internal",
    "vips": ["10.96.0.1", "fd00::10"], "ports": [{"port": 80, "targetPort": 8080}, {"port": 443}], "endpoints": ["u1"]})"));
}

TEST_CASE("translate: endpoint slice extraction takes ready pods", "[controller][translate]") {
  json e = slice("shop", "s1", "echo", {"b", "a"}, {"c"});
  e["endpoints"].push_back(json::parse(R"({"addresses": ["10.1.0.9"], "targetRef": {"kind": "Node", "uid": "n"}})"));
  e["endpoints"].push_back(json::parse(R"({"addresses": ["10.1.0.10"], "targetRef": {"kind": "Pod", "uid": "d"}})"));
  EndpointSliceInfo info = endpoint_slice_info(e);
  CHECK(info.service == "echo");
  CHECK(info.ready_uids == std::vector<std::string>{"a", "b", "d"});  // no condition: ready
}

TEST_CASE("translate: selectors and waypoints", "[controller][translate]") {
  Labels pod_labels{{"app", "web"}, {"version", "v1"}};
  CHECK(selector_matches({{"app", "web"}}, pod_labels));
  CHECK(selector_matches({{"app", "web"}, {"version", "v1"}}, pod_labels));
  CHECK_FALSE(selector_matches({{"app", "web"}, {"version", "v2"}}, pod_labels));
  CHECK_FALSE(selector_matches({}, pod_labels));  // an empty selector selects nothing

  PodInfo p;
  Labels ns{{"warren.io/use-waypoint", "ns-wp"}};
  CHECK(waypoint_of(p, &ns) == "ns-wp");
  CHECK(waypoint_of(p, nullptr) == "");
  p.labels = {{"warren.io/use-waypoint", "pod-wp"}};
  CHECK(waypoint_of(p, &ns) == "pod-wp");
  p.labels = {{"warren.io/use-waypoint", "none"}};
  CHECK(waypoint_of(p, &ns) == "");
}

TEST_CASE("translate: workload and namespace resources", "[controller][translate]") {
  PodInfo p = pod_info(pod("shop", "a", "10.1.0.1", {{"app", "a"}}, "n1", "sa"));
  p.host_network = true;
  CHECK(in_mesh(p, nullptr) == false);
  CHECK(workload_resource(p, {}, "wp", in_mesh(p, nullptr)) == json::parse(R"({"uid": "uid-shop-a", "name": "a", "namespace": "shop",
    "serviceAccount": "sa", "node": "n1", "ips": [], "protocol": "NONE", "labels": {"app": "a"},
    "annotations": {}, "waypoint": "wp"})"));
  p.host_network = false;
  Labels enrolled{{"warren.io/dataplane-mode", "enabled"}};
  CHECK(in_mesh(p, &enrolled));
  CHECK_FALSE(in_mesh(p, nullptr));
  p.labels = {{"warren.io/dataplane-mode", "enabled"}};
  CHECK(in_mesh(p, nullptr));
  p.labels = {{"warren.io/dataplane-mode", "none"}};
  CHECK_FALSE(in_mesh(p, &enrolled));
  p.host_network = true;
  p.labels = {{"warren.io/dataplane-mode", "enabled"}};
  CHECK_FALSE(in_mesh(p, &enrolled));
  CHECK(namespace_resource(namespace_info(ns_object("shop"))) == json::parse(R"({"name": "shop", "labels": {}})"));
  CHECK(workload_id("u") == "workload/u");
  CHECK(service_id("ns", "s") == "service/ns/s");
  CHECK(policy_id("ns", "p") == "policy/ns/p");
  CHECK(peerauth_id("ns", "p") == "peerauth/ns/p");
  CHECK(namespace_id("ns") == "namespace/ns");
}

TEST_CASE("translate: waypoints for services and a waypoint's own pod", "[controller]") {
  json svc = json::parse(R"({"metadata": {"name": "reviews", "namespace": "shop",
                                           "labels": {"warren.io/use-waypoint": "wp"}},
                              "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80}]}})");
  ServiceInfo info = service_info(svc);
  REQUIRE(info.use_waypoint);
  CHECK(service_waypoint(info, nullptr) == "wp");
  CHECK(service_resource(info, info.vips, {0}, {}, "cluster.local", "wp")["waypoint"] == "wp");
  CHECK_FALSE(service_resource(info, info.vips, {0}, {}, "cluster.local").contains("waypoint"));
  // The namespace's label applies when the service has none; "none" opts out.
  Labels ns = {{"warren.io/use-waypoint", "ns-wp"}};
  info.use_waypoint.reset();
  CHECK(service_waypoint(info, &ns) == "ns-wp");
  info.use_waypoint = "none";
  CHECK(service_waypoint(info, &ns) == "");

  PodInfo p;
  p.uid = "wp-1";
  p.name = "wp-abc";
  p.ns = "shop";
  p.service_account = "wp";
  p.labels = {{"gateway.networking.k8s.io/gateway-name", "wp"}};
  json w = workload_resource(p, {"10.0.0.9"}, "ns-wp", false);
  CHECK(w["gateway"] == "wp");
  CHECK(w["protocol"] == "HBONE");  // a waypoint serves HBONE whether or not its namespace is enrolled
  CHECK(w["waypoint"] == "");
}
