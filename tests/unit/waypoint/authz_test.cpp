#include "authz.h"

#include <catch2/catch.hpp>
#include <string>

#include "request_authn.h"

using namespace warren::waypoint;
using nlohmann::json;

namespace {

AuthzScope scope() {
  AuthzScope s;
  s.waypoint = "waypoint";
  s.namespace_ = "shop";
  s.services = {"shop/reviews", "shop/ratings"};
  return s;
}

const json kGateway = {
    {"group", "gateway.networking.k8s.io"}, {"kind", "Gateway"}, {"name", "waypoint"}};

// An AuthorizationPolicy bound to the waypoint unless the spec names a target.
json pol(const char* name, const char* spec, const char* ns = "shop", bool dry_run = false) {
  json s = json::parse(spec);
  if (!s.contains("targetRef") && !s.contains("targetRefs") && !s.contains("selector") &&
      !s.contains("none"))
    s["targetRefs"] = json::array({kGateway});
  s.erase("none");
  json md = {{"name", name}, {"namespace", ns}};
  if (dry_run) md["annotations"] = {{"istio.io/dry-run", "true"}};
  return {{"apiVersion", "security.istio.io/v1"},
          {"kind", "AuthorizationPolicy"},
          {"metadata", md},
          {"spec", s}};
}

L7Authz build(std::vector<json> ps, std::vector<std::string>* errors = nullptr) {
  std::vector<std::string> local;
  auto a = L7Authz::build(ps, scope(), errors ? errors : &local);
  if (!errors) {
    std::string all;
    for (const auto& e : local) all += e + "\n";
    CHECK(all == "");
  }
  return a;
}

struct Req {
  std::string method = "GET", host = "reviews.shop.svc.cluster.local:9080", path = "/";
  Headers headers;
  std::string principal = "cluster.local/ns/web/sa/frontend", ns = "web";
  std::string src_ip = "10.0.0.5", dst_ip = "10.1.0.9";
  uint16_t port = 9080;
  const AuthnInfo* auth = nullptr;
  std::string sni, service = "shop/reviews";
  RequestAttrs attrs() const {
    RequestAttrs r;
    r.method = method;
    r.host = host;
    r.path = path;
    r.headers = &headers;
    r.source_principal = principal;
    r.source_namespace = ns;
    r.source_ip = src_ip;
    r.destination_ip = dst_ip;
    r.destination_port = port;
    r.auth = auth;
    r.sni = sni;
    r.service = service;
    return r;
  }
};

Req path(const char* p) {
  Req r;
  r.path = p;
  return r;
}

Decision::Kind kind(const L7Authz& a, const Req& r) {
  return a.evaluate(r.attrs()).kind;
}
bool allowed(const L7Authz& a, const Req& r) {
  return kind(a, r) == Decision::kAllow;
}

}  // namespace

TEST_CASE("authz: only policies bound to this waypoint apply", "[authz]") {
  const char* deny_all = R"({"action":"DENY","rules":[{}]})";
  auto spec_with = [&](json target) {
    json s = json::parse(deny_all);
    s["targetRefs"] = json::array({target});
    return s.dump();
  };
  CHECK(build({pol("a", deny_all)}).size() == 1);
  CHECK(build({pol("a", R"({"action":"DENY","rules":[{}],"none":1})")}).size() == 0);  // node's
  CHECK(build({pol("a", R"({"action":"DENY","selector":{"matchLabels":{"app":"x"}}})")}).size() ==
        0);
  CHECK(build({pol("a", deny_all, "other")}).size() == 0);  // a Gateway of another namespace
  json other_gw = kGateway;
  other_gw["name"] = "east";
  CHECK(build({pol("a", spec_with(other_gw).c_str())}).size() == 0);
  json cls = {{"group", "gateway.networking.k8s.io"},
              {"kind", "GatewayClass"},
              {"name", "warren-waypoint"}};
  CHECK(build({pol("a", spec_with(cls).c_str(), "istio-system")}).size() == 1);
  CHECK(build({pol("a", spec_with(cls).c_str(), "shop")}).size() == 0);
  json svc = {{"kind", "Service"}, {"group", ""}, {"name", "ratings"}};
  auto a = build({pol("a", spec_with(svc).c_str())});
  REQUIRE(a.size() == 1);
  Req r;
  CHECK(allowed(a, r));  // reviews: not bound
  r.service = "shop/ratings";
  CHECK_FALSE(allowed(a, r));
  svc["name"] = "billing";  // not served here
  CHECK(build({pol("a", spec_with(svc).c_str())}).size() == 0);
}

TEST_CASE("authz: ALLOW and DENY order as Istio", "[authz]") {
  auto none = build({});
  auto d = none.evaluate(Req{}.attrs());
  CHECK(d.kind == Decision::kAllow);
  CHECK(d.reason == "no ALLOW policy applies");
  auto a = build(
      {pol("allow-api", R"({"rules":[{"to":[{"operation":{"paths":["/api/*"]}}]}]})"),
       pol("deny-admin",
           R"({"action":"DENY","rules":[{"to":[{"operation":{"paths":["/api/admin*"]}}]}]})")});
  CHECK(allowed(a, path("/api/items")));
  auto no = a.evaluate(path("/other").attrs());
  CHECK(no.kind == Decision::kDeny);
  CHECK(no.reason == "no ALLOW policy matched");
  auto den = a.evaluate(path("/api/admin/x").attrs());
  CHECK(den.kind == Decision::kDeny);
  CHECK(den.policy == "shop/deny-admin");
  // No rules: ALLOW matches nothing; an empty rule matches everything.
  CHECK_FALSE(allowed(build({pol("a", "{}")}), Req{}));
  CHECK(allowed(build({pol("a", R"({"rules":[{}]})")}), Req{}));
  CHECK(allowed(build({pol("a", R"({"action":"DENY"})")}), Req{}));
}

TEST_CASE("authz: CUSTOM comes first and names its provider", "[authz]") {
  auto a =
      build({pol("ext", R"({"action":"CUSTOM","provider":{"name":"opa"},
                                 "rules":[{"to":[{"operation":{"paths":["/secure/*"]}}]}]})"),
             pol("deny",
                 R"({"action":"DENY","rules":[{"to":[{"operation":{"methods":["DELETE"]}}]}]})")});
  Req r = path("/secure/x");
  r.method = "DELETE";
  auto d = a.evaluate(r.attrs());
  CHECK(d.kind == Decision::kCustom);
  CHECK(d.provider == "opa");
  CHECK(d.policy == "shop/ext");
  CHECK(a.evaluate_after_custom(r.attrs()).kind == Decision::kDeny);
  r.method = "GET";
  CHECK(a.evaluate_after_custom(r.attrs()).kind == Decision::kAllow);
  CHECK(allowed(a, path("/open")));
  // Two providers at one waypoint: deny what either would check.
  std::vector<std::string> errors;
  auto two = build({pol("x", R"({"action":"CUSTOM","provider":{"name":"opa"},"rules":[{}]})"),
                    pol("y", R"({"action":"CUSTOM","provider":{"name":"other"},"rules":[{}]})")},
                   &errors);
  CHECK(kind(two, Req{}) == Decision::kDeny);
  CHECK(errors.size() == 1);
  // CUSTOM without a provider denies everything.
  errors.clear();
  auto bad = build({pol("x", R"({"action":"CUSTOM","rules":[{}]})")}, &errors);
  CHECK(kind(bad, Req{}) == Decision::kDeny);
  CHECK(errors.at(0) ==
        "AuthorizationPolicy shop/x: /spec/provider/name: is required with action CUSTOM; denying "
        "all");
}

TEST_CASE("authz: AUDIT flags and dry-run only reports", "[authz]") {
  auto a = build(
      {pol("audit", R"({"action":"AUDIT","rules":[{"to":[{"operation":{"paths":["/pay"]}}]}]})"),
       pol("dry", R"({"action":"DENY","rules":[{"to":[{"operation":{"paths":["/pay"]}}]}]})",
           "shop", true)});
  auto d = a.evaluate(path("/pay").attrs());
  CHECK(d.kind == Decision::kAllow);
  CHECK(d.audit);
  CHECK(d.audit_evaluated);
  CHECK(d.audit_policy == "shop/audit");
  CHECK(d.dry_run.evaluated);
  CHECK(d.dry_run.would_deny);
  CHECK(d.dry_run.policy == "shop/dry");
  auto o = a.evaluate(path("/other").attrs());
  CHECK_FALSE(o.audit);
  CHECK(o.audit_evaluated);  // the AUDIT policy applies, without matching (not logged)
  CHECK(o.audit_policy.empty());
  CHECK_FALSE(o.dry_run.would_deny);
  auto dry_allow =
      build({pol("da", R"({"rules":[{"to":[{"operation":{"paths":["/ok"]}}]}]})", "shop", true)});
  auto x = dry_allow.evaluate(path("/nope").attrs());
  CHECK_FALSE(x.audit_evaluated);  // no AUDIT policy
  CHECK(x.kind == Decision::kAllow);
  CHECK(x.dry_run.would_deny);
  CHECK_FALSE(dry_allow.evaluate(path("/ok").attrs()).dry_run.would_deny);
}

TEST_CASE("authz: hosts are case-insensitive and port-aware", "[authz]") {
  auto a = build({pol(
      "h",
      R"({"rules":[{"to":[{"operation":{"hosts":["Reviews.shop.svc.cluster.local","*.example.com","api:8080"]}}]}]})")});
  auto host = [&](const char* h) {
    Req r;
    r.host = h;
    return allowed(a, r);
  };
  CHECK(host("reviews.shop.svc.cluster.local"));
  CHECK(host("REVIEWS.shop.svc.cluster.local:9080"));
  CHECK_FALSE(host("reviews.shop.svc.cluster.local.evil"));
  CHECK(host("a.EXAMPLE.com"));
  CHECK(host("a.example.com:443"));
  CHECK_FALSE(host("example.com"));
  CHECK(host("api:8080"));
  CHECK_FALSE(host("api:9090"));
  CHECK_FALSE(host("api"));
  auto n = build({pol(
      "nh", R"({"action":"DENY","rules":[{"to":[{"operation":{"notHosts":["*.internal"]}}]}]})")});
  Req r;
  r.host = "db.INTERNAL:5432";
  CHECK(allowed(n, r));
  r.host = "db.public";
  CHECK_FALSE(allowed(n, r));
}

TEST_CASE("authz: paths methods and ports", "[authz]") {
  auto a = build({pol("p", R"({"rules":[{"to":[{"operation":{
      "paths":["/exact","/pre/*","*.png","/t/{*}/x","/files/{**}"],"notPaths":["/pre/secret"],
      "methods":["GET","HEAD"],"ports":["9080",8080]}}]}]})")});
  for (const char* p : {"/exact", "/pre/a", "/img/a.png", "/t/one/x", "/files/", "/files/a/b/c"}) {
    INFO(p);
    CHECK(allowed(a, path(p)));
  }
  for (const char* p :
       {"/exact/", "/Exact", "/pre", "/pre/secret", "/t//x", "/t/a/b/x", "/t/a", "/files"}) {
    INFO(p);
    CHECK_FALSE(allowed(a, path(p)));
  }
  Req r = path("/exact");
  r.method = "POST";
  CHECK_FALSE(allowed(a, r));
  r.method = "get";  // methods are case-sensitive
  CHECK_FALSE(allowed(a, r));
  r.method = "HEAD";
  r.port = 8080;
  CHECK(allowed(a, r));
  r.port = 9090;
  CHECK_FALSE(allowed(a, r));
  auto star = build(
      {pol("s", R"({"rules":[{"to":[{"operation":{"paths":["*"],"notMethods":["DELETE"]}}]}]})")});
  CHECK(allowed(star, path("/x")));
  Req del = path("/x");
  del.method = "DELETE";
  CHECK_FALSE(allowed(star, del));
}

TEST_CASE("authz: sources", "[authz]") {
  auto a = build({pol("s", R"({"rules":[{"from":[
      {"source":{"principals":["cluster.local/ns/web/*"],"notNamespaces":["blocked"]}},
      {"source":{"ipBlocks":["192.168.0.0/16"],"notIpBlocks":["192.168.9.0/24"]}},
      {"source":{"requestPrincipals":["https://issuer/*"]}},
      {"source":{"serviceAccounts":["ops/admin"]}}]}]})")});
  Req r;
  CHECK(allowed(a, r));
  r.principal = "cluster.local/ns/other/sa/x";
  r.ns = "other";
  CHECK_FALSE(allowed(a, r));
  r.src_ip = "192.168.1.1";
  CHECK(allowed(a, r));
  r.src_ip = "192.168.9.1";
  CHECK_FALSE(allowed(a, r));
  AuthnInfo info;
  info.principal = "https://issuer/alice";
  r.auth = &info;
  CHECK(allowed(a, r));
  r.auth = nullptr;
  r.principal = "cluster.local/ns/ops/sa/admin";
  r.ns = "ops";
  CHECK(allowed(a, r));
  // "*" needs an identity; notPrincipals passes plaintext.
  auto any = build({pol("any", R"({"rules":[{"from":[{"source":{"principals":["*"]}}]}]})")});
  auto notp = build(
      {pol("n", R"({"action":"DENY","rules":[{"from":[{"source":{"notPrincipals":["*"]}}]}]})")});
  Req plain;
  plain.principal = "";
  plain.ns = "";
  CHECK_FALSE(allowed(any, plain));
  CHECK_FALSE(allowed(notp, plain));
  CHECK(allowed(any, Req{}));
  CHECK(allowed(notp, Req{}));
  auto remote = build({pol(
      "r",
      R"({"action":"DENY","rules":[{"from":[{"source":{"remoteIpBlocks":["10.0.0.0/24"]}}]}]})")});
  CHECK_FALSE(allowed(remote, Req{}));
}

TEST_CASE("authz: when conditions", "[authz]") {
  auto a = build({pol("w", R"({"rules":[{"when":[
      {"key":"request.headers[X-Env]","values":["prod*"],"notValues":["production-old"]},
      {"key":"request.auth.claims[groups]","values":["admins"]},
      {"key":"request.auth.claims[org][team]","values":["blue"]},
      {"key":"request.auth.audiences","values":["shop"]},
      {"key":"request.auth.presenter","notValues":["evil"]},
      {"key":"source.ip","values":["10.0.0.0/8"]},
      {"key":"destination.port","values":["9080"]},
      {"key":"destination.ip","notValues":["10.9.0.0/16"]},
      {"key":"source.namespace","values":["web"]},
      {"key":"connection.sni","notValues":["*.evil"]}]}]})")});
  AuthnInfo info;
  info.principal = "iss/alice";
  info.audiences = {"x", "shop"};
  info.presenter = "web";
  info.claims = json::parse(R"({"groups":["dev","admins"],"org":{"team":"blue"}})");
  Req r;
  r.headers = {{"x-env", "prod-eu"}};
  r.auth = &info;
  CHECK(allowed(a, r));
  r.headers = {{"x-env", "production-old"}};
  CHECK_FALSE(allowed(a, r));
  r.headers = {};
  CHECK_FALSE(allowed(a, r));
  r.headers = {{"x-env", "prod"}};
  info.claims["org"]["team"] = "red";
  CHECK_FALSE(allowed(a, r));
  info.claims["org"]["team"] = "blue";
  info.presenter = "evil";
  CHECK_FALSE(allowed(a, r));
  info.presenter = "";
  CHECK(allowed(a, r));
  r.auth = nullptr;
  CHECK_FALSE(allowed(a, r));
  // "*" in request.headers means present, even empty.
  auto present = build({pol(
      "p",
      R"({"action":"DENY","rules":[{"when":[{"key":"request.headers[x-debug]","values":["*"]}]}]})")});
  Req d;
  d.headers = {{"X-Debug", ""}};
  CHECK_FALSE(allowed(present, d));
  CHECK(allowed(present, Req{}));
}

TEST_CASE("authz: what cannot be evaluated fails closed", "[authz]") {
  std::vector<std::string> errors;
  auto deny =
      build({pol("deny-admin",
                 R"({"action":"DENY","rules":[{"to":[{"operation":{"paths":["/admin",7]}}]}]})")},
            &errors);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0] ==
        "AuthorizationPolicy shop/deny-admin: /spec/rules/0/to/0/operation/paths/1: must be a "
        "string");
  CHECK_FALSE(allowed(deny, path("/public")));  // the DENY rule matches everything
  errors.clear();
  auto allow =
      build({pol("a", R"({"rules":[{"when":[{"key":"request.regex.headers[x]","values":["1"]}]},
                                            {"to":[{"operation":{"paths":["/ok"]}}]}]})")},
            &errors);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0] ==
        "AuthorizationPolicy shop/a: /spec/rules/0/when/0/key: unknown condition key "
        "\"request.regex.headers[x]\"");
  CHECK_FALSE(allowed(allow, path("/x")));  // the poisoned rule never matches
  CHECK(allowed(allow, path("/ok")));       // the others still do
  auto check_poison = [&](const char* spec, const char* expect) {
    std::vector<std::string> errs;
    auto a = build({pol("p", spec)}, &errs);
    REQUIRE(errs.size() >= 1);
    CHECK(errs[0] == expect);
    CHECK_FALSE(allowed(a, Req{}));
  };
  check_poison(R"({"action":"DENY","rules":[{"to":[{"operation":{"paths":["/a/{**}/b"]}}]}]})",
               "AuthorizationPolicy shop/p: /spec/rules/0/to/0/operation/paths/0: \"/a/{**}/b\" is "
               "not a valid path template");
  check_poison(R"({"action":"DENY","rules":[{"from":[{"source":{"ipBlocks":["10.0.0.300"]}}]}]})",
               "AuthorizationPolicy shop/p: /spec/rules/0/from/0/source/ipBlocks/0: \"10.0.0.300\" "
               "is not an IP address or CIDR");
  check_poison(R"({"action":"DENY","rules":[{"from":[{"source":{"principal":["x"]}}]}]})",
               "AuthorizationPolicy shop/p: /spec/rules/0/from/0/source/principal: unknown field");
  check_poison(
      R"({"action":"DENY","rules":[{"to":[{"operation":{"ports":["http"]}}]}]})",
      "AuthorizationPolicy shop/p: /spec/rules/0/to/0/operation/ports/0: \"http\" is not a port");
  check_poison(R"({"action":"DENY","rules":[{"when":[{"key":"source.ip"}]}]})",
               "AuthorizationPolicy shop/p: /spec/rules/0/when/0: at least one of values or "
               "notValues must be set");
  check_poison(R"({"action":"REJECT","rules":[]})",
               "AuthorizationPolicy shop/p: /spec/action: \"REJECT\" is not ALLOW, DENY, AUDIT or "
               "CUSTOM; denying all");
  check_poison(R"({"action":"DENY","rules":[{"from":[{"source":{}}]}]})",
               "AuthorizationPolicy shop/p: /spec/rules/0/from/0/source: must not be empty");
  check_poison(R"({"action":"DENY","rulez":[]})",
               "AuthorizationPolicy shop/p: /spec/rulez: unknown field");
}

TEST_CASE("authz: istio string match", "[authz]") {
  CHECK(istio_match("*", "x"));
  CHECK_FALSE(istio_match("*", ""));
  CHECK(istio_match("a*", "a"));
  CHECK(istio_match("*b", "ab"));
  CHECK_FALSE(istio_match("a*", "ba"));
  CHECK(istio_match("AbC", "abc", true));
  CHECK_FALSE(istio_match("AbC", "abc"));
}

TEST_CASE("authz: opaque TCP gets the L4 parts as Istio's TCP filter chain", "[authz]") {
  auto tcp = [](Req q) {
    RequestAttrs a = q.attrs();
    a.tcp = true;
    a.method = a.host = a.path = {};
    a.headers = nullptr;
    return a;
  };
  Req web;  // from ns web, port 9080
  Req other;
  other.ns = "other";
  other.principal = "cluster.local/ns/other/sa/x";
  // ALLOW: a rule with an HTTP-only field is left out on TCP; L4-only rules apply.
  auto allow = build({pol("a", R"({"rules":[
      {"from":[{"source":{"namespaces":["web"]}}],"to":[{"operation":{"methods":["GET"]}}]},
      {"from":[{"source":{"namespaces":["other"]}}],"to":[{"operation":{"ports":["9080"]}}]}]})")});
  CHECK(allow.evaluate(tcp(web)).kind == Decision::kDeny);     // only its HTTP rule named web
  CHECK(allow.evaluate(web.attrs()).kind == Decision::kAllow);  // over HTTP it matches
  CHECK(allow.evaluate(tcp(other)).kind == Decision::kAllow);
  // DENY: HTTP-only fields are dropped, so the rule denies more.
  auto deny = build({pol("d", R"({"action":"DENY","rules":[
      {"from":[{"source":{"namespaces":["other"]}}],"to":[{"operation":{"paths":["/admin"]}}]}]})")});
  CHECK(deny.evaluate(tcp(other)).kind == Decision::kDeny);
  CHECK(deny.evaluate(tcp(web)).kind == Decision::kAllow);
  CHECK(deny.evaluate(other.attrs()).kind == Decision::kAllow);  // HTTP: "/" is not /admin
  auto deny_all = build({pol("d", R"({"action":"DENY","rules":[{"to":[{"operation":{"methods":["POST"]}}]}]})")});
  CHECK(deny_all.evaluate(tcp(web)).kind == Decision::kDeny);
  // Ports and IP blocks are L4: they still narrow a DENY.
  auto deny_port = build({pol("d", R"({"action":"DENY","rules":[{"to":[{"operation":{"ports":["5432"]}}]}]})")});
  CHECK(deny_port.evaluate(tcp(web)).kind == Decision::kAllow);
  auto deny_ip = build({pol("d", R"({"action":"DENY","rules":[{"from":[{"source":{"ipBlocks":["10.0.0.0/24"]}}]}]})")});
  CHECK(deny_ip.evaluate(tcp(web)).kind == Decision::kDeny);
  // CUSTOM has no TCP form here: not applied.
  auto custom = build({pol("c", R"({"action":"CUSTOM","provider":{"name":"ext"},"rules":[{}]})")});
  CHECK(custom.evaluate(tcp(web)).kind == Decision::kAllow);
}
