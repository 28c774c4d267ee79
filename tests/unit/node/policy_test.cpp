#include <catch2/catch.hpp>

#include "policy.h"

using namespace warren;
using nlohmann::json;

namespace {

json pol(const std::string& ns, const std::string& name, const std::string& spec, bool dry_run = false) {
  json p = {{"apiVersion", "security.istio.io/v1"}, {"kind", "AuthorizationPolicy"},
            {"metadata", {{"name", name}, {"namespace", ns}}}, {"spec", json::parse(spec)}};
  if (dry_run) p["metadata"]["annotations"] = {{"istio.io/dry-run", "true"}};
  return p;
}

json pa(const std::string& ns, const std::string& name, const std::string& spec) {
  return {{"metadata", {{"name", name}, {"namespace", ns}}}, {"spec", json::parse(spec)}};
}

config::SnapshotPtr snap(json policies, json peer_auths = json::array()) {
  json d = json::parse(R"({
    "node": {"name": "node-a", "address": "127.0.0.1"},
    "certificates": {"rootCert": "r.pem", "dir": "certs"},
    "workloads": [
      {"uid": "echo", "name": "echo", "namespace": "default", "ips": ["10.0.0.1"], "labels": {"app": "echo", "tier": "web"}},
      {"uid": "other", "name": "other", "namespace": "default", "ips": ["10.0.0.2"], "labels": {"app": "other"}},
      {"uid": "prod-echo", "name": "echo", "namespace": "prod", "ips": ["10.0.0.3"], "labels": {"app": "echo"}}
    ]})");
  d["policies"] = std::move(policies);
  d["peerAuthentications"] = std::move(peer_auths);
  auto r = config::parse(d);
  if (!r.ok()) FAIL(r.error().message);
  return r.value();
}

policy::ConnFacts mtls(const std::string& id = "spiffe://cluster.local/ns/client/sa/sleep",
                       const char* src = "10.1.0.5", uint16_t port = 8080) {
  return {*IpAddr::parse(src), *IpAddr::parse("10.0.0.1"), port, id};
}
policy::ConnFacts plain(const char* src = "192.168.0.9", uint16_t port = 8080) {
  return {*IpAddr::parse(src), *IpAddr::parse("10.0.0.1"), port, std::nullopt};
}

struct Case {
  const char* name;
  json policies;
  policy::ConnFacts facts;
  bool allow;
  std::string reason;
  std::string dst = "echo";
};

}  // namespace

TEST_CASE("policy: authorize, Istio semantics") {
  const std::string allow_sleep = R"({"rules":[{"from":[{"source":{"principals":["cluster.local/ns/client/sa/sleep"]}}]}]})";
  std::vector<Case> cases = {
      {"no policies: allow", json::array(), plain(), true, "no ALLOW policy applies"},
      {"ALLOW matches", {pol("default", "a", allow_sleep)}, mtls(), true, "default/a"},
      {"ALLOW applies, none matches: deny", {pol("default", "a", allow_sleep)},
       mtls("spiffe://cluster.local/ns/client/sa/other"), false, "no ALLOW policy matched"},
      {"ALLOW with no rules denies all", {pol("default", "a", "{}")}, mtls(), false, "no ALLOW policy matched"},
      {"ALLOW with empty rule allows all", {pol("default", "a", R"({"rules":[{}]})")}, plain(), true, "default/a"},
      {"DENY wins over ALLOW",
       {pol("default", "a", R"({"rules":[{}]})"), pol("default", "d", R"({"action":"DENY","rules":[{"to":[{"operation":{"ports":["8080"]}}]}]})")},
       mtls(), false, "default/d"},
      {"DENY not matching, no ALLOW: allow", {pol("default", "d", R"({"action":"DENY","rules":[{"to":[{"operation":{"ports":["9090"]}}]}]})")},
       mtls(), true, "no ALLOW policy applies"},
      {"DENY with no rules matches nothing", {pol("default", "d", R"({"action":"DENY"})")}, mtls(), true, "no ALLOW policy applies"},
      {"principal prefix wildcard", {pol("default", "a", R"({"rules":[{"from":[{"source":{"principals":["cluster.local/ns/client/*"]}}]}]})")},
       mtls(), true, "default/a"},
      {"principal suffix wildcard", {pol("default", "a", R"({"rules":[{"from":[{"source":{"principals":["*/sa/sleep"]}}]}]})")},
       mtls(), true, "default/a"},
      {"principal * needs an identity", {pol("default", "a", R"({"rules":[{"from":[{"source":{"principals":["*"]}}]}]})")},
       plain(), false, "no ALLOW policy matched"},
      {"notPrincipals excludes", {pol("default", "a", R"({"rules":[{"from":[{"source":{"notPrincipals":["*/sa/sleep"]}}]}]})")},
       mtls(), false, "no ALLOW policy matched"},
      {"notPrincipals matches plaintext", {pol("default", "d", R"({"action":"DENY","rules":[{"from":[{"source":{"notPrincipals":["*"]}}]}]})")},
       plain(), false, "default/d"},
      {"namespaces from the SPIFFE id", {pol("default", "a", R"({"rules":[{"from":[{"source":{"namespaces":["client"]}}]}]})")},
       mtls(), true, "default/a"},
      {"namespaces never match plaintext", {pol("default", "a", R"({"rules":[{"from":[{"source":{"namespaces":["*"]}}]}]})")},
       plain(), false, "no ALLOW policy matched"},
      {"notNamespaces", {pol("default", "a", R"({"rules":[{"from":[{"source":{"notNamespaces":["client"]}}]}]})")},
       mtls(), false, "no ALLOW policy matched"},
      {"serviceAccounts ns/sa", {pol("default", "a", R"({"rules":[{"from":[{"source":{"serviceAccounts":["client/sleep"]}}]}]})")},
       mtls(), true, "default/a"},
      {"ipBlocks", {pol("default", "a", R"({"rules":[{"from":[{"source":{"ipBlocks":["192.168.0.0/16"]}}]}]})")},
       plain(), true, "default/a"},
      {"notIpBlocks", {pol("default", "a", R"({"rules":[{"from":[{"source":{"ipBlocks":["0.0.0.0/0"],"notIpBlocks":["192.168.0.9"]}}]}]})")},
       plain(), false, "no ALLOW policy matched"},
      {"fields of a source AND'd", {pol("default", "a", R"({"rules":[{"from":[{"source":{"namespaces":["client"],"ipBlocks":["10.9.0.0/16"]}}]}]})")},
       mtls(), false, "no ALLOW policy matched"},
      {"sources OR'd", {pol("default", "a", R"({"rules":[{"from":[{"source":{"namespaces":["x"]}},{"source":{"ipBlocks":["10.1.0.0/16"]}}]}]})")},
       mtls(), true, "default/a"},
      {"from AND to", {pol("default", "a", R"({"rules":[{"from":[{"source":{"namespaces":["client"]}}],"to":[{"operation":{"ports":["9090"]}}]}]})")},
       mtls(), false, "no ALLOW policy matched"},
      {"notPorts", {pol("default", "a", R"({"rules":[{"to":[{"operation":{"notPorts":["8080"]}}]}]})")},
       mtls(), false, "no ALLOW policy matched"},
      {"rules OR'd", {pol("default", "a", R"({"rules":[{"to":[{"operation":{"ports":["1"]}}]},{"to":[{"operation":{"ports":["8080"]}}]}]})")},
       mtls(), true, "default/a"},
      {"when source.ip", {pol("default", "a", R"({"rules":[{"when":[{"key":"source.ip","values":["10.1.0.0/24"]}]}]})")},
       mtls(), true, "default/a"},
      {"when destination.port notValues", {pol("default", "a", R"({"rules":[{"when":[{"key":"destination.port","notValues":["8080"]}]}]})")},
       mtls(), false, "no ALLOW policy matched"},
      {"when source.principal and destination.ip AND'd", {pol("default", "a", R"({"rules":[{"when":[
          {"key":"source.principal","values":["cluster.local/ns/client/*"]},{"key":"destination.ip","values":["10.0.0.1"]}]}]})")},
       mtls(), true, "default/a"},
      {"when source.namespace on plaintext", {pol("default", "a", R"({"rules":[{"when":[{"key":"source.namespace","values":["client"]}]}]})")},
       plain(), false, "no ALLOW policy matched"},
      {"L7-only ALLOW fails closed (methods)", {pol("default", "a", R"({"rules":[{"to":[{"operation":{"methods":["GET"]}}]}]})")},
       mtls(), false, "no ALLOW policy matched"},
      {"L7-only ALLOW fails closed (request.* condition)",
       {pol("default", "a", R"({"rules":[{"from":[{"source":{"namespaces":["client"]}}],"when":[{"key":"request.auth.claims[iss]","values":["x"]}]}]})")},
       mtls(), false, "no ALLOW policy matched"},
      {"L7-only DENY enforced without L7 fields", {pol("default", "d", R"({"action":"DENY","rules":[{"to":[{"operation":{"paths":["/admin"]}}]}]})")},
       mtls(), false, "default/d"},
      {"DENY keeps its L4 fields", {pol("default", "d", R"({"action":"DENY","rules":[{"to":[{"operation":{"ports":["9090"],"methods":["POST"]}}]}]})")},
       mtls(), true, "no ALLOW policy applies"},
      {"DENY requestPrincipals-only source denies all", {pol("default", "d", R"({"action":"DENY","rules":[{"from":[{"source":{"notRequestPrincipals":["*"]}}]}]})")},
       mtls(), false, "default/d"},
      {"AUDIT never decides", {pol("default", "au", R"({"action":"AUDIT","rules":[{}]})")}, mtls(), true, "no ALLOW policy applies"},
      {"CUSTOM not evaluated at L4", {pol("default", "c", R"({"action":"CUSTOM","provider":{"name":"ext"},"rules":[{}]})")},
       mtls(), true, "no ALLOW policy applies"},
      {"dry-run DENY ignored", {pol("default", "d", R"({"action":"DENY","rules":[{}]})", true)}, mtls(), true, "no ALLOW policy applies"},
      {"dry-run ALLOW does not make ALLOW apply", {pol("default", "a", "{}", true)}, mtls(), true, "no ALLOW policy applies"},
      {"mesh-wide (root namespace) applies", {pol("istio-system", "deny-all", R"({"action":"DENY","rules":[{}]})")},
       mtls(), false, "istio-system/deny-all"},
      {"other namespace does not apply", {pol("prod", "deny-all", R"({"action":"DENY","rules":[{}]})")},
       mtls(), true, "no ALLOW policy applies"},
      {"namespace-wide applies to every workload", {pol("default", "deny-all", R"({"action":"DENY","rules":[{}]})")},
       mtls(), false, "default/deny-all", "other"},
      {"selector not matching", {pol("default", "a", R"({"selector":{"matchLabels":{"app":"other"}}})")},
       mtls(), true, "no ALLOW policy applies"},
      {"selector subset of labels", {pol("default", "a", R"({"selector":{"matchLabels":{"app":"echo"}},"rules":[{}]})")},
       mtls(), true, "default/a"},
      {"selector must match every label", {pol("default", "d", R"({"selector":{"matchLabels":{"app":"echo","tier":"db"}},"action":"DENY","rules":[{}]})")},
       mtls(), true, "no ALLOW policy applies"},
      {"selector in another namespace", {pol("prod", "d", R"({"selector":{"matchLabels":{"app":"echo"}},"action":"DENY","rules":[{}]})")},
       mtls(), true, "no ALLOW policy applies"},
      {"selector in root namespace is mesh-wide", {pol("istio-system", "d", R"({"selector":{"matchLabels":{"app":"echo"}},"action":"DENY","rules":[{}]})")},
       mtls(), false, "istio-system/d", "prod-echo"},
      {"targetRefs policy is the waypoint's", {pol("default", "d", R"({"targetRefs":[{"kind":"Gateway","group":"gateway.networking.k8s.io","name":"wp"}],"action":"DENY","rules":[{}]})")},
       mtls(), true, "no ALLOW policy applies"},
  };
  for (auto& c : cases) {
    SECTION(c.name) {
      auto s = snap(c.policies);
      const auto* dst = s->workload_by_uid(c.dst);
      REQUIRE(dst);
      auto d = policy::authorize(*s, *dst, c.facts);
      CHECK(d.allow == c.allow);
      CHECK(d.reason == c.reason);
    }
  }
}

TEST_CASE("policy: PeerAuthentication precedence") {
  using M = config::PeerAuthMode;
  const json mesh_strict = pa("istio-system", "mesh", R"({"mtls":{"mode":"STRICT"}})");
  const json ns_permissive = pa("default", "ns", R"({"mtls":{"mode":"PERMISSIVE"}})");
  const json ns_unset = pa("default", "ns", R"({"mtls":{"mode":"UNSET"}})");
  const json wl_strict_port = pa("default", "wl", R"({"selector":{"matchLabels":{"app":"echo"}},"mtls":{"mode":"STRICT"},"portLevelMtls":{"9090":{"mode":"PERMISSIVE"},"9091":{"mode":"UNSET"}}})");
  const json wl_unset_port = pa("default", "wl", R"({"selector":{"matchLabels":{"app":"echo"}},"portLevelMtls":{"9090":{"mode":"DISABLE"}}})");
  struct PCase {
    const char* name;
    json pas;
    std::string dst;
    uint16_t port;
    M mode;
  };
  std::vector<PCase> cases = {
      {"nothing set: PERMISSIVE", json::array(), "echo", 80, M::kPermissive},
      {"mesh-wide STRICT", {mesh_strict}, "prod-echo", 80, M::kStrict},
      {"namespace beats mesh", {mesh_strict, ns_permissive}, "echo", 80, M::kPermissive},
      {"namespace only for its namespace", {mesh_strict, ns_permissive}, "prod-echo", 80, M::kStrict},
      {"UNSET inherits mesh", {mesh_strict, ns_unset}, "echo", 80, M::kStrict},
      {"workload beats namespace", {ns_permissive, wl_strict_port}, "echo", 80, M::kStrict},
      {"workload selector not matching", {ns_permissive, wl_strict_port}, "other", 80, M::kPermissive},
      {"port level beats workload", {ns_permissive, wl_strict_port}, "echo", 9090, M::kPermissive},
      {"port level UNSET inherits workload", {ns_permissive, wl_strict_port}, "echo", 9091, M::kStrict},
      {"workload mode unset inherits namespace, port DISABLE", {mesh_strict, wl_unset_port}, "echo", 9090, M::kDisable},
      {"workload mode unset inherits mesh on other ports", {mesh_strict, wl_unset_port}, "echo", 80, M::kStrict},
  };
  for (auto& c : cases) {
    SECTION(c.name) {
      auto s = snap(json::array(), c.pas);
      CHECK(policy::peer_auth_mode(*s, *s->workload_by_uid(c.dst), c.port) == c.mode);
    }
  }
}

TEST_CASE("policy: check_inbound applies STRICT, then authorization") {
  auto s = snap({pol("default", "a", R"({"rules":[{"from":[{"source":{"namespaces":["client"]}}]},{"from":[{"source":{"ipBlocks":["192.168.0.0/16"]}}]}]})")},
                {pa("istio-system", "mesh", R"({"mtls":{"mode":"STRICT"}})"),
                 pa("default", "wl", R"({"selector":{"matchLabels":{"app":"echo"}},"portLevelMtls":{"8081":{"mode":"PERMISSIVE"}}})")});
  const auto& echo = *s->workload_by_uid("echo");
  auto d = policy::check_inbound(*s, echo, plain());
  CHECK_FALSE(d.allow);
  CHECK(d.reason == "STRICT mTLS: plaintext refused");
  d = policy::check_inbound(*s, echo, plain("192.168.1.1", 8081));  // PERMISSIVE port, ipBlocks match
  CHECK(d.allow);
  CHECK(d.reason == "default/a");
  d = policy::check_inbound(*s, echo, plain("172.16.0.1", 8081));
  CHECK_FALSE(d.allow);
  CHECK(d.reason == "no ALLOW policy matched");
  d = policy::check_inbound(*s, echo, mtls());
  CHECK(d.allow);
  d = policy::check_inbound(*s, echo, mtls("spiffe://cluster.local/ns/evil/sa/x"));
  CHECK_FALSE(d.allow);
}
