// Endpoint choice for one request, as Envoy's load balancers make it: round
// robin, least request (power of two choices), random, consistent hash (ring
// hash). Pure: the caller passes the candidate endpoints, the request's hash
// key and a random source; nothing here reads a clock or a socket.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "destination_rule.h"
#include "route_match.h"

namespace warren::waypoint {

struct Endpoint {
  std::string_view key;  // stable identity (workload uid); the consistent hash hashes it
  uint32_t active_requests = 0;
  bool healthy = true;  // false: ejected by outlier detection or not ready
};

// Uniform in [0, 2^32). Tests pass a seeded std::mt19937 wrapped in a lambda.
using RandomFn = std::function<uint32_t()>;

// Indices of the endpoints to balance over: the healthy ones, or all of them
// when fewer than `panic_percent`% are healthy (Envoy's panic threshold, which
// Istio sets from outlierDetection.minHealthPercent; 0 disables it, and then
// no healthy endpoint means no endpoint).
std::vector<size_t> eligible(std::span<const Endpoint> eps, uint32_t panic_percent);

// A stable 64-bit hash (FNV-1a, then a splitmix64 finaliser): the same input
// gives the same value in every process and build.
uint64_t hash64(std::string_view s);

// The hash key of a request under a consistentHash policy. No key (header,
// cookie or query parameter absent): `hash` is empty and the balancer picks at
// random, as Envoy. A cookie policy with a ttl and no cookie on the request
// generates one from the source address: the proxy adds `set_cookie` to the
// response (Set-Cookie value) and the request hashes on the new value.
struct HashKey {
  std::optional<uint64_t> hash;
  std::string set_cookie;
};
HashKey hash_key(const ConsistentHashPolicy& p, const RequestView& r, std::string_view source_ip);

// Ketama-style ring over endpoint keys. Every endpoint gets the same number of
// points, a power of two chosen so the ring has at least minimum_ring_size
// points; while that number does not change, an endpoint leaving moves only
// the keys it owned.
class HashRing {
 public:
  HashRing() = default;
  HashRing(std::span<const Endpoint> eps, const std::vector<size_t>& which,
           uint64_t minimum_ring_size);
  // The endpoint (index into the span the ring was built from) for a hash.
  std::optional<size_t> pick(uint64_t hash) const;
  size_t size() const { return ring_.size(); }

 private:
  std::vector<std::pair<uint64_t, uint32_t>> ring_;  // (point, endpoint index), sorted
};

// One balancer per (host, subset, port) policy; keeps round-robin state and
// the hash ring (rebuilt when the eligible endpoint set changes). Not
// thread-safe: one per worker.
class LoadBalancer {
 public:
  explicit LoadBalancer(LbPolicy policy = {}, uint32_t panic_percent = 0)
      : policy_(std::move(policy)), panic_(panic_percent) {}

  // The chosen endpoint, an index into `eps`; nullopt when none is eligible
  // (the proxy answers 503, flag UH). `hash` is hash_key(...).hash for
  // consistent hashing, ignored by the other policies. PASSTHROUGH balances
  // as RANDOM (the waypoint always picks an endpoint).
  std::optional<size_t> pick(std::span<const Endpoint> eps, const RandomFn& rnd,
                             std::optional<uint64_t> hash = std::nullopt);

  const LbPolicy& policy() const { return policy_; }

 private:
  LbPolicy policy_;
  uint32_t panic_;
  uint64_t rr_next_ = 0;
  HashRing ring_;
  uint64_t ring_signature_ = 0;
  bool ring_built_ = false;
};

// The single-policy pickers the balancer uses, over eligible indices.
size_t pick_round_robin(const std::vector<size_t>& eligible, uint64_t& next);
size_t pick_least_request(std::span<const Endpoint> eps, const std::vector<size_t>& eligible,
                          const RandomFn& rnd);
size_t pick_random(const std::vector<size_t>& eligible, const RandomFn& rnd);

}  // namespace warren::waypoint
