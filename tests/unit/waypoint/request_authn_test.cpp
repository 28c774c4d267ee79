#include "request_authn.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <string>

using namespace warren::waypoint;
using nlohmann::json;

// Defined in jwt_test.cpp.
namespace jwt_testing {
struct Keypair;
json jwk(const Keypair& k, const std::string& kid);
std::string sign(const Keypair& k, const json& claims, const std::string& kid);
const Keypair& rsa();
const Keypair& rsa2();
const Keypair& ec();
}  // namespace jwt_testing

namespace {

using namespace jwt_testing;

const auto kNow = std::chrono::system_clock::time_point(std::chrono::seconds(1'700'000'000));
constexpr const char* kIss = "https://issuer.example";

AuthzScope scope() {
  AuthzScope s;
  s.waypoint = "waypoint";
  s.namespace_ = "shop";
  s.services = {"shop/reviews", "shop/ratings"};
  return s;
}

std::string jwks_text() {
  return json{{"keys", {jwk(rsa(), "r1"), jwk(ec(), "e1")}}}.dump();
}

json ra(const std::vector<json>& rules, const json& extra_spec = json::object(),
        const char* ns = "shop") {
  json spec = extra_spec;
  spec["jwtRules"] = rules;
  return {{"apiVersion", "security.istio.io/v1"},
          {"kind", "RequestAuthentication"},
          {"metadata", {{"name", "jwt"}, {"namespace", ns}}},
          {"spec", spec}};
}

json rule(json extra = json::object()) {
  json r = {{"issuer", kIss}, {"jwks", jwks_text()}};
  for (auto it = extra.begin(); it != extra.end(); ++it) r[it.key()] = it.value();
  return r;
}

RequestAuthn build(const json& obj) {
  std::vector<std::string> errors;
  auto a = RequestAuthn::build({obj}, scope(), &errors);
  std::string all;
  for (const auto& e : errors) all += e + "\n";
  CHECK(all == "");
  return a;
}

json claims(json extra = json::object()) {
  json c = {{"iss", kIss}, {"sub", "alice"}, {"aud", "shop"}, {"exp", 1'700'000'600}};
  for (auto it = extra.begin(); it != extra.end(); ++it) c[it.key()] = it.value();
  return c;
}

Headers bearer(const std::string& tok) {
  return {{"Authorization", "Bearer " + tok}, {"x-a", "1"}};
}

bool has(const Headers& h, const std::string& name) {
  for (const auto& x : h)
    if (iequals(x.name, name)) return true;
  return false;
}

std::string get(const Headers& h, const std::string& name) {
  std::string v;
  header_value(h, name, v);
  return v;
}

}  // namespace

TEST_CASE("request authn: a valid bearer token gives a principal and is stripped",
          "[request_authn]") {
  auto a = build(ra({rule()}));
  Headers h = bearer(sign(rsa(), claims({{"azp", "web"}, {"groups", {"dev"}}}), "r1"));
  auto r = a.authenticate(h, "", kNow);
  REQUIRE(r.status == AuthnResult::kValid);
  CHECK(r.info.principal == std::string(kIss) + "/alice");
  CHECK(r.info.audiences == std::vector<std::string>{"shop"});
  CHECK(r.info.presenter == "web");
  CHECK(r.info.claims["groups"][0] == "dev");
  CHECK_FALSE(has(h, "authorization"));
  CHECK(has(h, "x-a"));
  // ES256 as well, and kept with forwardOriginalToken.
  auto keep = build(ra({rule({{"forwardOriginalToken", true}})}));
  Headers h2 = bearer(sign(ec(), claims(), "e1"));
  CHECK(keep.authenticate(h2, "", kNow).status == AuthnResult::kValid);
  CHECK(has(h2, "authorization"));
}

TEST_CASE("request authn: no token passes without a principal", "[request_authn]") {
  auto a = build(ra({rule()}));
  Headers h = {{"Authorization", "Basic dXNlcjpwdw=="}};
  auto r = a.authenticate(h, "x=1", kNow);
  CHECK(r.status == AuthnResult::kNoToken);
  CHECK(has(h, "authorization"));  // not ours: untouched
  Headers none;
  CHECK(RequestAuthn{}.authenticate(none, "", kNow).status == AuthnResult::kNoToken);
}

TEST_CASE("request authn: bad tokens are refused with Envoy's reason", "[request_authn]") {
  auto a = build(ra({rule({{"audiences", {"https://shop/"}}})}));
  auto check = [&](const std::string& tok, const std::string& reason) {
    Headers h = bearer(tok);
    auto r = a.authenticate(h, "", kNow);
    CHECK(r.status == AuthnResult::kInvalid);
    CHECK(r.reason == reason);
    CHECK(r.info.principal.empty());
  };
  check(sign(rsa(), claims({{"iss", "https://other"}}), "r1"), "Jwt issuer is not configured");
  check(sign(rsa2(), claims(), "r1"), "Jwt verification fails");
  check(sign(rsa(), claims({{"exp", 1'699'999'000}}), "r1"), "Jwt is expired");
  check(sign(rsa(), claims({{"nbf", 1'700'001'000}}), "r1"), "Jwt not yet valid");
  check(sign(rsa(), claims({{"aud", "billing"}}), "r1"), "Audiences in Jwt are not allowed");
  check("not-a-jwt", jwt::kBadFormat);
  // Audiences compare without scheme and trailing slash.
  Headers ok = bearer(sign(rsa(), claims({{"aud", {"x", "http://shop"}}}), "r1"));
  CHECK(a.authenticate(ok, "", kNow).status == AuthnResult::kValid);
}

TEST_CASE("request authn: token locations", "[request_authn]") {
  auto def = build(ra({rule()}));
  std::string tok = sign(rsa(), claims(), "r1");
  Headers h;
  CHECK(def.authenticate(h, "a=b&access_token=" + tok, kNow).status == AuthnResult::kValid);
  CHECK(def.authenticate(h, "access_token=garbage", kNow).status == AuthnResult::kInvalid);
  auto custom = build(ra({rule({{"fromHeaders", {{{"name", "X-Jwt"}, {"prefix", "Token "}}}},
                                {"fromCookies", {"session"}}})}));
  Headers x = {{"x-jwt", "Token " + tok}};
  CHECK(custom.authenticate(x, "", kNow).status == AuthnResult::kValid);
  CHECK_FALSE(has(x, "x-jwt"));
  Headers c = {{"Cookie", "a=b; session=" + tok}};
  CHECK(custom.authenticate(c, "", kNow).status == AuthnResult::kValid);
  // Default locations are not read once others are configured.
  Headers b = bearer(tok);
  CHECK(custom.authenticate(b, "access_token=" + tok, kNow).status == AuthnResult::kNoToken);
  // Every token present must verify.
  Headers two = bearer(tok);
  CHECK(def.authenticate(two, "access_token=" + sign(rsa2(), claims(), "r1"), kNow).status ==
        AuthnResult::kInvalid);
}

TEST_CASE("request authn: payload and claims to headers", "[request_authn]") {
  auto a = build(ra({rule({{"outputPayloadToHeader", "x-jwt-payload"},
                           {"outputClaimToHeaders",
                            {{{"header", "x-sub"}, {"claim", "sub"}},
                             {{"header", "x-team"}, {"claim", "org.team"}},
                             {{"header", "x-groups"}, {"claim", "groups"}},
                             {{"header", "x-evil"}, {"claim", "evil"}},
                             {{"header", "x-none"}, {"claim", "missing"}}}}})}));
  json c =
      claims({{"org", {{"team", "blue"}}}, {"groups", {"a", "b"}}, {"evil", "x\r\nset-cookie: y"}});
  std::string tok = sign(rsa(), c, "r1");
  Headers h = bearer(tok);
  h.push_back({"X-Sub", "spoofed"});
  h.push_back({"x-none", "spoofed"});
  REQUIRE(a.authenticate(h, "", kNow).status == AuthnResult::kValid);
  CHECK(get(h, "x-sub") == "alice");
  CHECK(get(h, "x-team") == "blue");
  CHECK(get(h, "x-groups") == "a,b");
  CHECK_FALSE(has(h, "x-evil"));
  CHECK_FALSE(has(h, "x-none"));
  auto d1 = tok.find('.');
  CHECK(get(h, "x-jwt-payload") == tok.substr(d1 + 1, tok.rfind('.') - d1 - 1));
}

TEST_CASE("request authn: jwksUri keys come from set_jwks", "[request_authn]") {
  json r = {{"issuer", kIss}, {"jwksUri", "https://issuer.example/jwks"}};
  auto a = build(ra({r}));
  CHECK(a.jwks_uris() == std::vector<std::string>{"https://issuer.example/jwks"});
  std::string tok = sign(rsa(), claims(), "r1");
  Headers h = bearer(tok);
  auto before = a.authenticate(h, "", kNow);
  CHECK(before.status == AuthnResult::kInvalid);
  CHECK(before.reason == jwt::kJwksMissing);
  CHECK_FALSE(a.set_jwks("https://issuer.example/jwks", "{").ok());
  CHECK_FALSE(a.set_jwks("https://elsewhere/jwks", jwks_text()).ok());
  REQUIRE(a.set_jwks("https://issuer.example/jwks", jwks_text()).ok());
  Headers h2 = bearer(tok);
  CHECK(a.authenticate(h2, "", kNow).status == AuthnResult::kValid);
  // Inline jwks wins over jwksUri: nothing to fetch.
  r["jwks"] = jwks_text();
  CHECK(build(ra({r})).jwks_uris().empty());
}

TEST_CASE("request authn: binding to this waypoint", "[request_authn]") {
  std::string tok = sign(rsa(), claims(), "r1");
  auto applies = [&](const json& obj, std::string_view service = "shop/reviews") {
    auto a = RequestAuthn::build({obj}, scope(), nullptr);
    Headers h = bearer(tok);
    return a.authenticate(h, "", kNow, service).status == AuthnResult::kValid;
  };
  CHECK(applies(ra({rule()})));
  CHECK(applies(ra({rule()}, json::object(), "istio-system")));
  CHECK_FALSE(applies(ra({rule()}, json::object(), "other")));
  CHECK_FALSE(applies(ra({rule()}, {{"selector", {{"matchLabels", {{"app", "x"}}}}}})));
  json gw = {{"group", "gateway.networking.k8s.io"}, {"kind", "Gateway"}, {"name", "waypoint"}};
  CHECK(applies(ra({rule()}, {{"targetRef", gw}})));
  gw["name"] = "other";
  CHECK_FALSE(applies(ra({rule()}, {{"targetRefs", {gw}}})));
  json svc = {{"kind", "Service"}, {"group", ""}, {"name", "reviews"}};
  CHECK(applies(ra({rule()}, {{"targetRefs", {svc}}})));
  CHECK_FALSE(applies(ra({rule()}, {{"targetRefs", {svc}}}), "shop/ratings"));
}

TEST_CASE("request authn: errors name the pointer", "[request_authn]") {
  std::vector<std::string> errors;
  json bad = ra({{{"jwks", jwks_text()}},
                 rule({{"fromHeaders", {{{"prefix", "x"}}}}}),
                 rule({{"jwks", "{\"keys\":[]}"}}),
                 rule({{"bogus", 1}})});
  auto a = RequestAuthn::build({bad}, scope(), &errors);
  REQUIRE(errors.size() == 4);
  CHECK(errors[0] == "RequestAuthentication shop/jwt: /spec/jwtRules/0/issuer: is required");
  CHECK(
      errors[1] ==
      "RequestAuthentication shop/jwt: /spec/jwtRules/1/fromHeaders/0/name: must be a header name");
  CHECK(errors[2].find("/spec/jwtRules/2/jwks: JWKS has no usable key") != std::string::npos);
  CHECK(errors[3] == "RequestAuthentication shop/jwt: /spec/jwtRules/3/bogus: unknown field");
  // The rule with unusable keys stays and fails closed.
  REQUIRE(a.size() == 1);
  Headers h = bearer(sign(rsa(), claims(), "r1"));
  CHECK(a.authenticate(h, "", kNow).status == AuthnResult::kInvalid);
}
