#include "jwt.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <string>

using namespace warren::waypoint;
using nlohmann::json;

// Test key pairs and a signer, shared with request_authn_test.cpp (which
// declares these functions).
namespace jwt_testing {

struct Keypair {
  std::shared_ptr<EVP_PKEY> pkey;
  bool ec = false;
};

std::shared_ptr<Keypair> make_key(bool ec, int rsa_bits = 2048) {
  auto k = std::make_shared<Keypair>();
  k->ec = ec;
  EVP_PKEY* p = ec ? EVP_EC_gen("P-256") : EVP_RSA_gen(static_cast<unsigned>(rsa_bits));
  REQUIRE(p != nullptr);
  k->pkey.reset(p, EVP_PKEY_free);
  return k;
}

std::string bn_b64(const BIGNUM* bn) {
  std::string b(static_cast<size_t>(BN_num_bytes(bn)), '\0');
  BN_bn2bin(bn, reinterpret_cast<unsigned char*>(b.data()));
  return jwt::base64url_encode(b);
}

// One JWK as a JSON object.
json jwk(const Keypair& k, const std::string& kid) {
  json j;
  if (!kid.empty()) j["kid"] = kid;
  if (k.ec) {
    unsigned char buf[65];
    size_t len = 0;
    REQUIRE(EVP_PKEY_get_octet_string_param(k.pkey.get(), OSSL_PKEY_PARAM_PUB_KEY, buf, sizeof buf,
                                            &len) == 1);
    REQUIRE(len == 65);
    j["kty"] = "EC";
    j["crv"] = "P-256";
    j["x"] = jwt::base64url_encode(std::string_view(reinterpret_cast<char*>(buf) + 1, 32));
    j["y"] = jwt::base64url_encode(std::string_view(reinterpret_cast<char*>(buf) + 33, 32));
  } else {
    BIGNUM *n = nullptr, *e = nullptr;
    REQUIRE(EVP_PKEY_get_bn_param(k.pkey.get(), OSSL_PKEY_PARAM_RSA_N, &n) == 1);
    REQUIRE(EVP_PKEY_get_bn_param(k.pkey.get(), OSSL_PKEY_PARAM_RSA_E, &e) == 1);
    j["kty"] = "RSA";
    j["n"] = bn_b64(n);
    j["e"] = bn_b64(e);
    BN_free(n);
    BN_free(e);
  }
  return j;
}

// Signs "<b64(header)>.<b64(claims)>" (texts as given); ES256 as raw r||s
// unless `der`.
std::string sign_text(const Keypair& k, const std::string& header, const std::string& claims,
                      bool der = false) {
  std::string input = jwt::base64url_encode(header) + "." + jwt::base64url_encode(claims);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  REQUIRE(EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, k.pkey.get()) == 1);
  size_t len = 0;
  auto in = reinterpret_cast<const unsigned char*>(input.data());
  REQUIRE(EVP_DigestSign(ctx, nullptr, &len, in, input.size()) == 1);
  std::string sig(len, '\0');
  REQUIRE(EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len, in,
                         input.size()) == 1);
  sig.resize(len);
  EVP_MD_CTX_free(ctx);
  if (k.ec && !der) {
    const unsigned char* p = reinterpret_cast<const unsigned char*>(sig.data());
    ECDSA_SIG* es = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size()));
    REQUIRE(es != nullptr);
    std::string raw(64, '\0');
    BN_bn2binpad(ECDSA_SIG_get0_r(es), reinterpret_cast<unsigned char*>(raw.data()), 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(es), reinterpret_cast<unsigned char*>(raw.data()) + 32, 32);
    ECDSA_SIG_free(es);
    sig = raw;
  }
  return input + "." + jwt::base64url_encode(sig);
}

std::string sign(const Keypair& k, const json& claims, const std::string& kid = "") {
  json h = {{"alg", k.ec ? "ES256" : "RS256"}, {"typ", "JWT"}};
  if (!kid.empty()) h["kid"] = kid;
  return sign_text(k, h.dump(), claims.dump());
}

const Keypair& rsa() {
  static auto k = make_key(false);
  return *k;
}
const Keypair& rsa2() {
  static auto k = make_key(false);
  return *k;
}
const Keypair& ec() {
  static auto k = make_key(true);
  return *k;
}

}  // namespace jwt_testing

namespace {

using namespace jwt_testing;

jwt::Jwks keys_of(std::initializer_list<json> jwks) {
  json doc = {{"keys", json::array()}};
  for (const auto& k : jwks) doc["keys"].push_back(k);
  auto r = jwt::parse_jwks(doc.dump());
  if (!r.ok()) FAIL(r.error().message);
  return std::move(*r);
}

std::string message_of(const warren::Result<void>& r) {
  return r.ok() ? "ok" : r.error().message;
}

std::string verify(const std::string& token, const jwt::Jwks& keys) {
  auto t = jwt::parse(token);
  if (!t.ok()) return t.error().message;
  return message_of(jwt::verify_signature(*t, keys));
}

const json kClaims = {{"iss", "https://issuer.example"}, {"sub", "alice"}, {"aud", {"a", "b"}}};

}  // namespace

TEST_CASE("jwt: base64url is strict", "[jwt]") {
  CHECK(jwt::base64url_decode("aGVsbG8").value() == "hello");
  CHECK(jwt::base64url_encode("hello") == "aGVsbG8");
  CHECK(jwt::base64url_decode("").value() == "");
  CHECK(jwt::base64url_encode("\xfb\xff") == "-_8");
  CHECK_FALSE(jwt::base64url_decode("aGVsbG8=").ok());  // padding
  CHECK_FALSE(jwt::base64url_decode("aGV+bG8").ok());   // standard alphabet
  CHECK_FALSE(jwt::base64url_decode("aGVsbG9").ok());   // non-zero trailing bits
  CHECK_FALSE(jwt::base64url_decode("a").ok());         // impossible length
  CHECK_FALSE(jwt::base64url_decode("aGVs bG8").ok());
  for (const std::string& s :
       std::vector<std::string>{"", "a", "ab", "abc", "abcd", std::string("\0\xff\x10", 3)})
    CHECK(jwt::base64url_decode(jwt::base64url_encode(s)).value() == s);
}

TEST_CASE("jwt: RS256 and ES256 tokens verify", "[jwt]") {
  auto keys = keys_of({jwk(rsa(), "r1"), jwk(ec(), "e1")});
  CHECK(verify(sign(rsa(), kClaims, "r1"), keys) == "ok");
  CHECK(verify(sign(ec(), kClaims, "e1"), keys) == "ok");
  CHECK(verify(sign(rsa(), kClaims), keys) == "ok");  // no kid: every RSA key is tried
  CHECK(verify(sign(ec(), kClaims), keys) == "ok");
  auto t = jwt::parse(sign(rsa(), kClaims, "r1"));
  REQUIRE(t.ok());
  CHECK(t->issuer == "https://issuer.example");
  CHECK(t->subject == "alice");
  CHECK(t->audiences == std::vector<std::string>{"a", "b"});
  CHECK(t->kid == "r1");
  CHECK(t->alg == jwt::Alg::kRS256);
}

TEST_CASE("jwt: tampered payload and wrong key fail", "[jwt]") {
  auto keys = keys_of({jwk(rsa(), "r1"), jwk(ec(), "e1")});
  std::string tok = sign(rsa(), kClaims, "r1");
  auto d1 = tok.find('.'), d2 = tok.rfind('.');
  json evil = kClaims;
  evil["sub"] = "mallory";
  std::string tampered =
      tok.substr(0, d1 + 1) + jwt::base64url_encode(evil.dump()) + tok.substr(d2);
  CHECK(verify(tampered, keys) == jwt::kVerificationFails);
  CHECK(verify(sign(rsa2(), kClaims, "r1"), keys) == jwt::kVerificationFails);
  CHECK(verify(sign(rsa2(), kClaims), keys) == jwt::kVerificationFails);
  CHECK(verify(sign(rsa(), kClaims, "other"), keys) == jwt::kNoMatchingKey);
  // An ES256 token only meets EC keys.
  CHECK(verify(sign(ec(), kClaims), keys_of({jwk(rsa(), "")})) == jwt::kNoMatchingKey);
}

TEST_CASE("jwt: kid picks the key", "[jwt]") {
  auto keys = keys_of({jwk(rsa2(), "k2"), jwk(rsa(), "k1")});
  CHECK(verify(sign(rsa(), kClaims, "k1"), keys) == "ok");
  CHECK(verify(sign(rsa(), kClaims, "k2"), keys) == jwt::kVerificationFails);
}

TEST_CASE("jwt: exp and nbf with 60 s of skew", "[jwt]") {
  using std::chrono::seconds;
  auto at = [](int64_t s) { return std::chrono::system_clock::time_point(seconds(s)); };
  json c = kClaims;
  c["exp"] = 1000;
  c["nbf"] = 500;
  auto t = jwt::parse(sign(rsa(), c));
  REQUIRE(t.ok());
  CHECK(message_of(jwt::check_time(*t, at(700))) == "ok");
  CHECK(message_of(jwt::check_time(*t, at(1060))) == "ok");
  CHECK(message_of(jwt::check_time(*t, at(1061))) == jwt::kExpired);
  CHECK(message_of(jwt::check_time(*t, at(440))) == "ok");
  CHECK(message_of(jwt::check_time(*t, at(439))) == jwt::kNotYetValid);
  c["exp"] = "tomorrow";
  CHECK_FALSE(jwt::parse(sign(rsa(), c)).ok());
}

TEST_CASE("jwt: alg none and HS256 are refused", "[jwt]") {
  std::string body = jwt::base64url_encode(kClaims.dump());
  std::string none = jwt::base64url_encode(R"({"alg":"none"})") + "." + body + ".";
  CHECK_FALSE(jwt::parse(none).ok());
  std::string none_sig = jwt::base64url_encode(R"({"alg":"none"})") + "." + body + ".AAAA";
  auto r = jwt::parse(none_sig);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find(jwt::kBadAlg) == 0);
  std::string hs = jwt::base64url_encode(R"({"alg":"HS256"})") + "." + body + ".AAAA";
  CHECK(jwt::parse(hs).error().message.find(jwt::kBadAlg) == 0);
  std::string noalg = jwt::base64url_encode(R"({"typ":"JWT"})") + "." + body + ".AAAA";
  CHECK_FALSE(jwt::parse(noalg).ok());
  std::string crit =
      jwt::base64url_encode(R"({"alg":"RS256","crit":["b64"]})") + "." + body + ".AAAA";
  CHECK_FALSE(jwt::parse(crit).ok());
}

TEST_CASE("jwt: malformed compact forms", "[jwt]") {
  std::string tok = sign(rsa(), kClaims);
  CHECK(jwt::parse(tok).ok());
  CHECK(jwt::parse(tok + ".x").error().message == jwt::kBadFormat);
  CHECK(jwt::parse(tok.substr(0, tok.rfind('.'))).error().message == jwt::kBadFormat);
  CHECK(jwt::parse("").error().message == jwt::kBadFormat);
  CHECK(jwt::parse("..").error().message.find(jwt::kBadFormat) == 0);
  std::string padded = tok + "=";
  CHECK(jwt::parse(padded).error().message.find(jwt::kBadFormat) == 0);
  std::string bad = tok;
  bad[3] = '+';
  CHECK(jwt::parse(bad).error().message.find(jwt::kBadFormat) == 0);
  // Header or payload not a JSON object.
  std::string sig = tok.substr(tok.rfind('.'));
  CHECK_FALSE(
      jwt::parse(jwt::base64url_encode("[1]") + "." + jwt::base64url_encode("{}") + sig).ok());
  CHECK_FALSE(jwt::parse(jwt::base64url_encode(R"({"alg":"RS256"})") + "." +
                         jwt::base64url_encode("nope") + sig)
                  .ok());
  // aud of the wrong type.
  json c = kClaims;
  c["aud"] = 7;
  CHECK_FALSE(jwt::parse(sign(rsa(), c)).ok());
}

TEST_CASE("jwt: size and depth bounds", "[jwt]") {
  json c = kClaims;
  c["pad"] = std::string(70 * 1024, 'x');
  CHECK_FALSE(jwt::parse(sign(rsa(), c)).ok());
  std::string deep = R"({"a":)" + std::string(100, '[') + std::string(100, ']') + "}";
  CHECK(jwt::json_too_deep(deep));
  CHECK_FALSE(jwt::json_too_deep(R"({"a":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["})"));
  std::string h = jwt::base64url_encode(R"({"alg":"RS256"})");
  CHECK_FALSE(jwt::parse(h + "." + jwt::base64url_encode(deep) + ".AAAA").ok());
  CHECK_FALSE(jwt::parse_jwks(std::string(jwt::kMaxJwksBytes + 1, ' ')).ok());
}

TEST_CASE("jwt: ES256 with a DER signature is refused", "[jwt]") {
  auto keys = keys_of({jwk(ec(), "")});
  json h = {{"alg", "ES256"}};
  std::string der = sign_text(ec(), h.dump(), kClaims.dump(), true);
  CHECK(verify(der, keys).find(jwt::kVerificationFails) == 0);
  CHECK(verify(sign_text(ec(), h.dump(), kClaims.dump()), keys) == "ok");
}

TEST_CASE("jwt: JWKS keeps RSA and EC P-256 keys and notes the rest", "[jwt]") {
  json doc = {{"keys",
               {jwk(rsa(), "r"),
                jwk(ec(), "e"),
                {{"kty", "oct"}, {"k", "c2VjcmV0"}},
                {{"kty", "RSA"}, {"alg", "RS512"}, {"n", "AQAB"}, {"e", "AQAB"}},
                {{"kty", "EC"}, {"crv", "P-384"}, {"x", "AA"}, {"y", "AA"}},
                42}}};
  json enc = jwk(rsa2(), "x");
  enc["use"] = "enc";
  doc["keys"].push_back(enc);
  auto r = jwt::parse_jwks(doc.dump());
  REQUIRE(r.ok());
  CHECK(r->keys.size() == 2);
  CHECK(r->notes.size() == 5);
  // A bare JWK is a set of one.
  auto one = jwt::parse_jwks(jwk(ec(), "e").dump());
  REQUIRE(one.ok());
  CHECK(one->keys.size() == 1);
  CHECK_FALSE(jwt::parse_jwks("not json").ok());
  CHECK_FALSE(jwt::parse_jwks(R"({"keys": {}})").ok());
  CHECK_FALSE(jwt::parse_jwks(R"({"keys": [{"kty":"oct","k":"AA"}]})").ok());
  // Broken key material: EC point off the curve, short RSA modulus.
  json bad_ec = jwk(ec(), "");
  bad_ec["y"] = jwt::base64url_encode(std::string(32, '\x01'));
  CHECK_FALSE(jwt::parse_jwks(bad_ec.dump()).ok());
  auto small = make_key(false, 1024);
  CHECK_FALSE(jwt::parse_jwks(jwk(*small, "").dump()).ok());
}
