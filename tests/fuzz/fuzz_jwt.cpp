// JWT, JWKS, RequestAuthentication and L7 AuthorizationPolicy on outside
// input. The first byte picks the parser, the rest is its input:
//   0 compact JWS (parse, verify against the keys below, time checks)
//   1 JWKS document
//   2 base64url (strict: decode then encode gives the input back)
//   3 a bearer token through RequestAuthn::authenticate
//   4 an AuthorizationPolicy object through L7Authz::build and evaluate
// Seeds in corpus/jwt/ were signed with the private halves of kJwks.
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "authz.h"
#include "jwt.h"
#include "request_authn.h"

using namespace warren::waypoint;
using nlohmann::json;

namespace {

const char* kJwks =
    "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"e1\",\"x\":\"KThUYWCRXqFt_CzFY21Sd_2o0_"
    "DUMgP8NqGvZfu"
    "hnWw\",\"y\":\"P3kC9Uu_lQ2WPOhtzQdQyf9DWUjmdjBVkGf6L29i0Jw\"},{\"kty\":\"RSA\",\"kid\":\"r1\","
    "\"n\":\"w4-o"
    "dhbza1adRHfCx2YxFibfK5u-4Z3B-79UWxldKCTq7YrYIX1TfFs-Gye6x2fH7zWYMkeUCbTECrLD3GbXNErmoyhcFz"
    "N4nO0gwfeH8f7YLl7odyFpudTLemdHUxMvY6c5ke8n_safsn8Su61iFF84FCnHDLOJGLJuBIK0gTY8xjs2kN3WuElT"
    "mTKx0syY7TbRo_r1ACYOakmtfYksp-wRPgT9M9jdEK42Xnxnth_ntpzgLZ0APiBkFpAKb6cnDYVX-2ZyHk2Y0MYACp"
    "8uygSzaYk1QyF_j6vh8v1-RQ_DHAcvSx9Y1TDWsPJC9KaJKp2tD0GVTkJ4x6hDaAK8xQ\",\"e\":\"AQAB\"}]}";

const auto kNow = std::chrono::system_clock::time_point(std::chrono::seconds(1'700'000'000));

AuthzScope scope() {
  AuthzScope s;
  s.waypoint = "waypoint";
  s.namespace_ = "shop";
  s.services = {"shop/reviews"};
  return s;
}

void fuzz_token(std::string_view in) {
  static const jwt::Jwks keys = jwt::parse_jwks(kJwks).value();
  auto t = jwt::parse(in);
  if (!t.ok()) {
    if (t.error().message.empty()) std::abort();
    return;
  }
  // Strict base64url: the sections re-encode to exactly the input.
  if (t->signing_input + "." + jwt::base64url_encode(t->signature) != in) std::abort();
  if (!t->header.is_object() || !t->claims.is_object()) std::abort();
  if (in.size() > jwt::kMaxTokenBytes) std::abort();
  (void)jwt::verify_signature(*t, keys);
  (void)jwt::check_time(*t, kNow);
}

void fuzz_jwks(std::string_view in) {
  auto k = jwt::parse_jwks(in);
  if (!k.ok()) return;
  if (k->keys.empty()) std::abort();
  for (const auto& key : k->keys)
    if (!key.pkey) std::abort();
}

void fuzz_b64(std::string_view in) {
  auto d = jwt::base64url_decode(in);
  if (d.ok() && jwt::base64url_encode(d.value()) != in) std::abort();
  std::string e = jwt::base64url_encode(in);
  auto back = jwt::base64url_decode(e);
  if (!back.ok() || back.value() != in) std::abort();
}

void fuzz_authn(std::string_view in) {
  static const RequestAuthn authn = [] {
    json rule = {{"issuer", "https://issuer.example"},
                 {"jwks", kJwks},
                 {"audiences", {"shop"}},
                 {"outputPayloadToHeader", "x-payload"},
                 {"outputClaimToHeaders", {{{"header", "x-groups"}, {"claim", "groups"}}}}};
    json ra = {{"metadata", {{"name", "jwt"}, {"namespace", "shop"}}},
               {"spec", {{"jwtRules", {rule}}}}};
    return RequestAuthn::build({ra}, scope(), nullptr);
  }();
  Headers h = {{"authorization", "Bearer " + std::string(in)}};
  auto r = authn.authenticate(h, "access_token=" + std::string(in), kNow);
  if (r.status == AuthnResult::kInvalid && r.reason.empty()) std::abort();
  for (const auto& x : h) {
    if (x.name == "authorization") continue;  // the input itself
    for (unsigned char c : x.value)
      if (c == '\r' || c == '\n' || c == 0) std::abort();  // no header injection
  }
}

void fuzz_policy(std::string_view in) {
  json j = json::parse(in, nullptr, false);
  if (j.is_discarded() || jwt::json_too_deep(in)) return;
  std::vector<std::string> errors;
  auto a = L7Authz::build({j}, scope(), &errors);
  AuthnInfo info;
  info.principal = "https://issuer.example/alice";
  info.claims = {{"groups", {"dev"}}};
  Headers headers = {{"x", "1"}};
  RequestAttrs r;
  r.method = "GET";
  r.host = "reviews:80";
  r.path = "/a/b/c";
  r.headers = &headers;
  r.source_principal = "cluster.local/ns/web/sa/x";
  r.source_namespace = "web";
  r.source_ip = "10.0.0.1";
  r.destination_ip = "10.0.0.2";
  r.destination_port = 80;
  r.auth = &info;
  r.service = "shop/reviews";
  auto d = a.evaluate(r);
  if (d.kind == Decision::kCustom && d.provider.empty()) std::abort();
  (void)a.evaluate_after_custom(r);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 5) {
    case 0:
      fuzz_token(in);
      break;
    case 1:
      fuzz_jwks(in);
      break;
    case 2:
      fuzz_b64(in);
      break;
    case 3:
      fuzz_authn(in);
      break;
    default:
      fuzz_policy(in);
      break;
  }
  return 0;
}
