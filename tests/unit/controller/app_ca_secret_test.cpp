// warren-controller --ca-secret against the fake API server: the signing CA
// comes from a Secret (Istio's cacerts layout, or tls.crt/tls.key/ca.crt),
// certificates chain to it, a changed Secret is pushed to nodes as a new
// trust bundle, and a broken one is refused while the CA in force stays.
#include <openssl/evp.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include "app.h"
#include "warren/controller_client.h"
#include "fake_apiserver.h"
#include "loop_util.h"
#include "warren/certs.h"
#include "warren/csr.h"

using namespace warren;
using warren::test::spin;
using namespace warren::certs;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

std::string b64(const std::string& s) {
  std::string out(4 * ((s.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

Ca new_root(const std::string& cn) {
  auto key = generate_p256_key();
  REQUIRE(key.ok());
  auto cert = make_root_ca(key->get(), cn, 24h * 365);
  REQUIRE(cert.ok());
  return Ca{std::move(*cert), std::move(*key)};
}

Ca new_intermediate(const Ca& parent, const std::string& cn) {
  auto key = generate_p256_key();
  REQUIRE(key.ok());
  auto cert = issue_intermediate_ca(parent, key->get(), cn, 24h * 30);
  REQUIRE(cert.ok());
  return Ca{std::move(*cert), std::move(*key)};
}

// Istio's plug-in CA secret: the intermediate signs, cert-chain.pem is it and
// its root, root-cert.pem the trusted roots.
json cacerts(const Ca& signer, const Ca& root, const std::string& roots_pem) {
  json data = {{"ca-cert.pem", b64(to_pem(signer.cert.get()))},
               {"ca-key.pem", b64(to_pem(signer.key.get()))},
               {"cert-chain.pem", b64(to_pem(signer.cert.get()) + to_pem(root.cert.get()))},
               {"root-cert.pem", b64(roots_pem)}};
  return {{"apiVersion", "v1"},
          {"kind", "Secret"},
          {"metadata", {{"name", "cacerts"}, {"namespace", "warren-system"}}},
          {"type", "Opaque"},
          {"data", data}};
}

json pod(const std::string& name, const std::string& node, const std::string& ip) {
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata", {{"name", name}, {"namespace", "shop"}, {"uid", "uid-" + name}}},
          {"spec", {{"nodeName", node}, {"serviceAccountName", name}}},
          {"status", {{"phase", "Running"}, {"podIP", ip}}}};
}

struct Dir {
  std::string path;
  explicit Dir(const std::string& tag)
      : path(std::filesystem::temp_directory_path() / ("warren-" + tag + "-" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~Dir() { std::filesystem::remove_all(path); }
};

std::string slurp(const std::string& p) {
  std::ifstream f(p);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace

TEST_CASE("controller --ca-secret: signs with the Secret's CA and follows its changes",
          "[controller][k8s][ca]") {
  auto fake = fakes::FakeApiServer::start();
  REQUIRE(fake);
  auto& api = **fake;
  Ca root_a = new_root("root A");
  Ca inter_a = new_intermediate(root_a, "intermediate A");
  REQUIRE(api.create(cacerts(inter_a, root_a, to_pem(root_a.cert.get()))));
  REQUIRE(api.create(json::parse(R"({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop",
      "labels":{"warren.io/dataplane-mode":"enabled"}}})")));
  REQUIRE(api.create(pod("a", "node-1", "10.1.0.1")));
  const std::string node_token = "node-1-token";
  api.set_token_review(node_token, {{"username", "system:serviceaccount:warren-system:warren-node"},
                                    {"uid", "u1"},
                                    {"extra", {{"authentication.kubernetes.io/node-name", {"node-1"}}}}});
  Dir dir("casecret");
  std::ofstream(dir.path + "/kubeconfig") << api.kubeconfig("test-token");
  std::ofstream(dir.path + "/node-token") << node_token;

  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    controller::AppOptions o;
    o.kubeconfig = dir.path + "/kubeconfig";
    o.listen = *SockAddr::parse("127.0.0.1:0");
    o.monitoring = *SockAddr::parse("127.0.0.1:0");
    o.state_dir = dir.path + "/state";
    o.ca_secret = "warren-system/cacerts";
    o.ca_secret_poll = 50ms;
    controller::App app(&loop, o);
    REQUIRE(app.start());
    // The bundle nodes use is the Secret's root, not a generated one.
    CHECK(slurp(app.trust_bundle_file()) == to_pem(root_a.cert.get()));
    CHECK_FALSE(std::filesystem::exists(dir.path + "/state/root-key.pem"));

    push::ControllerClientOptions co;
    co.address = app.push_address();
    co.node = "node-1";
    co.token_file = dir.path + "/node-token";
    co.ca_file = app.trust_bundle_file();  // root A: the serving certificate chains to it
    co.backoff_min_ms = 20;
    co.backoff_max_ms = 200;
    push::ControllerClient c(&loop, co, nullptr);
    std::vector<std::string> bundles;
    c.on_trust_bundle = [&](const std::string& pem) { bundles.push_back(pem); };
    bool synced = false;
    c.set_update_fn([&](push::ControllerClient::Update&&) {
      synced = true;
      return std::map<std::string, std::string>{};
    });
    c.start();
    REQUIRE(spin(&loop, [&] { return synced && !bundles.empty(); }));
    CHECK(bundles.back() == to_pem(root_a.cert.get()));

    auto sign = [&](const std::string& id) {
      auto key = generate_p256_key();
      auto csr = make_csr_pem(key->get(), id);
      std::optional<Result<std::string>> got;
      c.request_certificate(id, *csr, [&](Result<std::string> r) { got = std::move(r); });
      REQUIRE(spin(&loop, [&] { return got.has_value(); }));
      REQUIRE(*got);
      auto chain = read_certs_pem(**got);
      REQUIRE(chain);
      return std::move(*chain);
    };
    // The leaf comes with intermediate A and verifies against root A only.
    {
      auto chain = sign("spiffe://cluster.local/ns/shop/sa/a");
      REQUIRE(chain.size() == 2);
      CHECK(X509_cmp(chain[1].get(), inter_a.cert.get()) == 0);
      CHECK(verify_chain(chain[0].get(), {chain[1].get()}, {root_a.cert.get()},
                         std::chrono::system_clock::now()));
    }

    // Rotation: a new intermediate under root B; root-cert.pem lists both
    // roots for the overlap. Nodes get the two-root bundle, new leaves chain
    // to B.
    Ca root_b = new_root("root B");
    Ca inter_b = new_intermediate(root_b, "intermediate B");
    REQUIRE(api.update(cacerts(inter_b, root_b, to_pem(root_a.cert.get()) + to_pem(root_b.cert.get()))));
    REQUIRE(spin(&loop, [&] { return bundles.size() >= 2; }));
    auto roots = read_certs_pem(bundles.back());
    REQUIRE(roots);
    CHECK(roots->size() == 2);
    CHECK(slurp(app.trust_bundle_file()) == bundles.back());
    CHECK(app.registry().render().find("warren_ca_secret_reloads_total{result=\"applied\"} 1") !=
          std::string::npos);
    {
      auto chain = sign("spiffe://cluster.local/ns/shop/sa/a");
      REQUIRE(chain.size() == 2);
      CHECK(X509_cmp(chain[1].get(), inter_b.cert.get()) == 0);
      CHECK(verify_chain(chain[0].get(), {chain[1].get()}, {root_b.cert.get()},
                         std::chrono::system_clock::now()));
    }

    // A broken Secret (the key of another CA) is refused; B stays in force.
    json broken = cacerts(inter_b, root_b, to_pem(root_b.cert.get()));
    broken["data"]["ca-key.pem"] = b64(to_pem(inter_a.key.get()));
    REQUIRE(api.update(broken));
    REQUIRE(spin(&loop, [&] {
      return app.registry().render().find("warren_ca_secret_reloads_total{result=\"rejected\"} 1") !=
             std::string::npos;
    }));
    size_t seen = bundles.size();
    {
      auto chain = sign("spiffe://cluster.local/ns/shop/sa/a");
      REQUIRE(chain.size() == 2);
      CHECK(X509_cmp(chain[1].get(), inter_b.cert.get()) == 0);
    }
    CHECK(bundles.size() == seen);

    c.stop();
    app.stop();
    for (int i = 0; i < 50; ++i) uv_run(&loop, UV_RUN_NOWAIT);
  }
  for (int i = 0; i < 50; ++i) uv_run(&loop, UV_RUN_NOWAIT);
  uv_loop_close(&loop);
}

TEST_CASE("controller --ca-secret: a missing or unusable Secret fails the start, naming it",
          "[controller][k8s][ca]") {
  auto fake = fakes::FakeApiServer::start();
  REQUIRE(fake);
  auto& api = **fake;
  Dir dir("casecret-bad");
  std::ofstream(dir.path + "/kubeconfig") << api.kubeconfig("test-token");
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    controller::AppOptions o;
    o.kubeconfig = dir.path + "/kubeconfig";
    o.listen = *SockAddr::parse("127.0.0.1:0");
    o.monitoring = *SockAddr::parse("127.0.0.1:0");
    o.state_dir = dir.path + "/state";
    std::string expect;
    SECTION("absent") {
      o.ca_secret = "warren-system/cacerts";
      expect = "warren-system/cacerts";
    }
    SECTION("not NAMESPACE/NAME") {
      o.ca_secret = "cacerts";
      expect = "expected <namespace>/<name>";
    }
    SECTION("no CA keys in it") {
      REQUIRE(api.create({{"apiVersion", "v1"},
                          {"kind", "Secret"},
                          {"metadata", {{"name", "other"}, {"namespace", "warren-system"}}},
                          {"data", {{"password", b64("x")}}}}));
      o.ca_secret = "warren-system/other";
      expect = "secret warren-system/other: no CA in it";
    }
    SECTION("tls.crt that is not a CA") {
      Ca root = new_root("root");
      auto key = generate_p256_key();
      REQUIRE(key);
      auto leaf = issue_workload_cert(root, key->get(), "spiffe://cluster.local/ns/a/sa/b",
                                      std::chrono::system_clock::now(), std::chrono::system_clock::now() + 1h);
      REQUIRE(leaf);
      REQUIRE(api.create({{"apiVersion", "v1"},
                          {"kind", "Secret"},
                          {"metadata", {{"name", "tls"}, {"namespace", "warren-system"}}},
                          {"type", "kubernetes.io/tls"},
                          {"data",
                           {{"tls.crt", b64(to_pem(leaf->get()))},
                            {"tls.key", b64(to_pem(key->get()))},
                            {"ca.crt", b64(to_pem(root.cert.get()))}}}}));
      o.ca_secret = "warren-system/tls";
      expect = "not a CA certificate";
    }
    controller::App app(&loop, o);
    auto r = app.start();
    REQUIRE_FALSE(r);
    INFO(r.error().message);
    CHECK(r.error().message.find(expect) != std::string::npos);
    app.stop();
    for (int i = 0; i < 50; ++i) uv_run(&loop, UV_RUN_NOWAIT);
  }
  for (int i = 0; i < 50; ++i) uv_run(&loop, UV_RUN_NOWAIT);
  uv_loop_close(&loop);
}
