// warren-controller in Kubernetes mode, in process, against the fake API
// server: a node authenticates with its service account token (TokenReview),
// gets the cluster's workloads, follows a change, and obtains a certificate.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <thread>

#include "app.h"
#include "controller_client.h"
#include "fake_apiserver.h"
#include "warren/csr.h"

using namespace warren;
using nlohmann::json;

namespace {

bool spin(uv_loop_t* loop, const std::function<bool()>& cond, int ms = 10000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    uv_run(loop, UV_RUN_NOWAIT);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

json pod(const std::string& name, const std::string& node, const std::string& ip) {
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata", {{"name", name}, {"namespace", "shop"}, {"uid", "uid-" + name},
                        {"labels", {{"app", name}}}}},
          {"spec", {{"nodeName", node}, {"serviceAccountName", name}}},
          {"status", {{"phase", "Running"}, {"podIP", ip}, {"podIPs", {{{"ip", ip}}}}}}};
}

}  // namespace

TEST_CASE("controller in Kubernetes mode serves a node authenticated by TokenReview",
          "[controller][k8s][push]") {
  auto fake = fakes::FakeApiServer::start();
  REQUIRE(fake);
  auto& api = **fake;
  REQUIRE(api.create(json::parse(R"({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop",
      "labels":{"warren.io/dataplane-mode":"enabled"}}})")));
  REQUIRE(api.create(pod("a", "node-1", "10.1.0.1")));
  REQUIRE(api.create(pod("z", "node-2", "10.2.0.1")));
  const std::string node_token = "node-1-service-account-token";
  api.set_token_review(node_token,
                       {{"username", "system:serviceaccount:warren-system:warren-node"},
                        {"uid", "u1"},
                        {"extra", {{"authentication.kubernetes.io/node-name", {"node-1"}}}}});

  std::string dir = std::filesystem::temp_directory_path() / ("warren-appk8s-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/kubeconfig") << api.kubeconfig("test-token");
  std::ofstream(dir + "/node-token") << node_token;

  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    controller::AppOptions o;
    o.kubeconfig = dir + "/kubeconfig";
    o.listen = *SockAddr::parse("127.0.0.1:0");
    o.monitoring = *SockAddr::parse("127.0.0.1:0");
    o.state_dir = dir + "/state";
    controller::App app(&loop, o);
    REQUIRE(app.start());

    node::ControllerClientOptions co;
    co.address = app.push_address();
    co.node = "node-1";
    co.token_file = dir + "/node-token";
    co.ca_file = app.trust_bundle_file();
    co.backoff_min_ms = 20;
    co.backoff_max_ms = 200;
    std::map<std::string, json> held;
    node::ControllerClient c(&loop, co, nullptr);
    c.set_update_fn([&](node::ControllerClient::Update&& u) {
      if (u.snapshot) held.clear();
      for (auto& id : u.removes) held.erase(id);
      for (auto& [id, body] : u.upserts) held[id] = std::move(body);
      return std::map<std::string, std::string>{};
    });
    c.start();
    REQUIRE(spin(&loop, [&] { return held.count("workload/uid-a") && held.count("workload/uid-z"); }));
    CHECK(held.count("namespace/shop") == 1);

    // A change in the API server reaches the node as a delta.
    REQUIRE(api.create(pod("b", "node-1", "10.1.0.2")));
    REQUIRE(spin(&loop, [&] { return held.count("workload/uid-b") == 1; }));
    REQUIRE(api.remove("Pod", "shop", "z"));
    REQUIRE(spin(&loop, [&] { return held.count("workload/uid-z") == 0; }));

    // Certificates: only for identities of pods on node-1.
    auto ask = [&](const std::string& id) {
      auto key = certs::generate_p256_key();
      auto csr = certs::make_csr_pem(key->get(), id);
      std::optional<Result<std::string>> got;
      c.request_certificate(id, *csr, [&](Result<std::string> r) { got = std::move(r); });
      REQUIRE(spin(&loop, [&] { return got.has_value(); }));
      return std::move(*got);
    };
    CHECK(ask("spiffe://cluster.local/ns/shop/sa/b"));
    auto refused = ask("spiffe://cluster.local/ns/shop/sa/z");
    CHECK_FALSE(refused);

    // A token the API server does not authenticate is refused.
    std::ofstream(dir + "/bad-token") << "stolen";
    co.token_file = dir + "/bad-token";
    node::ControllerClient bad(&loop, co, nullptr);
    bad.set_update_fn([](node::ControllerClient::Update&&) { return std::map<std::string, std::string>{}; });
    bad.start();
    REQUIRE(spin(&loop, [&] { return bad.last_error().find("not authenticated") != std::string::npos; }));
    bad.stop();
    c.stop();
    app.stop();
    for (int i = 0; i < 50; ++i) uv_run(&loop, UV_RUN_NOWAIT);
  }
  for (int i = 0; i < 50; ++i) uv_run(&loop, UV_RUN_NOWAIT);
  uv_loop_close(&loop);
  std::filesystem::remove_all(dir);
}
