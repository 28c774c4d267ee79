// The push protocol end to end on loopback, in one process: Model ->
// PushServer -> ControllerClient (warren-node's side), and CSRs to the CA.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <thread>

#include "push_fixture.h"

using namespace warren;
using namespace push_fixture;
using nlohmann::json;

TEST_CASE("push sends a snapshot then deltas and records acks", "[controller][push]") {
  Fixture f;
  f.model->upsert("t", json::parse(R"({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop",
      "labels":{"warren.io/dataplane-mode":"enabled"}}})"));
  f.model->upsert("t", pod("a", "n1", "10.1.0.1"));
  f.model->synced();
  f.publish();
  Recorder rec;
  std::string bundle;
  push::ControllerClient c(&f.loop, f.client_opts(), rec.fn());
  c.on_trust_bundle = [&](const std::string& pem) { bundle = pem; };
  c.start();
  REQUIRE(run_until(&f.loop, [&] { return c.version() == f.model->version(); }));
  CHECK(c.resources().count("workload/uid-a") == 1);
  CHECK(c.resources().count("namespace/shop") == 1);
  CHECK(bundle == f.ca->trust_bundle_pem());
  REQUIRE(run_until(&f.loop, [&] {
    auto st = f.push->status();
    return st.size() == 1 && st[0].acked == c.version();
  }));

  // One more pod: only it travels.
  f.model->upsert("t", pod("b", "n1", "10.1.0.2"));
  f.publish();
  REQUIRE(run_until(&f.loop, [&] { return c.version() == f.model->version(); }));
  REQUIRE(rec.changes.size() == 2);
  CHECK(rec.changes.back() == std::vector<std::string>{"workload/uid-b"});
  CHECK(c.resources().size() == 3);

  // A node that rejects a resource nacks it and keeps the previous version.
  rec.reject["workload/uid-a"] = "test says no";
  auto p = pod("a", "n1", "10.1.0.9");
  f.model->upsert("t", p);
  f.publish();
  REQUIRE(run_until(&f.loop, [&] {
    auto st = f.push->status();
    return st[0].acked == f.model->version() && st[0].rejected.count("workload/uid-a");
  }));
  CHECK(c.resources().at("workload/uid-a")["ips"][0] == "10.1.0.1");

  // Removal.
  rec.reject.clear();
  f.model->remove({"Pod", "shop", "b"});
  f.publish();
  REQUIRE(run_until(&f.loop, [&] { return c.version() == f.model->version(); }));
  CHECK(c.resources().count("workload/uid-b") == 0);
  c.stop();
}

TEST_CASE("push resumes a reconnecting node with a delta", "[controller][push]") {
  Fixture f;
  f.model->upsert("t", pod("a", "n1", "10.1.0.1"));
  f.model->synced();
  f.publish();
  Recorder rec;
  push::ControllerClient c(&f.loop, f.client_opts(), rec.fn());
  c.start();
  REQUIRE(run_until(&f.loop, [&] { return c.version() == f.model->version() && c.version() > 0; }));
  c.stop();
  REQUIRE(run_until(&f.loop, [&] { return f.push->connected() == 0; }));
  f.model->upsert("t", pod("b", "n1", "10.1.0.2"));
  f.publish();
  auto snapshots = [&] {
    return f.reg.render().find("warren_push_messages_total{type=\"snapshot\"} 1") != std::string::npos;
  };
  CHECK(snapshots());
  c.start();
  REQUIRE(run_until(&f.loop, [&] { return c.version() == f.model->version(); }));
  CHECK(c.resources().count("workload/uid-b") == 1);
  CHECK(snapshots());  // still one snapshot: the reconnect got a delta
  CHECK(rec.changes.back() == std::vector<std::string>{"workload/uid-b"});
  c.stop();
}

TEST_CASE("push refuses unknown tokens and other nodes' tokens", "[controller][push]") {
  Fixture f;
  f.model->synced();
  f.publish();
  Recorder rec;
  std::ofstream(f.dir + "/token") << "not-a-known-token-at-all\n";
  push::ControllerClient c(&f.loop, f.client_opts(), rec.fn());
  c.start();
  REQUIRE(run_until(&f.loop, [&] { return c.last_error().find("unknown bootstrap token") != std::string::npos; }));
  CHECK_FALSE(c.connected());
  c.stop();
  std::ofstream(f.dir + "/token") << kToken << "\n";
  push::ControllerClient c2(&f.loop, f.client_opts("n2"), rec.fn());
  c2.start();
  REQUIRE(run_until(&f.loop, [&] { return c2.last_error().find("belongs to node n1") != std::string::npos; }));
  c2.stop();
}

TEST_CASE("the CA signs only identities of pods on the asking node", "[controller][push]") {
  Fixture f;
  f.model->upsert("t", pod("a", "n1", "10.1.0.1", "sa-a"));
  f.model->upsert("t", pod("z", "n2", "10.2.0.1", "sa-z"));
  f.model->synced();
  f.publish();
  Recorder rec;
  push::ControllerClient c(&f.loop, f.client_opts(), rec.fn());
  c.start();
  auto ask = [&](const std::string& id) { return test::ask_certificate(&f.loop, c, id); };
  auto ok = ask("spiffe://cluster.local/ns/shop/sa/sa-a");
  REQUIRE(ok);
  auto chain = certs::read_certs_pem(*ok);
  REQUIRE(chain);
  CHECK(certs::spiffe_uri_of((*chain)[0].get()) == "spiffe://cluster.local/ns/shop/sa/sa-a");
  auto refused = ask("spiffe://cluster.local/ns/shop/sa/sa-z");
  REQUIRE_FALSE(refused);
  CHECK(refused.error().message.find("no pod running as") != std::string::npos);
  c.stop();
}

TEST_CASE("a node reaches the controller by name", "[controller][push]") {
  Fixture f;
  f.model->upsert("t", pod("a", "n1", "10.1.0.1"));
  f.model->synced();
  f.publish();
  Recorder rec;
  auto o = f.client_opts();
  o.host = "localhost";  // a Service name in Kubernetes; /etc/hosts here
  o.port = f.push->local().port;
  o.address = {};
  push::ControllerClient c(&f.loop, o, rec.fn());
  c.start();
  REQUIRE(run_until(&f.loop, [&] { return c.version() == f.model->version() && c.version() > 0; }));
  CHECK(c.resources().count("workload/uid-a") == 1);
  c.stop();
}

TEST_CASE("push frames: split across reads and a big message does not leave a big buffer",
          "[controller][push]") {
  push::FrameReader r;
  std::vector<std::string> out;
  std::string small = push::frame_header(5) + "hello";
  std::string big_body(3 << 20, 'x');
  std::string big = push::frame_header(big_body.size()) + big_body;
  std::string all = small + big + small;
  // Fed in uneven pieces, as TLS records arrive.
  size_t at = 0;
  for (size_t step : {3, 7, 100, 65536}) {
    size_t n = std::min(step, all.size() - at);
    REQUIRE(r.feed(reinterpret_cast<const uint8_t*>(all.data() + at), n, &out));
    at += n;
  }
  while (at < all.size()) {
    size_t n = std::min<size_t>(16384, all.size() - at);
    REQUIRE(r.feed(reinterpret_cast<const uint8_t*>(all.data() + at), n, &out));
    at += n;
  }
  REQUIRE(out.size() == 3);
  CHECK(out[0] == "hello");
  CHECK(out[1] == big_body);
  CHECK(out[2] == "hello");
  CHECK(r.pending() == 0);
  CHECK(r.capacity() <= (1u << 20));  // not the 3 MB message's

  push::FrameReader limited(16);
  std::string too_big = push::frame_header(17) + std::string(17, 'y');
  CHECK_FALSE(limited.feed(reinterpret_cast<const uint8_t*>(too_big.data()), too_big.size(), &out));
}

TEST_CASE("push sends big snapshots a few nodes at a time and every node gets one", "[controller][push]") {
  Fixture f(1);  // one bulk slot: the three snapshots go one after the other
  for (int i = 0; i < 1500; ++i)
    f.model->upsert("t", pod("p" + std::to_string(i), "n1", "10.1." + std::to_string(i / 250) + "." +
                                                          std::to_string(i % 250 + 1)));
  f.model->synced();
  f.publish();
  std::vector<std::unique_ptr<push::ControllerClient>> clients;
  std::vector<Recorder> recs(3);
  for (int n = 1; n <= 3; ++n) {
    auto o = f.client_opts("n" + std::to_string(n));
    if (n > 1) {
      o.token_file = f.dir + "/token-n" + std::to_string(n);
      std::ofstream(o.token_file) << kToken << "-n" << n << "\n";
    }
    clients.push_back(std::make_unique<push::ControllerClient>(&f.loop, o, recs[n - 1].fn()));
    clients.back()->start();
  }
  REQUIRE(run_until(&f.loop, [&] {
    for (auto& c : clients)
      if (c->version() != f.model->version() || c->resources().size() != 1500) return false;
    return true;
  }));
  // A delta after that reaches all three.
  f.model->upsert("t", pod("late", "n1", "10.9.0.1"));
  f.publish();
  REQUIRE(run_until(&f.loop, [&] {
    for (auto& c : clients)
      if (c->version() != f.model->version()) return false;
    return true;
  }));
  for (auto& c : clients) c->stop();
}
