// JWS compact parsing and RS256/ES256 verification with OpenSSL 3 EVP; JWKS
// parsing into EVP_PKEYs (built from parameters, no deprecated RSA_/EC_KEY).
#include "jwt.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

namespace warren::waypoint::jwt {
namespace {

using nlohmann::json;

Error bad(std::string msg) {
  return make_error(Errc::kInvalidArgument, std::move(msg));
}

int b64val(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
std::shared_ptr<evp_pkey_st> own(EVP_PKEY* p) {
  return {p, PkeyFree{}};
}

// Parses JSON that must be an object; depth-checked first.
Result<json> json_object(std::string_view text, const char* what) {
  if (json_too_deep(text)) return bad(std::string(what) + " nests too deep");
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return bad(std::string(what) + " is not a JSON object");
  return j;
}

Result<std::string> b64_field(const json& k, const char* name) {
  auto it = k.find(name);
  if (it == k.end() || !it->is_string()) return bad(std::string(name) + " is missing");
  auto d = base64url_decode(it->get_ref<const std::string&>());
  if (!d.ok() || d->empty()) return bad(std::string(name) + " is not base64url");
  return d;
}

EVP_PKEY* from_params(const char* type, OSSL_PARAM_BLD* bld) {
  OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(bld);
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr);
  EVP_PKEY* pkey = nullptr;
  if (params && ctx && EVP_PKEY_fromdata_init(ctx) == 1)
    if (EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) pkey = nullptr;
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  return pkey;
}

Result<std::shared_ptr<evp_pkey_st>> rsa_key(const json& k) {
  auto n = b64_field(k, "n");
  if (!n.ok()) return n.error();
  auto e = b64_field(k, "e");
  if (!e.ok()) return e.error();
  if (n->size() * 8 < 2048) return bad("RSA modulus shorter than 2048 bits");
  BIGNUM* bn = BN_bin2bn(reinterpret_cast<const unsigned char*>(n->data()),
                         static_cast<int>(n->size()), nullptr);
  BIGNUM* be = BN_bin2bn(reinterpret_cast<const unsigned char*>(e->data()),
                         static_cast<int>(e->size()), nullptr);
  OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
  EVP_PKEY* pkey = nullptr;
  if (bn && be && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) == 1 &&
      OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) == 1)
    pkey = from_params("RSA", bld);
  OSSL_PARAM_BLD_free(bld);
  BN_free(bn);
  BN_free(be);
  ERR_clear_error();
  if (!pkey) return bad("invalid RSA key");
  return own(pkey);
}

Result<std::shared_ptr<evp_pkey_st>> ec_key(const json& k) {
  auto crv = k.find("crv");
  if (crv == k.end() || *crv != "P-256") return bad("crv is not P-256");
  auto x = b64_field(k, "x");
  if (!x.ok()) return x.error();
  auto y = b64_field(k, "y");
  if (!y.ok()) return y.error();
  if (x->size() != 32 || y->size() != 32) return bad("x and y must be 32 bytes");
  std::string point = "\x04" + *x + *y;
  OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
  EVP_PKEY* pkey = nullptr;
  char group[] = "prime256v1";
  if (bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) == 1 &&
      OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) ==
          1)
    pkey = from_params("EC", bld);
  OSSL_PARAM_BLD_free(bld);
  ERR_clear_error();
  if (!pkey) return bad("invalid EC point");
  return own(pkey);
}

// Raw r||s (32 bytes each) to the DER ECDSA-Sig-Value OpenSSL verifies.
std::string es256_der(std::string_view raw) {
  ECDSA_SIG* sig = ECDSA_SIG_new();
  BIGNUM* r = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()), 32, nullptr);
  BIGNUM* s = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()) + 32, 32, nullptr);
  std::string out;
  if (sig && r && s && ECDSA_SIG_set0(sig, r, s) == 1) {
    r = s = nullptr;  // owned by sig now
    unsigned char* der = nullptr;
    int len = i2d_ECDSA_SIG(sig, &der);
    if (len > 0) out.assign(reinterpret_cast<char*>(der), static_cast<size_t>(len));
    OPENSSL_free(der);
  }
  BN_free(r);
  BN_free(s);
  ECDSA_SIG_free(sig);
  return out;
}

bool verify_with(EVP_PKEY* pkey, std::string_view input, std::string_view sig) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok =
      ctx && EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, pkey) == 1 &&
      EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                       reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1;
  EVP_MD_CTX_free(ctx);
  ERR_clear_error();
  return ok;
}

// NumericDate: a JSON number (integer or not) of seconds.
bool numeric_date(const json& claims, const char* name, bool& has, int64_t& out, std::string& err) {
  auto it = claims.find(name);
  if (it == claims.end()) return true;
  if (!it->is_number()) {
    err = std::string("claim ") + name + " is not a number";
    return false;
  }
  double d = it->get<double>();
  if (!(d > -1e15 && d < 1e15)) {
    err = std::string("claim ") + name + " is out of range";
    return false;
  }
  has = true;
  out = static_cast<int64_t>(d);
  return true;
}

}  // namespace

bool json_too_deep(std::string_view text, int max) {
  int depth = 0;
  bool in_str = false, esc = false;
  for (char c : text) {
    if (in_str) {
      if (esc)
        esc = false;
      else if (c == '\\')
        esc = true;
      else if (c == '"')
        in_str = false;
      continue;
    }
    if (c == '"')
      in_str = true;
    else if (c == '{' || c == '[') {
      if (++depth > max) return true;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return false;
}

Result<std::string> base64url_decode(std::string_view in) {
  if (in.size() % 4 == 1) return bad("bad base64url length");
  std::string out;
  out.reserve(in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : in) {
    int v = b64val(c);
    if (v < 0) return bad("invalid base64url character");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
    return bad("non-zero trailing bits in base64url");
  return out;
}

std::string base64url_encode(std::string_view in) {
  static const char* kAlpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((in.size() * 4 + 2) / 3);
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : in) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kAlpha[(acc >> bits) & 0x3f]);
    }
  }
  if (bits > 0) out.push_back(kAlpha[(acc << (6 - bits)) & 0x3f]);
  return out;
}

Result<Jwks> parse_jwks(std::string_view text) {
  if (text.size() > kMaxJwksBytes) return bad("JWKS larger than 1 MiB");
  auto doc = json_object(text, "JWKS");
  if (!doc.ok()) return doc.error();
  json single = json::array();
  const json* keys = &single;
  if (auto it = doc->find("keys"); it != doc->end()) {
    if (!it->is_array()) return bad("JWKS: keys is not an array");
    keys = &*it;
  } else {
    single.push_back(*doc);  // a bare JWK
  }
  Jwks out;
  for (size_t i = 0; i < keys->size(); ++i) {
    const json& k = (*keys)[i];
    std::string where = "keys/" + std::to_string(i) + ": ";
    if (!k.is_object()) {
      out.notes.push_back(where + "not an object");
      continue;
    }
    auto str = [&](const char* n) {
      auto it = k.find(n);
      return it != k.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    std::string kty = str("kty"), alg = str("alg"), use = str("use");
    if (!use.empty() && use != "sig") {
      out.notes.push_back(where + "use \"" + use + "\" is not sig");
      continue;
    }
    Key key;
    key.kid = str("kid");
    Result<std::shared_ptr<evp_pkey_st>> pk = bad("");
    if (kty == "RSA" && (alg.empty() || alg == "RS256")) {
      key.alg = Alg::kRS256;
      pk = rsa_key(k);
    } else if (kty == "EC" && (alg.empty() || alg == "ES256")) {
      key.alg = Alg::kES256;
      pk = ec_key(k);
    } else {
      out.notes.push_back(where + "kty \"" + kty + "\" alg \"" + alg + "\" not supported");
      continue;
    }
    if (!pk.ok()) {
      out.notes.push_back(where + pk.error().message);
      continue;
    }
    key.pkey = std::move(*pk);
    out.keys.push_back(std::move(key));
  }
  if (out.keys.empty()) {
    std::string why = "JWKS has no usable key";
    for (const auto& n : out.notes) why += "; " + n;
    return bad(why);
  }
  return out;
}

Result<Token> parse(std::string_view compact) {
  if (compact.size() > kMaxTokenBytes)
    return bad(std::string(kBadFormat) + ": token larger than 64 KiB");
  auto d1 = compact.find('.');
  auto d2 = d1 == std::string_view::npos ? d1 : compact.find('.', d1 + 1);
  if (d2 == std::string_view::npos || compact.find('.', d2 + 1) != std::string_view::npos)
    return bad(kBadFormat);
  auto hdr = base64url_decode(compact.substr(0, d1));
  auto pay = base64url_decode(compact.substr(d1 + 1, d2 - d1 - 1));
  auto sig = base64url_decode(compact.substr(d2 + 1));
  if (!hdr.ok() || !pay.ok() || !sig.ok())
    return bad(std::string(kBadFormat) + ": invalid base64url");
  if (sig->empty()) return bad(std::string(kBadFormat) + ": empty signature");
  Token t;
  auto h = json_object(*hdr, "Jwt header");
  if (!h.ok()) return h.error();
  t.header = std::move(*h);
  auto alg = t.header.find("alg");
  if (alg == t.header.end() || !alg->is_string())
    return bad("Jwt header [alg] field is required and must be a string");
  if (*alg == "RS256")
    t.alg = Alg::kRS256;
  else if (*alg == "ES256")
    t.alg = Alg::kES256;
  else
    return bad(std::string(kBadAlg) + ": " + alg->get<std::string>());
  if (t.header.contains("crit")) return bad(std::string(kBadAlg) + ": crit header");
  if (auto kid = t.header.find("kid"); kid != t.header.end()) {
    if (!kid->is_string()) return bad("Jwt header [kid] field is not a string");
    t.kid = kid->get<std::string>();
  }
  auto c = json_object(*pay, "Jwt payload");
  if (!c.ok()) return c.error();
  t.claims = std::move(*c);
  std::string err;
  for (auto [name, field] : {std::pair{"iss", &t.issuer}, std::pair{"sub", &t.subject},
                             std::pair{"azp", &t.presenter}}) {
    auto it = t.claims.find(name);
    if (it == t.claims.end()) continue;
    if (!it->is_string()) return bad(std::string("Jwt payload [") + name + "] is not a string");
    *field = it->get<std::string>();
  }
  if (auto aud = t.claims.find("aud"); aud != t.claims.end()) {
    if (aud->is_string()) {
      t.audiences.push_back(aud->get<std::string>());
    } else if (aud->is_array()) {
      for (const auto& a : *aud) {
        if (!a.is_string()) return bad("Jwt payload [aud] is not a string or a list of strings");
        t.audiences.push_back(a.get<std::string>());
      }
    } else {
      return bad("Jwt payload [aud] is not a string or a list of strings");
    }
  }
  if (!numeric_date(t.claims, "exp", t.has_exp, t.exp, err) ||
      !numeric_date(t.claims, "nbf", t.has_nbf, t.nbf, err))
    return bad("Jwt payload " + err);
  t.payload_b64 = std::string(compact.substr(d1 + 1, d2 - d1 - 1));
  t.signing_input = std::string(compact.substr(0, d2));
  t.signature = std::move(*sig);
  return t;
}

Result<void> verify_signature(const Token& t, const Jwks& keys) {
  std::string sig = t.signature;
  if (t.alg == Alg::kES256) {
    if (sig.size() != 64)
      return bad(std::string(kVerificationFails) + ": ES256 signature is not 64 bytes r||s");
    sig = es256_der(sig);
    if (sig.empty()) return bad(kVerificationFails);
  }
  bool tried = false;
  for (const Key& k : keys.keys) {
    if (k.alg != t.alg || !k.pkey) continue;
    if (!t.kid.empty() && !k.kid.empty() && k.kid != t.kid) continue;
    tried = true;
    if (verify_with(k.pkey.get(), t.signing_input, sig)) return {};
  }
  if (!tried) return bad(kNoMatchingKey);
  return bad(kVerificationFails);
}

Result<void> check_time(const Token& t, std::chrono::system_clock::time_point now) {
  int64_t s = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  int64_t skew = kClockSkew.count();
  if (t.has_nbf && s + skew < t.nbf) return bad(kNotYetValid);
  if (t.has_exp && s > t.exp + skew) return bad(kExpired);
  return {};
}

}  // namespace warren::waypoint::jwt
