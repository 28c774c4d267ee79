// JwksResolver: the controller fetches the JWKS behind every `jwksUri` of the
// RequestAuthentications in force and sends the keys inline to waypoints, as
// istiod does for Envoy (waypoints then never reach out to identity
// providers, and every waypoint sees the same keys at the same time).
//
//   JwksResolver r(loop);
//   r.set_on_change([&] { model.resend_request_authentications(); });
//   r.set_uris({"https://idp.example.com/.well-known/jwks.json"});
//   json sent = inline_jwks(request_authentication, r);
//
// Behaviour:
//   - Each wanted URI is fetched at once, then every `refresh` (20 min, Istio's
//     default); a failed fetch is retried after `retry` (doubling up to
//     `refresh`). URIs no longer wanted are dropped with their keys.
//   - An answer is accepted only when it is 2xx, at most `max_size` bytes and
//     a JSON object with a "keys" array; otherwise the error is recorded and
//     the last good keys stay in force (a key set never regresses to nothing
//     because an identity provider had a bad minute).
//   - on_change runs (on the loop thread) whenever the keys of a URI change,
//     not on refreshes that bring the same keys.
//   - http:// and https:// (system trust store) URIs; anything else is an
//     error for that URI. No redirects are followed.
// Runs on the controller's loop thread; not thread-safe.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

typedef struct uv_loop_s uv_loop_t;  // NOLINT: same declaration as uv.h

namespace warren::controller {

struct JwksResolverOptions {
  std::chrono::milliseconds refresh{20 * 60 * 1000};
  std::chrono::milliseconds retry{5'000};
  std::chrono::milliseconds timeout{10'000};
  size_t max_size = 1u << 20;
};

class JwksResolver {
 public:
  struct Entry {
    std::string jwks;   // the last good JWKS (JSON text); empty: none yet
    std::string error;  // why the last fetch failed ("" after a success)
    uint64_t fetches = 0, failures = 0;
  };

  explicit JwksResolver(uv_loop_t* loop, JwksResolverOptions opts = {});
  ~JwksResolver();
  JwksResolver(const JwksResolver&) = delete;
  JwksResolver& operator=(const JwksResolver&) = delete;

  // The URIs to keep fetched; new ones are fetched now.
  void set_uris(const std::set<std::string>& uris);
  void set_on_change(std::function<void()> fn);
  // Null when the URI is not wanted.
  const Entry* find(const std::string& uri) const;
  std::map<std::string, Entry> entries() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The jwksUri values of a RequestAuthentication's jwtRules that have no
// inline jwks.
std::set<std::string> jwks_uris(const nlohmann::json& request_authentication);

// A copy of the RequestAuthentication with the fetched keys written into
// `jwks` of every rule whose jwksUri has keys (the jwksUri stays, for
// /config_dump). Rules whose keys are not known yet are left as they are: the
// waypoint refuses their tokens ("not fetched yet"), failing closed.
nlohmann::json inline_jwks(const nlohmann::json& request_authentication, const JwksResolver& r);

}  // namespace warren::controller
