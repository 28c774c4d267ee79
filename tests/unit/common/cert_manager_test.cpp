#include "warren/cert_manager.h"

#include <openssl/x509.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <nlohmann/json.hpp>

#include "warren/csr.h"
#include "warren/defer.h"

using namespace warren;
using namespace warren::certs;
using namespace std::chrono_literals;
using Clock = std::chrono::system_clock;
using Report = IdentityStore::ReloadReport;

namespace {

const std::string kA = "spiffe://cluster.local/ns/shop/sa/cart";
const std::string kB = "spiffe://cluster.local/ns/shop/sa/pay";

Ca new_root(const std::string& cn) {
  auto key = generate_p256_key();
  REQUIRE(key.ok());
  auto cert = make_root_ca(key->get(), cn, 24h * 365);
  REQUIRE(cert.ok());
  return Ca{std::move(*cert), std::move(*key)};
}

// Wall clock the test moves forward.
struct FakeClock {
  Clock::duration offset{};
  Clock::time_point now() const { return Clock::now() + offset; }
};

struct FakeTransport : CsrTransport {
  enum class Mode { kSign, kFail, kHold, kWrongId, kWrongKey, kWithRoot };
  uv_loop_t* loop;
  FakeClock* clock;
  const Ca* ca;
  Mode mode = Mode::kSign;
  bool synchronous = false;
  Clock::duration ttl = 24h;  // from the signing time; notBefore is backdated 1 min
  int requests = 0;
  struct Held {
    std::string id, csr;
    std::function<void(Result<std::string>)> done;
  };
  std::vector<Held> held;

  Result<std::string> answer(const std::string& id, const std::string& csr) {
    if (mode == Mode::kFail) return make_error(Errc::kUnavailable, "CA refused: test");
    auto parsed = parse_csr_pem(csr);
    if (!parsed) return parsed.error();
    KeyPtr pub = std::move(parsed->public_key);
    if (mode == Mode::kWrongKey) {
      auto other = generate_p256_key();
      if (!other) return other.error();
      pub = std::move(*other);
    }
    std::string leaf_id = mode == Mode::kWrongId ? kB : id;
    auto t = clock->now();
    auto leaf = issue_workload_cert(*ca, pub.get(), leaf_id, t - 1min, t + ttl);
    if (!leaf) return leaf.error();
    std::string pem = to_pem(leaf->get());
    if (mode == Mode::kWithRoot) pem += to_pem(ca->cert.get());
    return pem;
  }

  void request(const std::string& id, const std::string& csr,
               std::function<void(Result<std::string>)> done) override {
    ++requests;
    if (mode == Mode::kHold) {
      held.push_back({id, csr, std::move(done)});
      return;
    }
    auto r = answer(id, csr);
    if (synchronous) return done(std::move(r));
    defer(loop, [done = std::move(done), r = std::move(r)]() mutable { done(std::move(r)); });
  }

  void release_held() {
    auto hs = std::move(held);
    held.clear();
    for (auto& h : hs) h.done(answer(h.id, h.csr));
  }
};

struct Env {
  uv_loop_t loop;
  FakeClock clock;
  Ca ca = new_root("root A");
  IdentityStore store;
  FakeTransport transport;
  std::unique_ptr<CertManager> cm;
  std::vector<Report> changes;

  explicit Env(bool with_bundle = true) {
    uv_loop_init(&loop);
    transport.loop = &loop;
    transport.clock = &clock;
    transport.ca = &ca;
    CertManagerOptions opts;
    opts.jitter_fraction = 0;
    opts.min_backoff = 1ms;
    opts.max_backoff = 8ms;
    opts.drop_grace = 60s;
    opts.request_timeout = 10s;
    opts.clock = [this] { return clock.now(); };
    cm = std::make_unique<CertManager>(&loop, store, transport, opts);
    cm->set_on_change([this](const Report& r) { changes.push_back(r); });
    if (with_bundle) REQUIRE(cm->set_trust_bundle(to_pem(ca.cert.get())).ok());
    changes.clear();
  }
  ~Env() {
    cm.reset();
    transport.held.clear();
    uv_run(&loop, UV_RUN_DEFAULT);  // deferred answers and closing timers
    uv_loop_close(&loop);
  }

  // Runs the loop until `pred` holds or `limit` passes (a 1 ms tick keeps it turning).
  bool run_until(const std::function<bool()>& pred, Clock::duration limit = 5s) {
    uv_timer_t tick;
    uv_timer_init(&loop, &tick);
    uv_timer_start(
        &tick, [](uv_timer_t*) {}, 1, 1);
    auto end = std::chrono::steady_clock::now() + limit;
    while (!pred() && std::chrono::steady_clock::now() < end) uv_run(&loop, UV_RUN_ONCE);
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    uv_run(&loop, UV_RUN_NOWAIT);
    return pred();
  }
  const CertManager::IdStatus status(const std::string& id) const {
    for (auto& s : cm->status())
      if (s.spiffe_id == id) return s;
    FAIL("no status for " << id);
    return {};
  }
  bool installed(const std::string& id) { return store.get(id) != nullptr; }
};

bool has(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace

TEST_CASE("cert manager: issues certificates for wanted ids") {
  Env env;
  SECTION("answers on a later loop turn") {}
  SECTION("answers inside request()") {
    env.transport.synchronous = true;
  }
  SECTION("answers carry the root") {
    env.transport.mode = FakeTransport::Mode::kWithRoot;
  }
  env.cm->set_wanted({kA, kB, "not-a-spiffe-id"});
  REQUIRE(env.run_until([&] { return env.installed(kA) && env.installed(kB); }));
  CHECK(env.cm->counters().issued == 2);
  CHECK(env.cm->counters().failed == 0);
  CHECK(env.transport.requests == 2);
  auto id = env.store.get(kA);
  CHECK(id->spiffe_id == kA);
  CHECK(id->chain.empty());  // a root in the answer is not kept in the chain
  CHECK(key_matches(id->leaf.get(), id->key.get()));
  CHECK(verify_chain(id->leaf.get(), {}, env.store.root_ptrs(), Clock::now()).ok());
  size_t added = 0;
  for (auto& c : env.changes) added += c.added.size();
  CHECK(added == 2);
  auto j = env.cm->status_json();
  CHECK(j["identities"].size() == 2);
  CHECK(j["issued"] == 2);
  CHECK(j["identities"][0]["notAfter"] != "");
}

TEST_CASE("cert manager: waits for the trust bundle before requesting") {
  Env env(false);
  env.cm->set_wanted({kA});
  env.cm->check_now();
  CHECK(env.transport.requests == 0);
  REQUIRE(env.cm->set_trust_bundle(to_pem(env.ca.cert.get())).ok());
  REQUIRE(env.run_until([&] { return env.installed(kA); }));
}

TEST_CASE("cert manager: renews at half-life") {
  Env env;
  env.cm->set_wanted({kA});
  REQUIRE(env.run_until([&] { return env.installed(kA); }));
  auto first = env.store.get(kA);
  auto st = env.status(kA);
  // Half of the life left when it arrived (notBefore is backdated by a minute).
  auto issued = first->not_before + 1min;
  auto expect = issued + (first->not_after - issued) / 2;
  CHECK(st.next_renewal >= expect - 2s);
  CHECK(st.next_renewal <= expect + 2s);
  env.changes.clear();

  env.clock.offset = 11h;  // before half-life: nothing happens
  env.cm->check_now();
  CHECK(env.transport.requests == 1);

  env.clock.offset = 12h + 1min;
  env.cm->check_now();
  CHECK(env.transport.requests == 2);
  REQUIRE(env.run_until([&] { return env.store.get(kA) != first; }));
  CHECK(env.cm->counters().renewed == 1);
  CHECK(env.cm->counters().issued == 1);
  REQUIRE(env.changes.size() == 1);
  CHECK(env.changes[0].updated == std::vector<std::string>{kA});
  CHECK(env.store.get(kA)->not_after > first->not_after);
}

TEST_CASE("cert manager: a short-lived backdated certificate is renewed once per half-life") {
  // A 30 s certificate backdated by 1 min: half of its whole validity lies in
  // the past, which once caused a renewal on every timer turn.
  Env env;
  env.transport.ttl = 30s;
  env.cm->set_wanted({kA});
  REQUIRE(env.run_until([&] { return env.installed(kA); }));
  auto st = env.status(kA);
  auto t = env.clock.now();
  CHECK(st.next_renewal >= t + 13s);
  CHECK(st.next_renewal <= t + 16s);
  env.run_until([] { return false; }, 500ms);  // the loop turns: nothing is due
  CHECK(env.transport.requests == 1);
  env.clock.offset = 16s;
  env.cm->check_now();
  REQUIRE(env.run_until([&] { return env.cm->counters().renewed == 1; }));
  CHECK(env.transport.requests == 2);
}

TEST_CASE("cert manager: a certificate about to expire is not renewed in a tight loop") {
  Env env;
  env.transport.ttl = 1500ms;  // half of what is left is under min_renew_delay (1 s)
  env.cm->set_wanted({kA});
  REQUIRE(env.run_until([&] { return env.installed(kA); }));
  CHECK(env.status(kA).next_renewal >= env.clock.now() + 900ms);
  env.cm->check_now();
  CHECK(env.transport.requests == 1);
}

TEST_CASE("cert manager: stop() lets the loop end") {
  Env env;
  env.cm->set_wanted({kA});
  REQUIRE(env.run_until([&] { return env.installed(kA); }));
  env.transport.mode = FakeTransport::Mode::kHold;
  env.cm->stop();
  env.cm->check_now();
  env.cm->set_wanted({kA, kB});
  // No timer left armed: uv_run returns (before the fix it re-armed every
  // max_sleep forever and this test hit ctest's timeout).
  uv_run(&env.loop, UV_RUN_DEFAULT);
  CHECK(env.transport.requests == 1);
  CHECK(env.installed(kA));  // what was installed stays
}

TEST_CASE("cert manager: keeps the old certificate while renewal fails and retries") {
  Env env;
  env.cm->set_wanted({kA});
  REQUIRE(env.run_until([&] { return env.installed(kA); }));
  auto first = env.store.get(kA);
  env.changes.clear();

  env.transport.mode = FakeTransport::Mode::kFail;
  env.clock.offset = 13h;
  env.cm->check_now();
  REQUIRE(env.run_until([&] { return env.cm->counters().failed >= 4; }));
  CHECK(env.store.get(kA) == first);  // never dropped
  auto st = env.status(kA);
  CHECK(st.installed);
  CHECK(st.failures >= 4);
  CHECK(st.last_error.find("CA refused") != std::string::npos);
  CHECK(env.changes.empty());

  env.transport.mode = FakeTransport::Mode::kSign;
  REQUIRE(env.run_until([&] { return env.store.get(kA) != first; }));
  CHECK(env.cm->counters().renewed == 1);
  CHECK(env.status(kA).failures == 0);
  CHECK(env.status(kA).last_error.empty());
}

TEST_CASE("cert manager: a request never answered times out and is retried") {
  Env env;
  env.transport.mode = FakeTransport::Mode::kHold;
  env.cm->set_wanted({kA});
  REQUIRE(env.run_until([&] { return env.transport.held.size() == 1; }));
  CHECK(env.status(kA).in_flight);
  env.clock.offset = 11s;  // past request_timeout
  env.cm->check_now();
  CHECK(env.cm->counters().failed == 1);
  CHECK(env.status(kA).last_error.find("did not answer") != std::string::npos);
  // The late answer is ignored; the retry is the one that counts.
  REQUIRE(env.run_until([&] { return env.transport.held.size() == 2; }));
  auto late = std::move(env.transport.held[0]);
  env.transport.held.erase(env.transport.held.begin());
  env.transport.mode = FakeTransport::Mode::kSign;
  late.done(env.transport.answer(late.id, late.csr));
  CHECK_FALSE(env.installed(kA));
  env.transport.release_held();
  CHECK(env.installed(kA));
}

TEST_CASE("cert manager: drops ids no longer wanted after the grace period") {
  Env env;
  env.cm->set_wanted({kA, kB});
  REQUIRE(env.run_until([&] { return env.installed(kA) && env.installed(kB); }));
  env.changes.clear();

  env.cm->set_wanted({kA});
  env.cm->check_now();
  CHECK(env.installed(kB));  // still in its grace period
  CHECK_FALSE(env.status(kB).wanted);

  SECTION("wanted again within the grace period: kept, not re-requested") {
    env.clock.offset = 30s;
    env.cm->set_wanted({kA, kB});
    env.clock.offset = 90s;
    env.cm->check_now();
    CHECK(env.installed(kB));
    CHECK(env.transport.requests == 2);
  }
  SECTION("gone after the grace period") {
    env.clock.offset = 61s;
    env.cm->check_now();
    CHECK_FALSE(env.installed(kB));
    CHECK(env.installed(kA));
    REQUIRE(env.changes.size() == 1);
    CHECK(env.changes[0].removed == std::vector<std::string>{kB});
    CHECK(env.cm->status().size() == 1);
  }
}

TEST_CASE("cert manager: rejects a chain that does not verify or carries another id") {
  Env env;
  Ca other = new_root("stranger");
  std::string reason;
  SECTION("signed by a CA outside the bundle") {
    env.transport.ca = &other;
    reason = "certificate verification failed";
  }
  SECTION("a leaf for another id") {
    env.transport.mode = FakeTransport::Mode::kWrongId;
    reason = "the leaf is for " + kB;
  }
  SECTION("a leaf for another key") {
    env.transport.mode = FakeTransport::Mode::kWrongKey;
    reason = "does not carry the key";
  }
  env.cm->set_wanted({kA});
  REQUIRE(env.run_until([&] { return env.cm->counters().failed >= 2; }));
  CHECK_FALSE(env.installed(kA));
  CHECK(env.changes.empty());
  auto st = env.status(kA);
  INFO(st.last_error);
  CHECK(st.last_error.find(reason) != std::string::npos);
}

TEST_CASE("cert manager: trust bundle rotation") {
  Env env;
  Ca root_b = new_root("root B");
  env.cm->set_wanted({kA});
  REQUIRE(env.run_until([&] { return env.installed(kA); }));
  auto from_a = env.store.get(kA);
  env.changes.clear();

  // The same bundle again: nothing happens.
  REQUIRE(env.cm->set_trust_bundle(to_pem(env.ca.cert.get())).ok());
  CHECK(env.changes.empty());
  CHECK_FALSE(env.cm->set_trust_bundle("garbage").ok());
  CHECK(env.store.roots().size() == 1);

  // Overlap: both roots; the certificate from A still verifies, no renewal.
  REQUIRE(env.cm->set_trust_bundle(to_pem(env.ca.cert.get()) + to_pem(root_b.cert.get())).ok());
  REQUIRE(env.changes.size() == 1);
  CHECK(env.changes[0].roots_changed);
  CHECK(env.store.roots().size() == 2);
  env.cm->check_now();
  CHECK(env.transport.requests == 1);

  // Only B: the certificate from A is renewed at once, kept until then.
  env.transport.mode = FakeTransport::Mode::kHold;
  env.transport.ca = &root_b;
  REQUIRE(env.cm->set_trust_bundle(to_pem(root_b.cert.get())).ok());
  REQUIRE(env.run_until([&] { return env.transport.held.size() == 1; }));
  CHECK(env.store.get(kA) == from_a);
  env.transport.release_held();
  auto from_b = env.store.get(kA);
  REQUIRE(from_b != from_a);
  CHECK(verify_chain(from_b->leaf.get(), {}, {root_b.cert.get()}, Clock::now()).ok());
  CHECK(has(env.changes.back().updated, kA));
}
