#include <catch2/catch.hpp>

#include "model.h"
#include "model_fixtures.h"

using namespace warren::controller;
using namespace fixtures;
using nlohmann::json;

namespace {

const json& res(const Model& m, const std::string& id) {
  auto it = m.resources().find(id);
  REQUIRE(it != m.resources().end());
  return *it->second;
}


}  // namespace

TEST_CASE("model: a running pod becomes a workload", "[controller][model]") {
  Model m({});
  m.upsert("test", ns_object("shop", {{"warren.io/dataplane-mode", "enabled"}}));
  m.flush();
  json p = pod("shop", "echo-1", "10.1.0.5", {{"app", "echo"}}, "node-a", "echo");
  p["metadata"]["annotations"] = {{"warren.io/exclude-outbound-ports", "5432"}, {"other.io/x", "y"}};
  m.upsert("test", p);
  auto d = m.flush();
  CHECK(d.version == 2);
  REQUIRE(ids(d) == std::vector<std::string>{"workload/uid-shop-echo-1"});
  CHECK(*d.upserts[0].second == json::parse(R"({
    "uid": "uid-shop-echo-1", "name": "echo-1", "namespace": "shop", "serviceAccount": "echo",
    "node": "node-a", "ips": ["10.1.0.5"], "protocol": "HBONE", "labels": {"app": "echo"},
    "annotations": {"warren.io/exclude-outbound-ports": "5432"}, "waypoint": ""})"));
  // The body in the delta is the one resources() holds.
  CHECK(m.resources().at("workload/uid-shop-echo-1") == d.upserts[0].second);
}

TEST_CASE("model: pod service account defaults and hostNetwork speaks NONE", "[controller][model]") {
  Model m({});
  json p = pod("shop", "agent", "192.168.0.10");
  p["spec"]["hostNetwork"] = true;
  m.upsert("test", p);
  m.flush();
  CHECK(res(m, "workload/uid-shop-agent")["protocol"] == "NONE");
  CHECK(res(m, "workload/uid-shop-agent")["serviceAccount"] == "default");
}

TEST_CASE("model: pending pods and pods without IP are held but not sent", "[controller][model]") {
  Model m({});
  json pending = pod("shop", "a", "10.1.0.1");
  pending["status"]["phase"] = "Pending";
  m.upsert("test", pending);
  m.upsert("test", pod("shop", "b", ""));
  CHECK(m.flush().empty());
  CHECK(m.version() == 0);
  CHECK(m.object_count() == 2);
  // Both are scheduled: the CA may sign their identities.
  CHECK(m.identity_on_node("node-a", "spiffe://cluster.local/ns/shop/sa/default"));
}

TEST_CASE("model: terminated pods are removed", "[controller][model]") {
  Model m({});
  json p = pod("shop", "job", "10.1.0.9", {}, "node-b", "batch");
  m.upsert("test", p);
  m.flush();
  CHECK(m.identity_on_node("node-b", "spiffe://cluster.local/ns/shop/sa/batch"));
  p["status"]["phase"] = "Succeeded";
  m.upsert("test", p);
  auto d = m.flush();
  CHECK(d.upserts.empty());
  CHECK(d.removes == std::vector<std::string>{"workload/uid-shop-job"});
  CHECK(m.object_count() == 0);
  CHECK_FALSE(m.identity_on_node("node-b", "spiffe://cluster.local/ns/shop/sa/batch"));
}

TEST_CASE("model: waypoint from the pod label or its namespace", "[controller][model]") {
  Model m({});
  m.upsert("test", ns_object("shop", {{"warren.io/use-waypoint", "shop-wp"}}));
  m.upsert("test", pod("shop", "a", "10.1.0.1"));
  m.upsert("test", pod("shop", "b", "10.1.0.2", {{"warren.io/use-waypoint", "own-wp"}}));
  m.upsert("test", pod("shop", "c", "10.1.0.3", {{"warren.io/use-waypoint", "none"}}));
  m.upsert("test", pod("other", "d", "10.1.0.4"));
  m.flush();
  CHECK(res(m, "workload/uid-shop-a")["waypoint"] == "shop-wp");
  CHECK(res(m, "workload/uid-shop-b")["waypoint"] == "own-wp");
  CHECK(res(m, "workload/uid-shop-c")["waypoint"] == "");
  CHECK(res(m, "workload/uid-other-d")["waypoint"] == "");
  // The namespace's label changes: its pods that follow it are re-sent.
  m.upsert("test", ns_object("shop", {{"warren.io/use-waypoint", "new-wp"}}));
  auto d = m.flush();
  CHECK(ids(d) == std::vector<std::string>{"namespace/shop", "workload/uid-shop-a"});
  CHECK(res(m, "workload/uid-shop-a")["waypoint"] == "new-wp");
}

TEST_CASE("model: a per-service-account waypoint serves only that account's pods", "[controller][model]") {
  Model m({});
  auto gw = [](const std::string& name, const std::string& sa) {
    json g = json::parse(R"({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "spec": {"gatewayClassName": "warren-waypoint",
                 "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}})");
    g["metadata"] = {{"name", name}, {"namespace", "shop"}};
    if (!sa.empty()) g["metadata"]["annotations"] = {{"warren.io/for-service-account", sa}};
    return g;
  };
  m.upsert("test", ns_object("shop", {{"warren.io/use-waypoint", "reviews-wp"}}));
  m.upsert("test", gw("reviews-wp", "reviews"));
  m.upsert("test", pod("shop", "r", "10.1.0.1", json::object(), "node-a", "reviews"));
  m.upsert("test", pod("shop", "p", "10.1.0.2", json::object(), "node-a", "productpage"));
  m.upsert("test", pod("shop", "own", "10.1.0.3", {{"warren.io/use-waypoint", "other-wp"}}, "node-a", "reviews"));
  m.flush();
  CHECK(res(m, "workload/uid-shop-r")["waypoint"] == "reviews-wp");
  // The namespace names the reviews account's waypoint: other accounts do not use it.
  CHECK(res(m, "workload/uid-shop-p")["waypoint"] == "");
  CHECK(res(m, "workload/uid-shop-own")["waypoint"] == "other-wp");  // the pod's own label wins
  // Without the namespace label, the account's waypoint still applies to its pods.
  m.upsert("test", ns_object("shop"));
  m.flush();
  CHECK(res(m, "workload/uid-shop-r")["waypoint"] == "reviews-wp");
  // The Gateway goes away: its pods are re-sent without it.
  m.remove(ObjectKey{"Gateway", "shop", "reviews-wp"});
  auto d = m.flush();
  CHECK(res(m, "workload/uid-shop-r")["waypoint"] == "");
  bool resent = false;
  for (auto& id : ids(d)) resent |= id == "workload/uid-shop-r";
  CHECK(resent);
}

TEST_CASE("model: a workload speaks HBONE only when enrolled", "[controller][model]") {
  Model m({});
  m.upsert("test", ns_object("shop"));
  m.upsert("test", pod("shop", "a", "10.1.0.1"));
  m.upsert("test", pod("shop", "b", "10.1.0.2", {{"warren.io/dataplane-mode", "enabled"}}));
  m.upsert("test", pod("shop", "c", "10.1.0.3", {{"warren.io/dataplane-mode", "none"}}));
  m.upsert("test", pod("nowhere", "d", "10.1.0.4"));  // no Namespace object
  m.flush();
  // Not in the mesh: peers must reach it with plain TCP, not HBONE on 15008.
  CHECK(res(m, "workload/uid-shop-a")["protocol"] == "NONE");
  CHECK(res(m, "workload/uid-shop-b")["protocol"] == "HBONE");
  CHECK(res(m, "workload/uid-shop-c")["protocol"] == "NONE");
  CHECK(res(m, "workload/uid-nowhere-d")["protocol"] == "NONE");
  // The namespace is enrolled at run time: the pods that follow it are re-sent
  // (b and c decide for themselves and render the same).
  m.upsert("test", ns_object("shop", {{"warren.io/dataplane-mode", "enabled"}}));
  auto d = m.flush();
  CHECK(ids(d) == std::vector<std::string>{"namespace/shop", "workload/uid-shop-a"});
  CHECK(res(m, "workload/uid-shop-a")["protocol"] == "HBONE");
  CHECK(res(m, "workload/uid-shop-b")["protocol"] == "HBONE");
  CHECK(res(m, "workload/uid-shop-c")["protocol"] == "NONE");
  // An unrelated label change re-sends only the namespace.
  m.upsert("test", ns_object("shop", {{"warren.io/dataplane-mode", "enabled"}, {"team", "x"}}));
  d = m.flush();
  CHECK(ids(d) == std::vector<std::string>{"namespace/shop"});
  // Unenrolled again.
  m.upsert("test", ns_object("shop"));
  m.flush();
  CHECK(res(m, "workload/uid-shop-a")["protocol"] == "NONE");
}

TEST_CASE("model: service endpoints from the selector", "[controller][model]") {
  Model m({});
  m.upsert("test", pod("shop", "echo-1", "10.1.0.1", {{"app", "echo"}, {"v", "1"}}));
  m.upsert("test", pod("shop", "echo-2", "10.1.0.2", {{"app", "echo"}, {"v", "2"}}));
  m.upsert("test", pod("shop", "other", "10.1.0.3", {{"app", "other"}}));
  m.upsert("test", pod("elsewhere", "echo-3", "10.1.0.4", {{"app", "echo"}}));
  m.upsert("test", service("shop", "echo", "10.96.0.10", {{"app", "echo"}}));
  m.flush();
  CHECK(res(m, "service/shop/echo") == json::parse(R"({
    "name": "echo", "namespace": "shop", "hostname": "echo.shop.svc.cluster.local",
    "vips": ["10.96.0.10"], "ports": [{"port": 80, "targetPort": 8080, "name": "http"}],
    "endpoints": ["uid-shop-echo-1", "uid-shop-echo-2"]})"));
  // A pod leaving the selector updates the service; one that never matched does not.
  m.upsert("test", pod("shop", "echo-2", "10.1.0.2", {{"app", "canary"}}));
  auto d = m.flush();
  CHECK(ids(d) == std::vector<std::string>{"service/shop/echo", "workload/uid-shop-echo-2"});
  CHECK(res(m, "service/shop/echo")["endpoints"] == json{"uid-shop-echo-1"});
  m.upsert("test", pod("shop", "other", "10.1.0.33", {{"app", "other"}}));
  CHECK(ids(m.flush()) == std::vector<std::string>{"workload/uid-shop-other"});
  // A service without a selector has no endpoints of its own.
  m.upsert("test", service("shop", "manual", "10.96.0.11", nullptr));
  m.flush();
  CHECK(res(m, "service/shop/manual")["endpoints"] == json::array());
}

TEST_CASE("model: EndpointSlices win over the selector", "[controller][model]") {
  Model m({});
  m.upsert("test", pod("shop", "echo-1", "10.1.0.1", {{"app", "echo"}}));
  m.upsert("test", pod("shop", "echo-2", "10.1.0.2", {{"app", "echo"}}));
  m.upsert("test", pod("shop", "x", "10.1.0.3", {{"app", "x"}}));
  m.upsert("test", service("shop", "echo", "10.96.0.10", {{"app", "echo"}}));
  m.upsert("test", slice("shop", "echo-abc", "echo", {"uid-shop-echo-2", "uid-shop-x", "uid-unknown"},
                         {"uid-shop-echo-1"}));
  m.flush();
  // Only ready endpoints that are workloads (the node rejects unknown uids).
  CHECK(res(m, "service/shop/echo")["endpoints"] == json{"uid-shop-echo-2", "uid-shop-x"});
  // The pod a slice names stops running: the service drops it.
  json x = pod("shop", "x", "10.1.0.3", {{"app", "x"}});
  x["status"]["phase"] = "Pending";
  m.upsert("test", x);
  auto d = m.flush();
  CHECK(d.removes == std::vector<std::string>{"workload/uid-shop-x"});
  CHECK(ids(d) == std::vector<std::string>{"service/shop/echo"});
  CHECK(res(m, "service/shop/echo")["endpoints"] == json{"uid-shop-echo-2"});
  // Slices gone: back to the selector.
  m.remove({"EndpointSlice", "shop", "echo-abc"});
  m.flush();
  CHECK(res(m, "service/shop/echo")["endpoints"] == json{"uid-shop-echo-1", "uid-shop-echo-2"});
}

TEST_CASE("model: named targetPort resolves from the endpoints' container ports", "[controller][model]") {
  Model m({});
  json p = pod("shop", "web-1", "10.1.0.1", {{"app", "web"}});
  p["spec"]["containers"] = json::parse(R"([{"name": "web", "ports": [{"name": "http-alt", "containerPort": 8081}]}])");
  m.upsert("test", p);
  m.upsert("test", service("shop", "web", "10.96.0.20", {{"app", "web"}},
                           json::parse(R"([{"port": 80, "targetPort": "http-alt"}, {"port": 53, "protocol": "UDP"}])")));
  m.flush();
  CHECK(res(m, "service/shop/web")["ports"] == json::parse(R"([{"port": 80, "targetPort": 8081}])"));
}

TEST_CASE("model: namespaces and policies become resources", "[controller][model]") {
  Model m({});
  m.upsert("test", ns_object("shop", {{"warren.io/dataplane-mode", "enabled"}}));
  json ap = policy("shop", "deny-db", json::parse(R"({"action": "DENY", "rules": [{"to": [{"operation": {"ports": ["5432"]}}]}]})"));
  ap["metadata"]["annotations"] = {{"istio.io/dry-run", "false"}, {"kubectl.kubernetes.io/last-applied-configuration", "{}"}};
  ap["metadata"]["managedFields"] = json::array({json::object()});
  ap["metadata"]["resourceVersion"] = "123";
  ap["status"] = {{"conditions", json::array()}};
  m.upsert("test", ap);
  json pa = {{"apiVersion", "security.istio.io/v1"}, {"kind", "PeerAuthentication"},
             {"metadata", {{"name", "default"}, {"namespace", "istio-system"}}},
             {"spec", {{"mtls", {{"mode", "STRICT"}}}}}};
  m.upsert("test", pa);
  auto d = m.flush();
  CHECK(ids(d) == std::vector<std::string>{"namespace/shop", "peerauth/istio-system/default", "policy/shop/deny-db"});
  CHECK(res(m, "namespace/shop") == json::parse(R"({"name": "shop", "labels": {"warren.io/dataplane-mode": "enabled"}})"));
  json want = ap;
  want.erase("status");
  want["metadata"] = {{"name", "deny-db"}, {"namespace", "shop"}, {"annotations", {{"istio.io/dry-run", "false"}}}};
  CHECK(res(m, "policy/shop/deny-db") == want);
  CHECK(res(m, "peerauth/istio-system/default") == pa);
  m.remove({"AuthorizationPolicy", "shop", "deny-db"});
  CHECK(m.flush().removes == std::vector<std::string>{"policy/shop/deny-db"});
}

TEST_CASE("model: waypoint-era kinds are held and only routing kinds become resources", "[controller][model]") {
  Model m({});
  json vs = json::parse(R"({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
    "metadata": {"name": "reviews", "namespace": "shop"},
    "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]},
    "status": {}})");
  m.upsert("test", vs);
  m.upsert("test", {{"apiVersion", "v1"}, {"kind", "ServiceAccount"}, {"metadata", {{"name", "sa"}, {"namespace", "shop"}}}});
  m.upsert("test", json::parse(R"({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"},
    "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}], "images": []}})"));
  m.upsert("test", {{"apiVersion", "v1"}, {"kind", "ConfigMap"}, {"metadata", {{"name", "x"}, {"namespace", "shop"}}}});
  // Istio's ingress Gateway is not a Gateway API Gateway: ignored, not rejected.
  m.upsert("test", json::parse(R"({"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
    "metadata": {"name": "ingress", "namespace": "shop"}, "spec": {"servers": []}})"));
  // The VirtualService is a waypoint resource (without its status); the rest are not.
  CHECK(fixtures::ids(m.flush()) == std::vector<std::string>{"virtualservice/shop/reviews"});
  CHECK_FALSE(res(m, "virtualservice/shop/reviews").contains("status"));
  CHECK(m.object_count() == 3);
  REQUIRE(m.held({"VirtualService", "shop", "reviews"}));
  CHECK_FALSE(m.held({"VirtualService", "shop", "reviews"})->contains("status"));
  CHECK(m.held({"Node", "", "node-a"})->at("status") == json::parse(R"({"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]})"));
  CHECK(m.rejected().empty());
}

TEST_CASE("model: flush is incremental and versions count non-empty flushes", "[controller][model]") {
  Model m({});
  CHECK(m.flush().version == 0);
  m.upsert("test", pod("shop", "a", "10.1.0.1", {{"app", "a"}}));
  m.upsert("test", pod("shop", "b", "10.1.0.2", {{"app", "b"}}));
  auto d1 = m.flush();
  CHECK(d1.version == 1);
  CHECK(d1.upserts.size() == 2);
  // The same object again: nothing to send, version unchanged.
  m.upsert("test", pod("shop", "a", "10.1.0.1", {{"app", "a"}}));
  auto d2 = m.flush();
  CHECK(d2.empty());
  CHECK(d2.version == 1);
  // A change the nodes do not see (an annotation outside warren.io/): nothing either.
  json a = pod("shop", "a", "10.1.0.1", {{"app", "a"}});
  a["metadata"]["annotations"] = {{"example.com/x", "1"}};
  m.upsert("test", a);
  CHECK(m.flush().empty());
  // One change: one resource, next version.
  m.upsert("test", pod("shop", "b", "10.1.0.22", {{"app", "b"}}));
  auto d3 = m.flush();
  CHECK(d3.version == 2);
  CHECK(ids(d3) == std::vector<std::string>{"workload/uid-shop-b"});
  CHECK((*d3.upserts[0].second)["ips"] == json{"10.1.0.22"});
  // Removal.
  m.remove({"Pod", "shop", "a"});
  m.remove({"Pod", "shop", "never-existed"});
  auto d4 = m.flush();
  CHECK(d4.version == 3);
  CHECK(d4.upserts.empty());
  CHECK(d4.removes == std::vector<std::string>{"workload/uid-shop-a"});
  CHECK(m.resources().size() == 1);
  // Added and removed between flushes: nothing.
  m.upsert("test", pod("shop", "c", "10.1.0.3"));
  m.remove({"Pod", "shop", "c"});
  CHECK(m.flush().empty());
}

TEST_CASE("model: identity_on_node", "[controller][model]") {
  Model m({"example.org"});
  m.upsert("test", pod("shop", "a", "10.1.0.1", {}, "node-a", "web"));
  m.upsert("test", pod("shop", "b", "10.1.0.2", {}, "node-a", "web"));
  m.upsert("test", pod("shop", "c", "", {}, "", "db"));  // not scheduled
  CHECK(m.identity_on_node("node-a", "spiffe://example.org/ns/shop/sa/web"));
  CHECK_FALSE(m.identity_on_node("node-b", "spiffe://example.org/ns/shop/sa/web"));
  CHECK_FALSE(m.identity_on_node("node-a", "spiffe://cluster.local/ns/shop/sa/web"));
  CHECK_FALSE(m.identity_on_node("node-a", "spiffe://example.org/ns/shop/sa/db"));
  CHECK_FALSE(m.identity_on_node("node-a", "spiffe://example.org/ns/shop/sa/web/x"));
  CHECK_FALSE(m.identity_on_node("node-a", "spiffe://example.org/ns/shop"));
  m.remove({"Pod", "shop", "a"});
  CHECK(m.identity_on_node("node-a", "spiffe://example.org/ns/shop/sa/web"));
  m.remove({"Pod", "shop", "b"});
  CHECK_FALSE(m.identity_on_node("node-a", "spiffe://example.org/ns/shop/sa/web"));
}

TEST_CASE("model: shared IPs and VIPs go to one owner and the node config parses", "[controller][model]") {
  Model m({});
  for (const char* name : {"kube-proxy", "node-exporter"}) {
    json p = pod("kube-system", name, "192.168.0.10", {{"app", name}});
    p["spec"]["hostNetwork"] = true;
    m.upsert("test", p);
  }
  m.upsert("test", service("shop", "a", "10.96.0.50", {{"app", "a"}}));
  m.upsert("test", service("shop", "b", "10.96.0.50", {{"app", "b"}}));
  m.flush();
  CHECK(res(m, "workload/uid-kube-system-kube-proxy")["ips"] == json{"192.168.0.10"});
  CHECK(res(m, "workload/uid-kube-system-node-exporter")["ips"] == json::array());
  CHECK(res(m, "service/shop/a")["vips"] == json{"10.96.0.50"});
  CHECK(res(m, "service/shop/b")["vips"] == json::array());
  REQUIRE(warren::config::parse(node_config(m)).ok());
  // The owner goes away: the other takes the IP.
  m.remove({"Pod", "kube-system", "kube-proxy"});
  m.remove({"Service", "shop", "a"});
  auto d = m.flush();
  CHECK(ids(d) == std::vector<std::string>{"service/shop/b", "workload/uid-kube-system-node-exporter"});
  CHECK(res(m, "workload/uid-kube-system-node-exporter")["ips"] == json{"192.168.0.10"});
}

TEST_CASE("model: a mixed cluster gives a config warren-node accepts", "[controller][model]") {
  Model m({});
  m.upsert("test", ns_object("shop", {{"warren.io/dataplane-mode", "enabled"}}));
  m.upsert("test", pod("shop", "echo-1", "10.1.0.1", {{"app", "echo"}}, "node-a", "echo"));
  m.upsert("test", pod("shop", "sleep", "10.1.0.2", {{"app", "sleep"}}, "node-b", "sleep"));
  m.upsert("test", service("shop", "echo", "10.96.0.10", {{"app", "echo"}}));
  m.upsert("test", policy("shop", "allow", json::parse(R"({"selector": {"matchLabels": {"app": "echo"}},
    "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/sleep"]}}]}]})")));
  m.flush();
  auto snap = warren::config::parse(node_config(m));
  REQUIRE(snap.ok());
  CHECK((*snap)->workloads.size() == 2);
  REQUIRE((*snap)->service_by_hostname("echo.shop.svc.cluster.local"));
  CHECK((*snap)->service_by_hostname("echo.shop.svc.cluster.local")->endpoints == std::vector<std::string>{"uid-shop-echo-1"});
  CHECK((*snap)->policies.size() == 1);
  CHECK((*snap)->namespaces.count("shop"));
}

TEST_CASE("model: a Service port's appProtocol is carried to the pushed service", "[controller][model]") {
  Model m({});
  m.upsert("test", pod("shop", "rpc-1", "10.1.0.1", {{"app", "rpc"}}));
  m.upsert("test", service("shop", "rpc", "10.96.0.30", {{"app", "rpc"}},
                           json::parse(R"([{"name": "api", "port": 9000, "targetPort": 9000, "appProtocol": "grpc"},
                                           {"name": "http-web", "port": 80, "targetPort": 8080}])")));
  m.flush();
  CHECK(res(m, "service/shop/rpc")["ports"] == json::parse(R"([
    {"port": 9000, "targetPort": 9000, "name": "api", "appProtocol": "grpc"},
    {"port": 80, "targetPort": 8080, "name": "http-web"}])"));
}
