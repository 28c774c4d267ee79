#include "load_balancer.h"

#include <catch2/catch.hpp>
#include <map>
#include <random>

using namespace warren::waypoint;

namespace {

struct Pool {
  std::vector<std::string> keys;
  std::vector<Endpoint> eps;
  explicit Pool(size_t n) {
    for (size_t i = 0; i < n; i++) keys.push_back("uid-" + std::to_string(i));
    rebuild();
  }
  void rebuild() {
    eps.clear();
    for (const auto& k : keys) eps.push_back(Endpoint{k, 0, true});
  }
};

RandomFn seeded(uint32_t seed) {
  auto rng = std::make_shared<std::mt19937>(seed);
  return [rng] { return static_cast<uint32_t>((*rng)()); };
}

RandomFn sequence(std::vector<uint32_t> v) {
  auto i = std::make_shared<size_t>(0);
  return [v, i] { return v[(*i)++ % v.size()]; };
}

LbPolicy policy(LbKind k) {
  LbPolicy p;
  p.kind = k;
  return p;
}

}  // namespace

TEST_CASE("load balancer: round robin cycles over healthy endpoints", "[load_balancer]") {
  Pool pool(3);
  LoadBalancer lb(policy(LbKind::kRoundRobin));
  auto rnd = seeded(1);
  std::vector<size_t> got;
  for (int i = 0; i < 6; i++) got.push_back(*lb.pick(pool.eps, rnd));
  CHECK(got == std::vector<size_t>{0, 1, 2, 0, 1, 2});
  pool.eps[1].healthy = false;
  std::map<size_t, int> seen;
  for (int i = 0; i < 10; i++) seen[*lb.pick(pool.eps, rnd)]++;
  CHECK(seen.count(1) == 0);
  CHECK(seen[0] == 5);
  CHECK(seen[2] == 5);
}

TEST_CASE("load balancer: no healthy endpoint and the panic threshold", "[load_balancer]") {
  Pool pool(4);
  for (auto& e : pool.eps) e.healthy = false;
  pool.eps[0].healthy = true;
  auto rnd = seeded(2);
  // Panic threshold 0 (Istio's default minHealthPercent): only the healthy one.
  LoadBalancer strict(policy(LbKind::kRandom), 0);
  for (int i = 0; i < 20; i++) CHECK(*strict.pick(pool.eps, rnd) == 0);
  // 25% healthy < 50%: balance over all.
  CHECK(eligible(pool.eps, 50).size() == 4);
  CHECK(eligible(pool.eps, 25).size() == 1);
  pool.eps[0].healthy = false;
  CHECK_FALSE(strict.pick(pool.eps, rnd).has_value());
  LoadBalancer panicking(policy(LbKind::kRandom), 50);
  CHECK(panicking.pick(pool.eps, rnd).has_value());
  CHECK_FALSE(strict.pick(std::span<const Endpoint>{}, rnd).has_value());
}

TEST_CASE("load balancer: least request takes the less loaded of two choices", "[load_balancer]") {
  Pool pool(4);
  pool.eps[0].active_requests = 10;
  pool.eps[1].active_requests = 2;
  pool.eps[2].active_requests = 5;
  pool.eps[3].active_requests = 2;
  LoadBalancer lb(policy(LbKind::kLeastRequest));
  CHECK(*lb.pick(pool.eps, sequence({0, 2})) == 2);
  CHECK(*lb.pick(pool.eps, sequence({2, 1})) == 1);
  CHECK(*lb.pick(pool.eps, sequence({1, 3})) == 1);  // a tie keeps the first
  CHECK(*lb.pick(pool.eps, sequence({0, 0})) == 0);  // with replacement
  // Over many picks the loaded endpoint is chosen only when sampled twice.
  std::map<size_t, int> seen;
  auto rnd = seeded(3);
  for (int i = 0; i < 4000; i++) seen[*lb.pick(pool.eps, rnd)]++;
  CHECK(seen[0] < seen[1]);
  CHECK(seen[0] < 4000 / 16 * 2);
}

TEST_CASE("load balancer: random is uniform enough over a seeded source", "[load_balancer]") {
  Pool pool(5);
  LoadBalancer lb(policy(LbKind::kRandom));
  auto rnd = seeded(4);
  std::map<size_t, int> seen;
  for (int i = 0; i < 5000; i++) seen[*lb.pick(pool.eps, rnd)]++;
  REQUIRE(seen.size() == 5);
  for (auto& [i, n] : seen) CHECK((n > 800 && n < 1200));
}

TEST_CASE("load balancer: consistent hash is stable and moves little", "[load_balancer]") {
  Pool pool(10);
  LbPolicy p = policy(LbKind::kConsistentHash);
  LoadBalancer lb(p);
  auto rnd = seeded(5);
  std::vector<std::string> before(1000);
  for (int k = 0; k < 1000; k++) {
    uint64_t h = hash64("user-" + std::to_string(k));
    before[k] = pool.keys[*lb.pick(pool.eps, rnd, h)];
    CHECK(pool.keys[*lb.pick(pool.eps, rnd, h)] == before[k]);  // same key, same endpoint
  }
  std::map<std::string, int> share;
  for (const auto& b : before) share[b]++;
  CHECK(share.size() == 10);
  // One endpoint leaves (removed from the list): only its keys move.
  std::string gone = pool.keys[3];
  pool.keys.erase(pool.keys.begin() + 3);
  pool.rebuild();
  int moved = 0;
  for (int k = 0; k < 1000; k++) {
    auto now = pool.keys[*lb.pick(pool.eps, rnd, hash64("user-" + std::to_string(k)))];
    if (before[k] == gone)
      moved++;
    else
      CHECK(now == before[k]);
  }
  CHECK(moved == share[gone]);
  // An ejected (unhealthy) endpoint behaves the same; the order of the list does not matter.
  Pool again(10);
  again.eps[7].healthy = false;
  std::reverse(again.eps.begin(), again.eps.end());
  LoadBalancer lb2(p);
  for (int k = 0; k < 1000; k++) {
    auto now =
        std::string(again.eps[*lb2.pick(again.eps, rnd, hash64("user-" + std::to_string(k)))].key);
    if (before[k] != "uid-7") CHECK(now == before[k]);
    CHECK(now != "uid-7");
  }
  // No hash key: a random pick.
  CHECK(lb.pick(pool.eps, rnd).has_value());
}

TEST_CASE("load balancer: hash keys from header cookie source IP and query", "[load_balancer]") {
  ConsistentHashPolicy p;
  Headers h{{"X-User", "alice"}, {"Cookie", "a=1; session=\"abc\"; z=2"}};
  RequestView r;
  r.headers = &h;
  r.query = "x=1&user=bob";
  p.source = ConsistentHashPolicy::Source::kHeader;
  p.name = "x-user";
  CHECK(hash_key(p, r, "10.0.0.1").hash == hash64("alice"));
  p.name = "x-missing";
  CHECK_FALSE(hash_key(p, r, "10.0.0.1").hash);
  p.source = ConsistentHashPolicy::Source::kQueryParam;
  p.name = "user";
  CHECK(hash_key(p, r, "").hash == hash64("bob"));
  p.source = ConsistentHashPolicy::Source::kSourceIp;
  CHECK(hash_key(p, r, "10.0.0.1").hash == hash64("10.0.0.1"));
  CHECK_FALSE(hash_key(p, r, "").hash);
  p.source = ConsistentHashPolicy::Source::kCookie;
  p.name = "session";
  auto k = hash_key(p, r, "10.0.0.1");
  CHECK(k.hash == hash64("abc"));
  CHECK(k.set_cookie.empty());
  p.name = "other";
  CHECK_FALSE(hash_key(p, r, "10.0.0.1").hash);  // no ttl: no cookie generated
  p.cookie_ttl = std::chrono::milliseconds(1500);
  p.cookie_path = "/app";
  k = hash_key(p, r, "10.0.0.1");
  REQUIRE(k.hash);
  CHECK(k.set_cookie.rfind("other=\"", 0) == 0);
  CHECK(k.set_cookie.find("; Max-Age=2; Path=/app; HttpOnly") != std::string::npos);
  CHECK(hash_key(p, r, "10.0.0.1").set_cookie == k.set_cookie);  // stable per source
  CHECK(hash64("abc") == hash64("abc"));
  CHECK(hash64("abc") != hash64("abd"));
}

TEST_CASE("load balancer: ring size follows the minimum ring size", "[load_balancer]") {
  Pool pool(3);
  std::vector<size_t> all{0, 1, 2};
  CHECK(HashRing(pool.eps, all, 1024).size() == 3 * 512);
  CHECK(HashRing(pool.eps, all, 1).size() == 3);
  CHECK(HashRing(pool.eps, {}, 1024).size() == 0);
  CHECK_FALSE(HashRing(pool.eps, {}, 1024).pick(1).has_value());
}
