// RequestAuthentication (security.istio.io/v1) at the waypoint, as Istio
// configures Envoy's jwt_authn: a request without a token passes (and has no
// request principal); a request with a token that fails, or whose issuer no
// rule names, is refused with 401. Pure: the JWKS of a jwksUri is fetched by
// the caller and handed in with set_jwks.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "authz.h"
#include "headers.h"
#include "jwt.h"

namespace warren::waypoint {

// What a valid token says, for AuthorizationPolicy (requestPrincipals,
// request.auth.*).
struct AuthnInfo {
  std::string principal;  // "<iss>/<sub>"
  std::string issuer, subject;
  std::vector<std::string> audiences;
  std::string presenter;  // azp
  nlohmann::json claims;
};

struct AuthnResult {
  enum Status { kNoToken, kValid, kInvalid };
  Status status = kNoToken;
  AuthnInfo info;      // kValid
  std::string reason;  // kInvalid: the 401 body, Envoy's text ("Jwt verification fails",
                       // "Jwt issuer is not configured", "Jwt is expired", ...)
};

struct JwtRule {
  struct FromHeader {
    std::string name;    // lower case
    std::string prefix;  // stripped before the token, e.g. "Bearer "
  };
  struct ClaimToHeader {
    std::string header, claim;
  };
  std::string issuer;
  std::vector<std::string> audiences;  // empty: any
  std::string jwks_uri;
  bool uses_uri = false;                  // no inline jwks: keys come from set_jwks(jwks_uri)
  std::shared_ptr<const jwt::Jwks> jwks;  // inline, or set_jwks; null: not yet known
  std::string jwks_error;                 // why `jwks` is null
  std::vector<FromHeader> from_headers;   // default: authorization, "Bearer "
  std::vector<std::string> from_params;   // default: access_token
  std::vector<std::string> from_cookies;
  bool forward_original_token = false;
  std::string output_payload_to_header;
  std::vector<ClaimToHeader> output_claim_to_headers;
  std::string source;  // "<ns>/<name>" of the RequestAuthentication
};

class RequestAuthn {
 public:
  // Compiles RequestAuthentication objects (whole Kubernetes objects) that
  // bind here: targetRef(s) to this waypoint's Gateway, GatewayClass or a
  // Service it serves, or selector-less in the waypoint's or the root
  // namespace. A rule with errors is left out (its issuer then answers
  // "Jwt issuer is not configured"); errors read
  // "RequestAuthentication <ns>/<name>: <json pointer>: <reason>".
  static RequestAuthn build(const std::vector<nlohmann::json>& objects, const AuthzScope& scope,
                            std::vector<std::string>* errors);

  // The jwksUri values of rules without inline jwks, for the caller to fetch.
  std::vector<std::string> jwks_uris() const;
  // Keys fetched from `uri`. On a parse error the rules of that uri keep
  // failing verification (fail closed); the error says why. Not thread-safe
  // against authenticate(): build a copy, set, then swap.
  Result<void> set_jwks(std::string_view uri, std::string_view text);

  // Finds the token(s) in the headers (and the raw query), verifies them, and
  // on success strips the token header (unless forwardOriginalToken) and
  // writes outputPayloadToHeader / outputClaimToHeaders. `service` is the
  // request's "<ns>/<name>" for Service-bound objects. Every token present
  // must verify.
  AuthnResult authenticate(Headers& headers, std::string_view query,
                           std::chrono::system_clock::time_point now,
                           std::string_view service = {}) const;

  size_t size() const { return rules_.size(); }
  const std::vector<JwtRule>& rules() const { return rules_; }

 private:
  struct Bound {
    bool all_services = true;
    std::set<std::string> services;
  };
  std::vector<JwtRule> rules_;
  std::vector<Bound> bound_;  // parallel to rules_
};

}  // namespace warren::waypoint
