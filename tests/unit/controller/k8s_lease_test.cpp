// Leader election on a Lease, and validation verdicts written to status only
// by the leader.
#include <catch2/catch.hpp>

#include <set>

#include "fake_apiserver.h"
#include "k8s/kube_source.h"
#include "k8s_test_support.h"

using namespace warren::fakes;
using namespace warren::controller::k8s;
using warren::controller::ObjectKey;

namespace {

const char* kLeasePath = "/apis/coordination.k8s.io/v1/namespaces/warren-system/leases/warren-controller";

std::unique_ptr<FakeApiServer> start_fake() {
  auto api = FakeApiServer::start({});
  REQUIRE(api.ok());
  return std::move(*api);
}

std::unique_ptr<KubernetesSource> leader_source(TestLoop& loop, FakeApiServer& api,
                                                const std::string& identity,
                                                std::vector<std::string> kinds = {"Namespace"}) {
  SourceOptions o = fast_options(true);
  o.lease.identity = identity;
  o.kinds = std::move(kinds);
  auto s = KubernetesSource::create(loop.get(), fake_config(api), o);
  REQUIRE(s.ok());
  return std::move(*s);
}

std::string holder(FakeApiServer& api) {
  auto l = api.get("Lease", "warren-system", "warren-controller");
  return l ? (*l)["spec"].value("holderIdentity", "") : "";
}

}  // namespace

TEST_CASE("k8s lease: one candidate creates the Lease and keeps renewing it", "[controller][k8s]") {
  auto api = start_fake();
  TestLoop loop;
  auto client = Client::create(loop.get(), fake_config(*api));
  REQUIRE(client.ok());
  LeaseOptions o = fast_options(true).lease;
  o.identity = "solo";
  LeaderElector le(client->get(), o);
  std::vector<bool> changes;
  le.on_change([&](bool l) { changes.push_back(l); });
  le.start();
  REQUIRE(loop.run_until([&] { return le.is_leader(); }));
  auto lease = api->get("Lease", "warren-system", "warren-controller");
  REQUIRE(lease);
  CHECK((*lease)["spec"]["holderIdentity"] == "solo");
  CHECK((*lease)["spec"]["leaseDurationSeconds"] == 1);
  CHECK((*lease)["spec"]["leaseTransitions"] == 0);
  std::string renewed = (*lease)["spec"]["renewTime"];
  REQUIRE(loop.run_until([&] {
    auto l = api->get("Lease", "warren-system", "warren-controller");
    return l && (*l)["spec"]["renewTime"] != renewed;
  }));
  CHECK(changes == std::vector<bool>{true});
  le.stop();
  CHECK(changes == std::vector<bool>{true, false});
}

TEST_CASE("k8s lease: default identity is the pod or host name with a random suffix",
          "[controller][k8s]") {
  std::string a = default_identity(), b = default_identity();
  CHECK(a != b);
  CHECK(a.size() > 9);
  CHECK(a.substr(0, a.size() - 9) == b.substr(0, b.size() - 9));
  CHECK(a[a.size() - 9] == '_');
}

TEST_CASE("k8s lease: leader hand-over between two sources", "[controller][k8s]") {
  auto api = start_fake();
  TestLoop loop;
  RecordingSink sink_a, sink_b;
  auto a = leader_source(loop, *api, "replica-a");
  auto b = leader_source(loop, *api, "replica-b");
  int leaders_at_once = 0;
  auto check = [&](bool) {
    int n = (a && a->is_leader() ? 1 : 0) + (b && b->is_leader() ? 1 : 0);
    leaders_at_once = std::max(leaders_at_once, n);
  };
  a->on_leader_change(check);
  b->on_leader_change(check);
  a->start(&sink_a);
  b->start(&sink_b);
  REQUIRE(loop.run_until([&] { return a->is_leader() || b->is_leader(); }));
  auto& leader = a->is_leader() ? a : b;
  auto& follower = a->is_leader() ? b : a;
  std::string follower_id = follower->elector()->identity();
  CHECK(holder(*api) == leader->elector()->identity());
  // The follower keeps following while the leader renews.
  loop.run_for(std::chrono::milliseconds(1500));
  CHECK(!follower->is_leader());

  SECTION("the leader is destroyed: the follower takes over after expiry") {
    leader.reset();
    REQUIRE(loop.run_until([&] { return follower->is_leader(); }, std::chrono::seconds(5)));
  }
  SECTION("the leader stops renewing: the follower takes over after expiry") {
    leader->stop();
    REQUIRE(loop.run_until([&] { return follower->is_leader(); }, std::chrono::seconds(5)));
  }
  SECTION("the leader releases the Lease: the follower takes over at once") {
    bool released = false;
    leader->elector()->release([&] { released = true; });
    REQUIRE(loop.run_until([&] { return released; }));
    // Released: empty, unless the follower's retry already took it (it may run
    // in the same loop turn as the answer to the release).
    std::string now = holder(*api);
    CHECK((now.empty() || now == follower_id));
    REQUIRE(loop.run_until([&] { return follower->is_leader(); }, std::chrono::seconds(5)));
  }
  CHECK(holder(*api) == follower_id);
  CHECK((*api->get("Lease", "warren-system", "warren-controller"))["spec"]["leaseTransitions"] == 1);
  CHECK(leaders_at_once == 1);
}

TEST_CASE("k8s lease: a 409 on renewal steps down until the Lease is ours again",
          "[controller][k8s]") {
  auto api = start_fake();
  TestLoop loop;
  auto client = Client::create(loop.get(), fake_config(*api));
  REQUIRE(client.ok());
  LeaseOptions o = fast_options(true).lease;
  o.identity = "me";
  LeaderElector le(client->get(), o);
  std::vector<bool> changes;
  le.on_change([&](bool l) { changes.push_back(l); });
  le.start();
  REQUIRE(loop.run_until([&] { return le.is_leader(); }));
  api->fail_requests("PUT", kLeasePath, 409);
  REQUIRE(loop.run_until([&] { return changes.size() == 3; }));
  CHECK(changes == std::vector<bool>{true, false, true});
}

TEST_CASE("k8s lease: a candidate waits for another holder's Lease to expire",
          "[controller][k8s]") {
  auto api = start_fake();
  nlohmann::json lease = {
      {"apiVersion", "coordination.k8s.io/v1"},
      {"kind", "Lease"},
      {"metadata", {{"name", "warren-controller"}, {"namespace", "warren-system"}}},
      {"spec",
       {{"holderIdentity", "ghost"},
        {"leaseDurationSeconds", 1},
        {"renewTime", "2024-05-02T09:00:00.000000Z"},
        {"leaseTransitions", 4}}}};
  REQUIRE(api->create(lease).ok());
  TestLoop loop;
  auto client = Client::create(loop.get(), fake_config(*api));
  REQUIRE(client.ok());
  LeaseOptions o = fast_options(true).lease;
  o.identity = "next";
  LeaderElector le(client->get(), o);
  le.start();
  auto started = std::chrono::steady_clock::now();
  // Expiry is judged on our clock from when we first saw this version, not
  // from renewTime (which is long past).
  loop.run_for(std::chrono::milliseconds(500));
  CHECK(!le.is_leader());
  REQUIRE(loop.run_until([&] { return le.is_leader(); }, std::chrono::seconds(5)));
  CHECK(std::chrono::steady_clock::now() - started >= std::chrono::seconds(1));
  auto now = api->get("Lease", "warren-system", "warren-controller");
  CHECK((*now)["spec"]["holderIdentity"] == "next");
  CHECK((*now)["spec"]["leaseTransitions"] == 5);
}

// ---- status -----------------------------------------------------------------------------

namespace {

// Plays the model: rejects objects named in `bad`, accepts the others.
struct ValidatingSink : RecordingSink {
  std::set<std::string> bad;
  warren::controller::ValidationListener* listener = nullptr;
  void upsert(const std::string& origin, nlohmann::json obj) override {
    ObjectKey k = warren::controller::key_of(obj);
    RecordingSink::upsert(origin, obj);
    if (!listener) return;
    if (bad.count(k.name)) {
      listener->rejected(k, origin,
                         origin + ": " + k.to_string() +
                             ": spec.rules[0].to[0].operation.ports[0]: \"80a\" is not a port");
    } else {
      listener->accepted(k, origin);
    }
  }
};

nlohmann::json accepted_condition(const nlohmann::json& obj) {
  auto st = obj.value("status", nlohmann::json::object());
  for (const auto& c : st.value("conditions", nlohmann::json::array())) {
    if (c["type"] == "Accepted") return c;
  }
  return nullptr;
}

}  // namespace

TEST_CASE("k8s status: rejections are written to status by the leader only",
          "[controller][k8s]") {
  auto api = start_fake();
  auto ap = load_testdata("authorizationpolicy.json");
  ap["metadata"]["name"] = "deny-db";
  REQUIRE(api->create(ap).ok());
  REQUIRE(api->create(load_testdata("authorizationpolicy.json")).ok());
  // Held by someone else for a while: our source starts as a follower.
  REQUIRE(api->create({{"kind", "Lease"},
                       {"metadata", {{"name", "warren-controller"}, {"namespace", "warren-system"}}},
                       {"spec", {{"holderIdentity", "other"}, {"leaseDurationSeconds", 1}}}})
              .ok());
  TestLoop loop;
  ValidatingSink sink;
  sink.bad = {"deny-db"};
  auto src = leader_source(loop, *api, "writer", {"AuthorizationPolicy"});
  sink.listener = src->validation_listener();
  src->start(&sink);
  REQUIRE(loop.run_until([&] { return sink.synced_count == 1; }));
  // Not the leader yet: nothing written, the verdict is kept.
  loop.run_for(std::chrono::milliseconds(300));
  REQUIRE(!src->is_leader());
  CHECK(api->status_patches().empty());
  CHECK(src->status_writer().pending() == 1);

  REQUIRE(loop.run_until([&] { return src->is_leader(); }, std::chrono::seconds(5)));
  REQUIRE(loop.run_until([&] { return api->status_patches().size() == 1; }));
  auto p = api->status_patches()[0];
  CHECK(p.kind == "AuthorizationPolicy");
  CHECK(p.name == "deny-db");
  CHECK(p.content_type == "application/merge-patch+json");
  CHECK(!p.patch["metadata"]["resourceVersion"].get<std::string>().empty());
  auto cond = accepted_condition(*api->get("AuthorizationPolicy", "shop", "deny-db"));
  REQUIRE(cond.is_object());
  CHECK(cond["status"] == "False");
  CHECK(cond["reason"] == "Invalid");
  CHECK(cond["message"] ==
        "AuthorizationPolicy shop/deny-db: spec.rules[0].to[0].operation.ports[0]: \"80a\" is not a port");
  CHECK(cond["observedGeneration"] == 1);
  // Our write comes back as a MODIFIED event and is rejected again with the
  // same message: not written again.
  REQUIRE(loop.run_until([&] { return sink.ops('U', "AuthorizationPolicy") == 3; }));
  loop.run_for(std::chrono::milliseconds(200));
  CHECK(api->status_patches().size() == 1);
  CHECK(src->status_writer().pending() == 0);
  // The accepted object was never written to.
  CHECK(!accepted_condition(*api->get("AuthorizationPolicy", "shop", "reviews-viewer")).is_object());

  // Fixed: the condition turns True.
  sink.bad.clear();
  ap = *api->get("AuthorizationPolicy", "shop", "deny-db");
  ap["spec"]["rules"][0]["to"][0]["operation"]["ports"][0] = "80";
  REQUIRE(api->update(ap).ok());
  REQUIRE(loop.run_until([&] { return api->status_patches().size() == 2; }));
  cond = accepted_condition(*api->get("AuthorizationPolicy", "shop", "deny-db"));
  CHECK(cond["status"] == "True");
  CHECK(cond["observedGeneration"] == 2);
  loop.run_for(std::chrono::milliseconds(200));
  CHECK(api->status_patches().size() == 2);
}

TEST_CASE("k8s status: a follower never writes", "[controller][k8s]") {
  auto api = start_fake();
  auto ap = load_testdata("authorizationpolicy.json");
  REQUIRE(api->create(ap).ok());
  TestLoop loop;
  ValidatingSink sink;
  sink.bad = {"reviews-viewer"};
  SourceOptions o = fast_options(false);  // no election: never the leader
  o.kinds = {"AuthorizationPolicy"};
  auto src = KubernetesSource::create(loop.get(), fake_config(*api), o);
  REQUIRE(src.ok());
  sink.listener = (*src)->validation_listener();
  (*src)->start(&sink);
  REQUIRE(loop.run_until([&] { return sink.synced_count == 1; }));
  loop.run_for(std::chrono::milliseconds(300));
  CHECK(api->status_patches().empty());
  for (const auto& r : api->requests()) CHECK(r.method == "GET");
}

TEST_CASE("k8s status: HTTPRoute parents and conflicts", "[controller][k8s]") {
  auto api = start_fake();
  REQUIRE(api->create(load_testdata("httproute.json")).ok());
  TestLoop loop;
  ValidatingSink sink;
  sink.bad = {"reviews"};
  auto src = leader_source(loop, *api, "writer", {"HTTPRoute"});
  sink.listener = src->validation_listener();
  // The first status write meets a concurrent change.
  api->fail_requests("PATCH", "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/reviews/status", 409);
  src->start(&sink);
  REQUIRE(loop.run_until([&] { return api->status_patches().size() == 1; }, std::chrono::seconds(5)));
  auto route = *api->get("HTTPRoute", "shop", "reviews");
  auto parents = route["status"]["parents"];
  REQUIRE(parents.size() == 2);
  CHECK(parents[0]["controllerName"] == "example.net/other-controller");
  CHECK(parents[1]["controllerName"] == "warren.io/controller");
  CHECK(parents[1]["parentRef"]["name"] == "reviews");
  CHECK(parents[1]["conditions"][0]["type"] == "Accepted");
  CHECK(parents[1]["conditions"][0]["status"] == "False");
  size_t patches = 0;
  for (const auto& r : api->requests()) patches += r.method == "PATCH" ? 1 : 0;
  CHECK(patches == 2);  // the 409, then the write
}
