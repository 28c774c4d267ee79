#include <catch2/catch.hpp>

#include "model.h"
#include "model_fixtures.h"
#include "validate.h"
#include "validate_util.h"

using namespace warren::controller;
using namespace fixtures;
using nlohmann::json;

namespace {

json deny_db(const char* port) {
  return policy("shop", "deny-db",
                json::parse(std::string(R"({"action": "DENY", "rules": [{"to": [{"operation": {"ports": [")") + port +
                            R"("]}}]}]})"));
}

// The message validation gives an object, as the model would report it from "test.yaml".
std::string message_of(const json& obj) {
  return format_problems("test.yaml", key_of(obj), validate_object(obj));
}

}  // namespace

TEST_CASE("validate: the message names origin object and field", "[controller][validate]") {
  Recorder rec;
  Model m({}, &rec);
  m.upsert("shop/policy.yaml", deny_db("80a"));
  REQUIRE(rec.rejections.size() == 1);
  CHECK(rec.rejections[0] ==
        "shop/policy.yaml: AuthorizationPolicy shop/deny-db: spec.rules[0].to[0].operation.ports[0]: \"80a\" is not a port");
  CHECK(m.rejected().at({"AuthorizationPolicy", "shop", "deny-db"}) == rec.rejections[0]);
  // An invalid first version: the object is absent.
  CHECK(m.flush().empty());
  CHECK(m.object_count() == 0);
}

TEST_CASE("validate: the last good version stays in force", "[controller][validate]") {
  Recorder rec;
  Model m({}, &rec);
  m.upsert("shop/policy.yaml", deny_db("5432"));
  m.upsert("shop/pods.yaml", pod("shop", "a", "10.1.0.1"));
  m.flush();
  auto before = m.resources();
  CHECK(rec.accepted_keys.size() == 2);

  m.upsert("shop/policy.yaml", deny_db("80a"));
  json bad_pod = pod("shop", "a", "10.1.0.x");
  m.upsert("shop/pods.yaml", bad_pod);
  m.upsert("shop/pods.yaml", pod("shop", "b", "10.1.0.2"));  // others are unaffected
  auto d = m.flush();
  CHECK(ids(d) == std::vector<std::string>{"workload/uid-shop-b"});
  CHECK(*m.resources().at("policy/shop/deny-db") == *before.at("policy/shop/deny-db"));
  CHECK(*m.resources().at("workload/uid-shop-a") == *before.at("workload/uid-shop-a"));
  CHECK(m.rejected().size() == 2);
  CHECK(m.rejected().at({"Pod", "shop", "a"}) ==
        "shop/pods.yaml: Pod shop/a: status.podIP: \"10.1.0.x\" is not an IP address\n"
        "shop/pods.yaml: Pod shop/a: status.podIPs[0].ip: \"10.1.0.x\" is not an IP address");

  // Fixed: accepted, the rejection is gone.
  m.upsert("shop/policy.yaml", deny_db("5433"));
  CHECK(m.rejected().size() == 1);
  CHECK(ids(m.flush()) == std::vector<std::string>{"policy/shop/deny-db"});
  // Removing a rejected object forgets the rejection (and the last good version).
  m.remove({"Pod", "shop", "a"});
  CHECK(m.rejected().empty());
  CHECK(m.flush().removes == std::vector<std::string>{"workload/uid-shop-a"});
}

TEST_CASE("validate: policies go through warren-node's parser", "[controller][validate]") {
  json typo = deny_db("80");
  typo["spec"]["rules"][0]["from"] = json::parse(R"([{"source": {"principal": ["x"]}}])");
  CHECK(message_of(typo) == "test.yaml: AuthorizationPolicy shop/deny-db: spec.rules[0].from[0].source: unknown field \"principal\"");
  json dry = deny_db("80");
  dry["metadata"]["annotations"] = {{"istio.io/dry-run", "maybe"}};
  CHECK(message_of(dry) ==
        "test.yaml: AuthorizationPolicy shop/deny-db: metadata.annotations[\"istio.io/dry-run\"]: must be \"true\" or \"false\"");
  json top = deny_db("80");
  top["specs"] = json::object();
  CHECK(message_of(top) == "test.yaml: AuthorizationPolicy shop/deny-db: unknown field \"specs\"");
  json pa = json::parse(R"({"apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
    "metadata": {"name": "p", "namespace": "shop"},
    "spec": {"selector": {"matchLabels": {"app": "db"}}, "portLevelMtls": {"80a": {"mode": "STRICT"}, "5432": {"mode": "STRICTER"}}}})");
  CHECK(message_of(pa) ==
        "test.yaml: PeerAuthentication shop/p: spec.portLevelMtls[\"5432\"].mode: \"STRICTER\" is not one of UNSET, STRICT, PERMISSIVE, DISABLE\n"
        "test.yaml: PeerAuthentication shop/p: spec.portLevelMtls[\"80a\"]: \"80a\" is not a port");
  // Kubernetes bookkeeping in metadata and status is not the node's business.
  json live = deny_db("80");
  live["metadata"]["uid"] = "x";
  live["metadata"]["managedFields"] = json::array();
  live["metadata"]["finalizers"] = json::array();
  live["status"] = {{"validationMessages", json::array()}};
  CHECK(validate_object(live).empty());
}

TEST_CASE("validate: metadata and type", "[controller][validate]") {
  CHECK(message_of(json::parse(R"({"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "shop"}})")) ==
        "test.yaml: Pod shop/(no name): metadata.name: is required");
  CHECK(message_of(json::parse(R"({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "Echo_1", "namespace": "shop"}})")) ==
        "test.yaml: Service shop/Echo_1: metadata.name: \"Echo_1\" is not a valid Service name");
  CHECK(message_of(json::parse(R"({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"}})")) ==
        "test.yaml: Service echo: metadata.namespace: is required");
  CHECK(message_of(json::parse(R"({"apiVersion": "security.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "r", "namespace": "shop"}, "spec": {}})")) ==
        "test.yaml: VirtualService shop/r: apiVersion: \"security.istio.io/v1\" is not an apiVersion of VirtualService "
        "(networking.istio.io/v1, networking.istio.io/v1beta1, networking.istio.io/v1alpha3)");
  CHECK(message_of(json::parse(R"({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"a": 1}}})")) ==
        "test.yaml: Namespace shop: metadata.labels.a: must be a string, got 1");
  CHECK(message_of(json::parse(R"({"metadata": {"name": "x"}})")) == "test.yaml: object x: kind: is required");
  // Kubernetes list items carry no apiVersion: accepted.
  CHECK(validate_object(json::parse(R"({"kind": "Namespace", "metadata": {"name": "shop"}})")).empty());
}

TEST_CASE("validate: core kinds", "[controller][validate]") {
  json p = pod("shop", "a", "10.1.0.1");
  p["metadata"]["annotations"] = {{"warren.io/exclude-outbound-ports", "5432, 99999"}};
  p["spec"]["hostNetwork"] = "yes";
  p["status"]["phase"] = "Sleeping";
  CHECK(message_of(p) ==
        "test.yaml: Pod shop/a: metadata.annotations[\"warren.io/exclude-outbound-ports\"]: \"99999\" is not a port\n"
        "test.yaml: Pod shop/a: spec.hostNetwork: must be true or false, got \"yes\"\n"
        "test.yaml: Pod shop/a: status.phase: \"Sleeping\" is not one of Pending, Running, Succeeded, Failed, Unknown");
  json no_uid = pod("shop", "a", "10.1.0.1");
  no_uid["metadata"].erase("uid");
  CHECK(message_of(no_uid) == "test.yaml: Pod shop/a: metadata.uid: is required");

  json s = service("shop", "echo", "10.96.0.300", {{"app", 1}},
                   json::parse(R"([{"port": 0}, {"port": 80, "targetPort": "Not_A_Name"}, {"port": 81, "protocol": "ICMP"}])"));
  CHECK(message_of(s) ==
        "test.yaml: Service shop/echo: spec.clusterIP: \"10.96.0.300\" is not an IP address\n"
        "test.yaml: Service shop/echo: spec.ports[0].port: 0 is not a port\n"
        "test.yaml: Service shop/echo: spec.ports[1].targetPort: \"Not_A_Name\" is not a port or a port name\n"
        "test.yaml: Service shop/echo: spec.ports[2].protocol: \"ICMP\" is not one of TCP, UDP, SCTP\n"
        "test.yaml: Service shop/echo: spec.selector.app: must be a string, got 1");
  CHECK(validate_object(service("shop", "headless", "None", {{"app", "x"}})).empty());

  json e = slice("shop", "echo-1", "echo", {"u1"});
  e["endpoints"][0]["addresses"][0] = "fe80::1::2";
  e["endpoints"][0]["conditions"]["ready"] = "true";
  CHECK(message_of(e) ==
        "test.yaml: EndpointSlice shop/echo-1: endpoints[0].addresses[0]: \"fe80::1::2\" is not an IP address\n"
        "test.yaml: EndpointSlice shop/echo-1: endpoints[0].conditions.ready: must be true or false, got \"true\"");
  json node = json::parse(R"({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
    "status": {"addresses": [{"type": "InternalIP", "address": "n1.local"}, {"type": "Hostname", "address": "n1"}]}})");
  CHECK(message_of(node) == "test.yaml: Node n1: status.addresses[0].address: \"n1.local\" is not an IP address");
}

TEST_CASE("validate: Istio routing and authentication kinds", "[controller][validate]") {
  json ra = json::parse(R"({"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
    "metadata": {"name": "jwt", "namespace": "shop"},
    "spec": {"selector": {"matchLabels": {"app": "web"}}, "jwtRules": [
      {"issuer": "https://issuer.example", "jwksUri": "https://issuer.example/jwks.json"},
      {"jwksUri": "ftp://x"},
      {"issuer": "i", "jwks": "{\"keys\": 1}"}]}})");
  CHECK(message_of(ra) ==
        "test.yaml: RequestAuthentication shop/jwt: spec.jwtRules[1].issuer: is required\n"
        "test.yaml: RequestAuthentication shop/jwt: spec.jwtRules[1].jwksUri: \"ftp://x\" is not an http(s) URL\n"
        "test.yaml: RequestAuthentication shop/jwt: spec.jwtRules[2].jwks: is not a JSON Web Key Set (a JSON object with a \"keys\" array)");

  json vs = json::parse(R"({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
    "metadata": {"name": "reviews", "namespace": "shop"},
    "spec": {"hosts": ["reviews"], "http": [
      {"match": [{"uri": {"prefix": "/v2"}}], "route": [{"destination": {"host": "reviews", "subset": "v2"}, "weight": 101},
                                                    {"destination": {"subset": "v1"}}], "timeout": "5 seconds"},
      {"fault": {"abort": {"httpStatus": 503, "percentage": {"value": 150}}}}]}})");
  CHECK(message_of(vs) ==
        "test.yaml: VirtualService shop/reviews: spec.http[0].route[0].weight: 101 is not within 0..100\n"
        "test.yaml: VirtualService shop/reviews: spec.http[0].route[1].destination.host: is required\n"
        "test.yaml: VirtualService shop/reviews: spec.http[0].timeout: \"5 seconds\" is not a duration (like \"1s\", \"500ms\", \"1h30m\")\n"
        "test.yaml: VirtualService shop/reviews: spec.http[1]: one of route, redirect, directResponse and delegate is required\n"
        "test.yaml: VirtualService shop/reviews: spec.http[1].fault.abort.percentage.value: 150 is not a percentage (0..100)");

  json dr = json::parse(R"({"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
    "metadata": {"name": "reviews", "namespace": "shop"},
    "spec": {"host": "reviews", "trafficPolicy": {"loadBalancer": {"simple": "FASTEST"}},
             "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v1"}, {"name": "V_2"}]}})");
  CHECK(message_of(dr) ==
        "test.yaml: DestinationRule shop/reviews: spec.trafficPolicy.loadBalancer.simple: \"FASTEST\" is not one of "
        "UNSPECIFIED, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST, LEAST_CONN\n"
        "test.yaml: DestinationRule shop/reviews: spec.subsets[1].name: duplicate subset \"v1\" (also spec.subsets[0])\n"
        "test.yaml: DestinationRule shop/reviews: spec.subsets[2].name: \"V_2\" is not a valid subset name");
}

TEST_CASE("validate: Gateway API kinds", "[controller][validate]") {
  json gw = json::parse(R"({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
    "metadata": {"name": "waypoint", "namespace": "shop"},
    "spec": {"gatewayClassName": "warren-waypoint", "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}})");
  CHECK(validate_object(gw).empty());
  gw["spec"]["listeners"] = json::array();
  CHECK(message_of(gw) == "test.yaml: Gateway shop/waypoint: spec.listeners: must list at least one listener");

  json route = json::parse(R"({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
    "metadata": {"name": "reviews", "namespace": "shop"},
    "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "reviews", "port": 9080}],
             "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "v2"}}],
                        "backendRefs": [{"name": "reviews-v2"}, {"name": "reviews-v1", "port": 9080, "weight": -1}]}]}})");
  CHECK(message_of(route) ==
        "test.yaml: HTTPRoute shop/reviews: spec.rules[0].matches[0].path.value: \"v2\" must start with /\n"
        "test.yaml: HTTPRoute shop/reviews: spec.rules[0].backendRefs[0].port: is required\n"
        "test.yaml: HTTPRoute shop/reviews: spec.rules[0].backendRefs[1].weight: -1 is not within 0..1000000");
}

TEST_CASE("validate: JSON pointers become dotted paths", "[controller][validate]") {
  json obj = json::parse(R"({"spec": {"rules": [{"to": [{"operation": {"ports": ["80a"]}}]}],
                                      "portLevelMtls": {"8080": {}}},
                             "metadata": {"annotations": {"istio.io/dry-run": "x"}}})");
  CHECK(pointer_to_path(obj, "/spec/rules/0/to/0/operation/ports/0") == "spec.rules[0].to[0].operation.ports[0]");
  CHECK(pointer_to_path(obj, "/metadata/annotations/istio.io~1dry-run") == "metadata.annotations[\"istio.io/dry-run\"]");
  CHECK(pointer_to_path(obj, "/spec/portLevelMtls/8080/mode") == "spec.portLevelMtls[\"8080\"].mode");
  CHECK(pointer_to_path(obj, "/spec/missing/3") == "spec.missing[3]");
  CHECK(pointer_to_path(obj, "") == "");
}

TEST_CASE("validate: durations and names", "[controller][validate]") {
  using namespace warren::controller::detail;
  for (const char* ok : {"0", "1s", "0.5s", ".5s", "1.25h", "1h30m", "500ms", "10us", "2m0.5s", "7s"}) CHECK(duration(ok));
  for (const char* bad : {"", "s", "1", "1.s.", "1.2.3s", "5 seconds", "1d", "-1s", "1sm"}) CHECK_FALSE(duration(bad));
  CHECK(dns_label("shop-1"));
  CHECK_FALSE(dns_label("-shop"));
  CHECK_FALSE(dns_label("Shop"));
  CHECK(dns_subdomain("a.b-c.d"));
  CHECK_FALSE(dns_subdomain("a..b"));
  CHECK(port_name("http-alt"));
  CHECK_FALSE(port_name("8080"));
  CHECK_FALSE(port_name("a--b"));
  CHECK_FALSE(port_name("very-long-port-name"));
}
