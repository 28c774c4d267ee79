// warren-controller in Kubernetes mode, in process, against the fake API
// server: a node authenticates with its service account token (TokenReview),
// gets the cluster's workloads, follows a change, and obtains a certificate;
// a waypoint does the same as a waypoint of its namespace.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <thread>

#include "app.h"
#include "warren/controller_client.h"
#include "fake_apiserver.h"
#include "loop_util.h"
#include "warren/csr.h"

using namespace warren;
using warren::test::spin;
using nlohmann::json;

namespace {

json pod(const std::string& name, const std::string& node, const std::string& ip) {
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata", {{"name", name}, {"namespace", "shop"}, {"uid", "uid-" + name},
                        {"labels", {{"app", name}}}}},
          {"spec", {{"nodeName", node}, {"serviceAccountName", name}}},
          {"status", {{"phase", "Running"}, {"podIP", ip}, {"podIPs", {{{"ip", ip}}}}}}};
}

// warren-controller on the fake, with its own temp dir and loop. Clients
// made with client() keep the resources they are sent in `held`.
struct K8sApp {
  std::string dir;
  uv_loop_t loop;
  std::unique_ptr<controller::App> app;
  std::map<std::string, json> held;

  K8sApp(fakes::FakeApiServer& api, const std::function<void(controller::AppOptions&)>& more = {}) {
    dir = std::filesystem::temp_directory_path() / ("warren-appk8s-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/kubeconfig") << api.kubeconfig("test-token");
    uv_loop_init(&loop);
    controller::AppOptions o;
    o.kubeconfig = dir + "/kubeconfig";
    o.listen = *SockAddr::parse("127.0.0.1:0");
    o.monitoring = *SockAddr::parse("127.0.0.1:0");
    o.state_dir = dir + "/state";
    if (more) more(o);
    app = std::make_unique<controller::App>(&loop, o);
  }
  ~K8sApp() {
    app->stop();
    for (int i = 0; i < 50; ++i) uv_run(&loop, UV_RUN_NOWAIT);
    app.reset();
    for (int i = 0; i < 50; ++i) uv_run(&loop, UV_RUN_NOWAIT);
    uv_loop_close(&loop);
    std::filesystem::remove_all(dir);
  }
  // A client acting as `who` with the token `token` (written to a file).
  std::unique_ptr<push::ControllerClient> client(const std::string& who, const std::string& token,
                                                 const std::string& pod = "") {
    std::string file = dir + "/token-" + std::to_string(++tokens_);
    std::ofstream(file) << token;
    push::ControllerClientOptions co;
    co.address = app->push_address();
    co.node = who;
    co.pod = pod;
    co.token_file = file;
    co.ca_file = app->trust_bundle_file();
    co.backoff_min_ms = 20;
    co.backoff_max_ms = 200;
    auto c = std::make_unique<push::ControllerClient>(&loop, co, nullptr);
    c->set_update_fn([this](push::ControllerClient::Update&& u) {
      if (u.snapshot) held.clear();
      for (auto& id : u.removes) held.erase(id);
      for (auto& [id, body] : u.upserts) held[id] = std::move(body);
      return std::map<std::string, std::string>{};
    });
    c->start();
    return c;
  }

 private:
  int tokens_ = 0;
};

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

  K8sApp k(api);
  REQUIRE(k.app->start());
  auto c = k.client("node-1", node_token);
  auto& held = k.held;
  REQUIRE(spin(&k.loop, [&] { return held.count("workload/uid-a") && held.count("workload/uid-z"); }));
  CHECK(held.count("namespace/shop") == 1);

  // A change in the API server reaches the node as a delta.
  REQUIRE(api.create(pod("b", "node-1", "10.1.0.2")));
  REQUIRE(spin(&k.loop, [&] { return held.count("workload/uid-b") == 1; }));
  REQUIRE(api.remove("Pod", "shop", "z"));
  REQUIRE(spin(&k.loop, [&] { return held.count("workload/uid-z") == 0; }));

  // Certificates: only for identities of pods on node-1.
  auto ask = [&](const std::string& id) { return test::ask_certificate(&k.loop, *c, id); };
  CHECK(ask("spiffe://cluster.local/ns/shop/sa/b"));
  auto refused = ask("spiffe://cluster.local/ns/shop/sa/z");
  CHECK_FALSE(refused);

  // A token the API server does not authenticate is refused.
  auto bad = k.client("node-1", "stolen");
  REQUIRE(spin(&k.loop, [&] { return bad->last_error().find("not authenticated") != std::string::npos; }));
  bad->stop();
  c->stop();
}

// Waypoints: a waypoint pod's service account token (TokenReview) subscribes
// as a waypoint of its namespace and gets only its own identity; the leader
// deploys the waypoint template for the Gateway.
TEST_CASE("controller in Kubernetes mode authenticates and deploys waypoints", "[controller][k8s][waypoint]") {
  auto fake = fakes::FakeApiServer::start();
  REQUIRE(fake);
  auto& api = **fake;
  REQUIRE(api.create(json::parse(R"({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop",
      "labels":{"warren.io/dataplane-mode":"enabled"}}})")));
  REQUIRE(api.create(json::parse(R"({"apiVersion":"gateway.networking.k8s.io/v1","kind":"Gateway",
      "metadata":{"name":"wp","namespace":"shop","uid":"gw-uid-1"},
      "spec":{"gatewayClassName":"warren-waypoint","listeners":[{"name":"mesh","port":15008,"protocol":"HBONE"}]}})")));
  REQUIRE(api.create(json::parse(R"({"apiVersion":"v1","kind":"Pod",
      "metadata":{"name":"wp-7f9c","namespace":"shop","uid":"uid-wp-7f9c",
                  "labels":{"gateway.networking.k8s.io/gateway-name":"wp"}},
      "spec":{"nodeName":"node-1","serviceAccountName":"wp"},
      "status":{"phase":"Running","podIP":"10.1.0.9","podIPs":[{"ip":"10.1.0.9"}]}})")));
  REQUIRE(api.create(json::parse(R"({"apiVersion":"networking.istio.io/v1","kind":"VirtualService",
      "metadata":{"name":"reviews","namespace":"shop"},
      "spec":{"hosts":["reviews"],"http":[{"route":[{"destination":{"host":"reviews"}}]}]}})")));
  api.set_token_review("wp-token", {{"username", "system:serviceaccount:shop:wp"}, {"uid", "u-wp"}});
  api.set_token_review("other-ns-token", {{"username", "system:serviceaccount:other:wp"}, {"uid", "u-o"}});

  K8sApp k(api, [](controller::AppOptions& o) {
    o.waypoint_template = std::string(WARREN_SRC_DIR) + "/charts/warren/files/waypoint.yaml";
    o.waypoint_image = "example/waypoint:test";
  });
  REQUIRE(k.app->start());
  auto c = k.client("waypoint:shop/wp", "wp-token", "wp-7f9c");
  auto& held = k.held;
  REQUIRE(spin(&k.loop, [&] { return held.count("waypoint/shop/wp/wp-7f9c") && held.count("virtualservice/shop/reviews"); }));
  CHECK(held.at("waypoint/shop/wp/wp-7f9c")["address"] == "10.1.0.9");

  // Only the identity of the token's service account.
  auto ask = [&](const std::string& id) { return test::ask_certificate(&k.loop, *c, id); };
  CHECK(ask("spiffe://cluster.local/ns/shop/sa/wp"));
  auto other = ask("spiffe://cluster.local/ns/shop/sa/default");
  REQUIRE_FALSE(other);
  CHECK(other.error().message.find("may only obtain spiffe://cluster.local/ns/shop/sa/wp") != std::string::npos);

  // A service account of another namespace may not act as this waypoint.
  auto bad = k.client("waypoint:shop/wp", "other-ns-token", "wp-7f9c");
  REQUIRE(spin(&k.loop, [&] { return bad->last_error().find("may not act as a waypoint of namespace shop") != std::string::npos; }));

  // The leader deployed the waypoint template for the Gateway.
  REQUIRE(spin(&k.loop, [&] { return api.get("Service", "shop", "wp").has_value(); }));
  auto dep = api.get("Deployment", "shop", "wp");
  REQUIRE(dep);
  CHECK((*dep)["metadata"]["ownerReferences"][0]["uid"] == "gw-uid-1");
  CHECK((*dep)["spec"]["template"]["spec"]["containers"][0]["image"] == "example/waypoint:test");
  auto ca = api.get("ConfigMap", "shop", "wp-warren-ca");
  REQUIRE(ca);
  CHECK((*ca)["data"]["root-cert.pem"].get<std::string>().find("BEGIN CERTIFICATE") != std::string::npos);
  bad->stop();
  c->stop();
}
