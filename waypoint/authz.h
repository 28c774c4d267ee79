// L7 authorization at the waypoint: Istio's AuthorizationPolicy
// (security.istio.io/v1) for the policies bound to this waypoint with
// targetRef(s), compiled once and evaluated per request as a pure function
// (STYLE.md §6).
//
// Fail closed: a rule with a field that cannot be evaluated (unknown `when`
// key, a value of the wrong type, an unknown field, a bad CIDR, port or path
// template, an empty source/operation) is compiled as "poisoned": in a DENY
// (or CUSTOM, or AUDIT) policy it matches every request, in an ALLOW policy it
// matches none. A policy with an unknown action is kept as a DENY whose one
// rule is poisoned. Each such problem is reported through `errors`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "headers.h"

namespace warren::waypoint {

struct AuthnInfo;  // request_authn.h

// Which waypoint this is, for targetRef matching.
struct AuthzScope {
  std::string waypoint;    // Gateway name
  std::string namespace_;  // Gateway namespace
  std::string root_namespace = "istio-system";
  std::string gateway_class = "warren-waypoint";
  std::set<std::string> services;  // "<namespace>/<name>" this waypoint serves
};

// Where an Istio policy object (AuthorizationPolicy, RequestAuthentication)
// binds relative to this waypoint. `spec` may be null.
struct Binding {
  bool here = false;               // applies at this waypoint
  bool all_services = false;       // bound to the Gateway or GatewayClass
  std::set<std::string> services;  // else: only for these "<ns>/<name>"
};
// `selectorless_applies`: whether a policy without selector/targetRef binds
// here (RequestAuthentication: yes, in the waypoint's or the root namespace;
// AuthorizationPolicy: no, those are the node's L4 policies).
Binding bind_policy(const nlohmann::json* spec, std::string_view policy_ns, const AuthzScope& scope,
                    bool selectorless_applies);

struct RequestAttrs {
  std::string_view method;
  std::string_view host;  // :authority as sent
  std::string_view path;  // normalised, without the query
  const Headers* headers = nullptr;
  std::string_view source_principal;  // peer identity without "spiffe://"; empty: plaintext
  std::string_view source_namespace;
  std::string_view source_ip;  // direct peer address
  std::string_view destination_ip;
  uint16_t destination_port = 0;
  const AuthnInfo* auth = nullptr;  // valid request token, else null
  std::string_view sni;
  // "<namespace>/<name>" of the Service the request is for (from the HBONE
  // destination); policies bound to a Service apply only to its requests.
  std::string_view service;
  // Opaque TCP through the waypoint: only the L4 parts apply, as Istio builds
  // its TCP RBAC filter (HTTP-only fields: an ALLOW rule with one is left
  // out; in DENY and AUDIT rules those fields are dropped, so they match
  // more). CUSTOM does not apply (no HTTP ext-authz on TCP).
  bool tcp = false;
};

struct Decision {
  enum Kind { kAllow, kDeny, kCustom };
  Kind kind = kAllow;
  std::string policy;    // "<ns>/<name>" that decided; empty when none did
  std::string provider;  // kCustom: the extension provider to call
  bool audit = false;    // an AUDIT policy matched
  std::string audit_policy;      // "<ns>/<name>" of the first AUDIT policy that matched
  bool audit_evaluated = false;  // some AUDIT policy applies (Envoy's LOG RBAC filter ran)
  std::string reason;
  // Dry-run (istio.io/dry-run: "true") policies, evaluated as a shadow: what
  // they would have decided. They never change `kind`.
  struct DryRun {
    bool evaluated = false;  // some dry-run policy applies
    bool would_deny = false;
    std::string policy;  // the dry-run policy that decided
  } dry_run;
};

class L7Authz {
 public:
  struct Policy;  // compiled, in authz.cpp
  L7Authz();
  ~L7Authz();
  L7Authz(const L7Authz&);
  L7Authz(L7Authz&&) noexcept;
  L7Authz& operator=(const L7Authz&);
  L7Authz& operator=(L7Authz&&) noexcept;

  // Compiles the AuthorizationPolicy objects (whole Kubernetes objects) that
  // bind to this waypoint; the others are skipped silently. Problems are
  // appended to `errors` (may be null) as
  // "AuthorizationPolicy <ns>/<name>: <json pointer>: <reason>".
  static L7Authz build(const std::vector<nlohmann::json>& policies, const AuthzScope& scope,
                       std::vector<std::string>* errors);

  // CUSTOM first (kCustom: call `provider`, then, if it allows, call
  // evaluate_after_custom with the request as the provider left it), then
  // DENY, then ALLOW: when ALLOW policies apply, one must match. Istio allows
  // one CUSTOM provider per workload: with several, a request a CUSTOM rule
  // matches is denied. The caller denies (403) when `provider` is not a known
  // extension provider, as Istio does.
  Decision evaluate(const RequestAttrs& r) const;
  Decision evaluate_after_custom(const RequestAttrs& r) const;

  size_t size() const;  // policies bound here (dry-run ones included)

 private:
  Decision run(const RequestAttrs& r, bool custom) const;
  std::shared_ptr<const std::vector<Policy>> policies_;
  std::string custom_conflict_;  // non-empty: several CUSTOM providers
};

// Istio string match: "*" any non-empty, "prefix*", "*suffix", else exact.
bool istio_match(std::string_view pattern, std::string_view v, bool ignore_case = false);

}  // namespace warren::waypoint
