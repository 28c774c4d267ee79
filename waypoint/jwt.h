// JSON Web Tokens as Envoy's jwt_authn verifies them for Istio's
// RequestAuthentication: compact JWS (RFC 7515) signed with RS256 or ES256,
// keys from a JWKS (RFC 7517). Pure: no I/O; the JWKS text is handed in.
// OpenSSL stays behind this header (STYLE.md §1): keys are opaque pointers.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "warren/result.h"

struct evp_pkey_st;  // OpenSSL's EVP_PKEY

namespace warren::waypoint::jwt {

inline constexpr size_t kMaxTokenBytes = 64 * 1024;
inline constexpr size_t kMaxJwksBytes = 1024 * 1024;
inline constexpr int kMaxJsonDepth = 32;               // header, claims and JWKS nesting
inline constexpr std::chrono::seconds kClockSkew{60};  // Envoy's default

enum class Alg { kRS256, kES256 };

// Envoy's (jwt_verify_lib) status texts, used as the 401 body.
inline constexpr const char* kBadFormat =
    "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections";
inline constexpr const char* kVerificationFails = "Jwt verification fails";
inline constexpr const char* kExpired = "Jwt is expired";
inline constexpr const char* kNotYetValid = "Jwt not yet valid";
inline constexpr const char* kUnknownIssuer = "Jwt issuer is not configured";
inline constexpr const char* kAudienceNotAllowed = "Audiences in Jwt are not allowed";
inline constexpr const char* kNoMatchingKey = "Jwks doesn't have key to match kid or alg from Jwt";
inline constexpr const char* kBadAlg = "Jwt header [alg] is not supported";
inline constexpr const char* kJwksMissing = "Jwks remote fetch is failed";

// One verification key. `pkey` owns an EVP_PKEY (freed by a custom deleter);
// keys are immutable once built and shared between copies of a key set.
struct Key {
  std::string kid;        // may be empty
  Alg alg = Alg::kRS256;  // RSA keys verify RS256, EC P-256 keys ES256
  std::shared_ptr<evp_pkey_st> pkey;
};

struct Jwks {
  std::vector<Key> keys;
  // Keys skipped, one line each ("keys/2: kty \"oct\" not supported").
  std::vector<std::string> notes;
};

// Parses a JWKS document ({"keys": [...]}) or a single JWK. RSA (n, e; at
// least 2048 bits) and EC P-256 (x, y) keys are kept; other kty, crv, alg,
// or use != "sig" are skipped with a note. Error when the text is not JSON,
// exceeds kMaxJwksBytes, or yields no usable key.
Result<Jwks> parse_jwks(std::string_view text);

// A parsed (not yet verified) token.
struct Token {
  Alg alg = Alg::kRS256;
  std::string kid;
  nlohmann::json header;      // object
  nlohmann::json claims;      // object
  std::string payload_b64;    // the payload section as sent (base64url)
  std::string signing_input;  // "<header>.<payload>" as sent
  std::string signature;      // decoded bytes
  // Convenience views of the registered claims (empty / absent when not set).
  std::string issuer, subject, presenter;  // iss, sub, azp
  std::vector<std::string> audiences;      // aud, string or array
  bool has_exp = false, has_nbf = false;
  int64_t exp = 0, nbf = 0;
};

// Structure only: three base64url sections (strict: no padding, no stray
// bits), JSON object header and claims, alg RS256 or ES256 (none and HS* are
// refused), registered claims of the right type. kInvalidArgument with one
// of the messages above (the detail after ": ").
Result<Token> parse(std::string_view compact);

// Signature against the keys: the key with the token's kid, else every key of
// the alg's type. ES256 signatures must be raw r||s (64 bytes), as RFC 7518
// §3.4 says; DER is refused.
Result<void> verify_signature(const Token& t, const Jwks& keys);

// exp and nbf against `now` with kClockSkew of tolerance.
Result<void> check_time(const Token& t, std::chrono::system_clock::time_point now);

// RFC 4648 §5 without padding. decode is strict (see parse); nullopt-like
// error on any other byte, a padding character, or non-zero trailing bits.
Result<std::string> base64url_decode(std::string_view in);
std::string base64url_encode(std::string_view in);

// Whether a JSON text nests arrays/objects deeper than `max` (checked before
// parsing untrusted JSON).
bool json_too_deep(std::string_view text, int max = kMaxJsonDepth);

}  // namespace warren::waypoint::jwt
