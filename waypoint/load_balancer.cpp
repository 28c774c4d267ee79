#include "load_balancer.h"

#include <algorithm>
#include <cstdio>

namespace warren::waypoint {

std::vector<size_t> eligible(std::span<const Endpoint> eps, uint32_t panic_percent) {
  std::vector<size_t> healthy;
  for (size_t i = 0; i < eps.size(); i++)
    if (eps[i].healthy) healthy.push_back(i);
  if (panic_percent > 0 &&
      healthy.size() * 100 < static_cast<uint64_t>(panic_percent) * eps.size()) {
    std::vector<size_t> all(eps.size());
    for (size_t i = 0; i < all.size(); i++) all[i] = i;
    return all;
  }
  return healthy;
}

uint64_t hash64(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

namespace {

// The value of cookie `name` in the request's Cookie header(s).
std::optional<std::string> cookie_value(const Headers* headers, std::string_view name) {
  if (!headers) return std::nullopt;
  for (const auto& h : *headers) {
    if (!iequals(h.name, "cookie")) continue;
    std::string_view v = h.value;
    while (!v.empty()) {
      size_t semi = std::min(v.find(';'), v.size());
      std::string_view item = v.substr(0, semi);
      v.remove_prefix(std::min(semi + 1, v.size()));
      while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
      size_t eq = item.find('=');
      if (eq == std::string_view::npos || item.substr(0, eq) != name) continue;
      std::string_view val = item.substr(eq + 1);
      if (val.size() >= 2 && val.front() == '"' && val.back() == '"')
        val = val.substr(1, val.size() - 2);
      return std::string(val);
    }
  }
  return std::nullopt;
}

}  // namespace

HashKey hash_key(const ConsistentHashPolicy& p, const RequestView& r, std::string_view source_ip) {
  HashKey k;
  using S = ConsistentHashPolicy::Source;
  switch (p.source) {
    case S::kHeader: {
      std::string v;
      if (r.headers && header_value(*r.headers, p.name, v)) k.hash = hash64(v);
      break;
    }
    case S::kQueryParam:
      if (auto v = query_param(r.query, p.name)) k.hash = hash64(*v);
      break;
    case S::kSourceIp:
      if (!source_ip.empty()) k.hash = hash64(source_ip);
      break;
    case S::kCookie:
      if (auto v = cookie_value(r.headers, p.name)) {
        k.hash = hash64(*v);
      } else if (p.cookie_ttl) {
        // Envoy: the value is derived from the downstream address, so that
        // racing streams of one connection get the same cookie.
        char hex[17];
        std::snprintf(hex, sizeof hex, "%016llx",
                      static_cast<unsigned long long>(hash64(source_ip)));
        k.hash = hash64(hex);
        k.set_cookie = p.name + "=\"" + hex + "\"";
        if (p.cookie_ttl->count() > 0)
          k.set_cookie += "; Max-Age=" + std::to_string((p.cookie_ttl->count() + 999) / 1000);
        if (!p.cookie_path.empty()) k.set_cookie += "; Path=" + p.cookie_path;
        k.set_cookie += "; HttpOnly";
      }
      break;
  }
  return k;
}

HashRing::HashRing(std::span<const Endpoint> eps, const std::vector<size_t>& which,
                   uint64_t minimum_ring_size) {
  if (which.empty()) return;
  constexpr uint64_t kMaxRing = 8u << 20;  // Envoy's maximum_ring_size
  uint64_t want =
      std::clamp<uint64_t>((minimum_ring_size + which.size() - 1) / which.size(), 1, kMaxRing);
  uint64_t per = 1;
  while (per < want) per <<= 1;
  while (per > 1 && per * which.size() > kMaxRing) per >>= 1;
  ring_.reserve(per * which.size());
  std::string buf;
  for (size_t idx : which) {
    for (uint64_t i = 0; i < per; i++) {
      buf.assign(eps[idx].key);
      buf += '_';
      buf += std::to_string(i);
      ring_.emplace_back(hash64(buf), static_cast<uint32_t>(idx));
    }
  }
  // Ties (vanishingly rare) break on the key, so the order is independent of
  // the endpoints' order in the span.
  std::sort(ring_.begin(), ring_.end(), [&](const auto& a, const auto& b) {
    if (a.first != b.first) return a.first < b.first;
    return eps[a.second].key < eps[b.second].key;
  });
}

std::optional<size_t> HashRing::pick(uint64_t hash) const {
  if (ring_.empty()) return std::nullopt;
  auto it = std::lower_bound(ring_.begin(), ring_.end(), hash,
                             [](const auto& p, uint64_t h) { return p.first < h; });
  if (it == ring_.end()) it = ring_.begin();
  return it->second;
}

size_t pick_round_robin(const std::vector<size_t>& el, uint64_t& next) {
  return el[next++ % el.size()];
}

size_t pick_random(const std::vector<size_t>& el, const RandomFn& rnd) {
  return el[rnd() % el.size()];
}

// Envoy's unweighted least request: sample two (with replacement), keep the
// one with fewer active requests, the first on a tie.
size_t pick_least_request(std::span<const Endpoint> eps, const std::vector<size_t>& el,
                          const RandomFn& rnd) {
  size_t best = el[rnd() % el.size()];
  size_t other = el[rnd() % el.size()];
  return eps[other].active_requests < eps[best].active_requests ? other : best;
}

std::optional<size_t> LoadBalancer::pick(std::span<const Endpoint> eps, const RandomFn& rnd,
                                         std::optional<uint64_t> hash) {
  auto el = eligible(eps, panic_);
  if (el.empty()) return std::nullopt;
  switch (policy_.kind) {
    case LbKind::kRoundRobin:
      return pick_round_robin(el, rr_next_);
    case LbKind::kLeastRequest:
      return pick_least_request(eps, el, rnd);
    case LbKind::kRandom:
    case LbKind::kPassthrough:
      return pick_random(el, rnd);
    case LbKind::kConsistentHash: {
      if (!hash) return pick_random(el, rnd);
      // The ring depends on the eligible (index, key) list; no allocation.
      uint64_t sig = el.size();
      for (size_t i : el) {
        sig ^= hash64(eps[i].key) + 0x9e3779b97f4a7c15ull * (i + 1) + (sig << 6) + (sig >> 2);
        sig *= 0x100000001b3ull;
      }
      if (!ring_built_ || sig != ring_signature_) {
        ring_ = HashRing(eps, el, policy_.hash.minimum_ring_size);
        ring_signature_ = sig;
        ring_built_ = true;
      }
      return ring_.pick(*hash);
    }
  }
  return std::nullopt;
}

}  // namespace warren::waypoint
