// An RS256 key pair for JWT tests (loopback e2e and netns): the JWKS to
// serve or configure, and a signer of tokens with given claims.
#pragma once

#include <nlohmann/json.hpp>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <cstdint>
#include <string>

namespace warren::e2e {

struct TestIssuer {
  EVP_PKEY* key = EVP_RSA_gen(2048);
  ~TestIssuer() { EVP_PKEY_free(key); }
  static std::string b64url(const unsigned char* p, size_t n) {
    static const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string out;
    for (size_t i = 0; i < n; i += 3) {
      uint32_t v = p[i] << 16 | (i + 1 < n ? p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
      out += a[(v >> 18) & 63];
      out += a[(v >> 12) & 63];
      if (i + 1 < n) out += a[(v >> 6) & 63];
      if (i + 2 < n) out += a[v & 63];
    }
    return out;
  }
  static std::string b64url(const std::string& s) {
    return b64url(reinterpret_cast<const unsigned char*>(s.data()), s.size());
  }
  std::string bn(const char* name) const {
    BIGNUM* b = nullptr;
    EVP_PKEY_get_bn_param(key, name, &b);
    std::string bytes(BN_num_bytes(b), '\0');
    BN_bn2bin(b, reinterpret_cast<unsigned char*>(bytes.data()));
    BN_free(b);
    return b64url(bytes);
  }
  std::string jwks() const {
    return nlohmann::json({{"keys", {{{"kty", "RSA"}, {"alg", "RS256"}, {"kid", "k1"}, {"n", bn("n")}, {"e", bn("e")}}}}}).dump();
  }
  std::string token(const nlohmann::json& claims) const {
    std::string input = b64url(nlohmann::json({{"alg", "RS256"}, {"kid", "k1"}, {"typ", "JWT"}}).dump()) + "." +
                        b64url(claims.dump());
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key);
    size_t len = 0;
    EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()), input.size());
    std::string sig(len, '\0');
    EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                   reinterpret_cast<const unsigned char*>(input.data()), input.size());
    EVP_MD_CTX_free(ctx);
    sig.resize(len);
    return input + "." + b64url(sig);
  }
};

}  // namespace warren::e2e
