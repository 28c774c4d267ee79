// The push protocol end to end on loopback, in one process: Model ->
// PushServer -> ControllerClient (warren-node's side), and CSRs to the CA.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <thread>

#include "ca.h"
#include "controller_client.h"
#include "model.h"
#include "push_server.h"
#include "warren/csr.h"
#include "warren/push_proto.h"

using namespace warren;
using nlohmann::json;

namespace {

const char* kToken = "0123456789abcdef-n1";

json pod(const std::string& name, const std::string& node, const std::string& ip,
         const std::string& sa = "default") {
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata", {{"name", name}, {"namespace", "shop"}, {"uid", "uid-" + name},
                        {"labels", {{"app", name}}}}},
          {"spec", {{"nodeName", node}, {"serviceAccountName", sa}}},
          {"status", {{"phase", "Running"}, {"podIP", ip}}}};
}

bool run_until(uv_loop_t* loop, const std::function<bool()>& cond, int ms = 5000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    uv_run(loop, UV_RUN_NOWAIT);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

struct Fixture {
  uv_loop_t loop;
  std::string dir;
  std::unique_ptr<controller::CertificateAuthority> ca;
  std::unique_ptr<controller::Model> model;
  std::unique_ptr<controller::TokenFileAuthenticator> auth;
  std::unique_ptr<controller::PushServer> push;
  metrics::Registry reg;

  explicit Fixture(size_t max_bulk = 16) {
    uv_loop_init(&loop);
    dir = std::filesystem::temp_directory_path() / ("warren-push-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/tokens") << kToken << " n1\n" << kToken << "-n2 n2\n" << kToken << "-n3 n3\n";
    controller::CaOptions co;
    co.state_dir = dir + "/ca";
    auto c = controller::CertificateAuthority::create(co);
    REQUIRE(c);
    ca = std::make_unique<controller::CertificateAuthority>(std::move(*c));
    std::ofstream(dir + "/root.pem") << ca->trust_bundle_pem();
    std::ofstream(dir + "/token") << kToken << "\n";
    model = std::make_unique<controller::Model>(controller::ModelOptions{});
    auth = std::make_unique<controller::TokenFileAuthenticator>(dir + "/tokens");
    REQUIRE(auth->load());
    // The controller's serving certificate.
    auto key = certs::generate_p256_key();
    std::string id = "spiffe://cluster.local/ns/warren-system/sa/warren-controller";
    auto csr = certs::make_csr_pem(key->get(), id);
    auto chain = ca->sign(*csr, id);
    REQUIRE(chain);
    auto cs = certs::read_certs_pem(*chain);
    certs::Identity ident;
    ident.spiffe_id = id;
    ident.leaf = std::move((*cs)[0]);
    ident.key = std::move(*key);
    auto ctx = tls::make_push_server_ctx(ident);
    REQUIRE(ctx);
    controller::PushOptions po;
    po.listen = *SockAddr::parse("127.0.0.1:0");
    po.max_bulk_streams = max_bulk;
    push = std::make_unique<controller::PushServer>(
        &loop, *model, *auth,
        [this](const std::string& csr, const std::string& id) { return ca->sign(csr, id); },
        std::move(*ctx), reg, po);
    push->set_trust_bundle(ca->trust_bundle_pem());
    REQUIRE(push->start());
  }
  ~Fixture() {
    push->stop();
    for (int i = 0; i < 20; ++i) uv_run(&loop, UV_RUN_NOWAIT);
    push.reset();
    for (int i = 0; i < 20; ++i) uv_run(&loop, UV_RUN_NOWAIT);
    uv_loop_close(&loop);
    std::filesystem::remove_all(dir);
  }
  void publish() { push->publish(model->flush()); }
  node::ControllerClientOptions client_opts(const std::string& node = "n1") {
    node::ControllerClientOptions o;
    o.address = push->local();
    o.node = node;
    o.token_file = dir + "/token";
    o.ca_file = dir + "/root.pem";
    o.backoff_min_ms = 20;
    o.backoff_max_ms = 100;
    return o;
  }
};

struct Recorder {
  std::vector<std::vector<std::string>> changes;
  std::map<std::string, std::string> reject;  // ids to refuse
  node::ControllerClient::ApplyFn fn() {
    return [this](node::ResourceMap& res, const std::vector<std::string>& changed) {
      changes.push_back(changed);
      std::map<std::string, std::string> out;
      for (const auto& [id, why] : reject)
        if (res.count(id)) out[id] = why;
      return out;
    };
  }
};

}  // namespace

TEST_CASE("push sends a snapshot then deltas and records acks", "[controller][push]") {
  Fixture f;
  f.model->upsert("t", json::parse(R"({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop",
      "labels":{"warren.io/dataplane-mode":"enabled"}}})"));
  f.model->upsert("t", pod("a", "n1", "10.1.0.1"));
  f.model->synced();
  f.publish();
  Recorder rec;
  std::string bundle;
  node::ControllerClient c(&f.loop, f.client_opts(), rec.fn());
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
  node::ControllerClient c(&f.loop, f.client_opts(), rec.fn());
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
  node::ControllerClient c(&f.loop, f.client_opts(), rec.fn());
  c.start();
  REQUIRE(run_until(&f.loop, [&] { return c.last_error().find("unknown bootstrap token") != std::string::npos; }));
  CHECK_FALSE(c.connected());
  c.stop();
  std::ofstream(f.dir + "/token") << kToken << "\n";
  node::ControllerClient c2(&f.loop, f.client_opts("n2"), rec.fn());
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
  node::ControllerClient c(&f.loop, f.client_opts(), rec.fn());
  c.start();
  auto ask = [&](const std::string& id) {
    auto key = certs::generate_p256_key();
    auto csr = certs::make_csr_pem(key->get(), id);
    REQUIRE(csr);
    std::optional<Result<std::string>> got;
    c.request_certificate(id, *csr, [&](Result<std::string> r) { got = std::move(r); });
    REQUIRE(run_until(&f.loop, [&] { return got.has_value(); }));
    return std::move(*got);
  };
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
  node::ControllerClient c(&f.loop, o, rec.fn());
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
  std::vector<std::unique_ptr<node::ControllerClient>> clients;
  std::vector<Recorder> recs(3);
  for (int n = 1; n <= 3; ++n) {
    auto o = f.client_opts("n" + std::to_string(n));
    if (n > 1) {
      o.token_file = f.dir + "/token-n" + std::to_string(n);
      std::ofstream(o.token_file) << kToken << "-n" << n << "\n";
    }
    clients.push_back(std::make_unique<node::ControllerClient>(&f.loop, o, recs[n - 1].fn()));
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
