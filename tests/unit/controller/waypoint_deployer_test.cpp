// WaypointDeployer against the fake API server: the leader creates, updates
// and deletes the objects of the waypoint template (the chart's file) for
// each warren-waypoint Gateway; a follower leaves them alone.
#include <catch2/catch.hpp>

#include "k8s_test_support.h"
#include "waypoint_deployer.h"

using namespace warren;
using namespace warren::controller;
using nlohmann::json;

namespace {

const std::string kTemplate = std::string(WARREN_SRC_DIR) + "/charts/warren/files/waypoint.yaml";

WaypointGateway gw(const std::string& name, const std::string& sa = "") {
  return {"shop", name, sa.empty() ? name : sa, "", "uid-" + name};
}

struct DeployerFixture {
  fakes::TestLoop loop;
  std::unique_ptr<fakes::FakeApiServer> api;
  std::unique_ptr<k8s::Client> client;
  std::unique_ptr<WaypointDeployer> d;
  std::vector<std::string> done;
  DeployerFixture() {
    auto a = fakes::FakeApiServer::start();
    REQUIRE(a);
    api = std::move(*a);
    auto c = k8s::Client::create(loop.get(), fakes::fake_config(*api));
    REQUIRE(c);
    client = std::move(*c);
    WaypointDeployerOptions o;
    o.template_file = kTemplate;
    o.image = "registry.example/warren-waypoint:1.0";
    o.controller = "warren-controller.warren-system.svc:15012";
    o.retry = std::chrono::milliseconds(50);
    auto dd = WaypointDeployer::create(loop.get(), *client, o);
    REQUIRE(dd);
    d = std::move(*dd);
    d->set_trust_bundle("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    d->on_done = [this](const std::string& action, const std::string& key, const std::string& err) {
      done.push_back(action + " " + key + (err.empty() ? "" : " error"));
    };
  }
  ~DeployerFixture() {
    d.reset();
    client.reset();
  }
};

}  // namespace

TEST_CASE("waypoint deployer: the leader applies the template's objects owned by the Gateway", "[controller][k8s][waypoint]") {
  DeployerFixture f;
  f.d->set_leader(true);
  f.d->sync({{"shop/wp", gw("wp")}});
  REQUIRE(f.loop.run_until([&] { return f.d->applied().count("shop/wp"); }));
  auto dep = f.api->get("Deployment", "shop", "wp");
  REQUIRE(dep);
  const json& md = (*dep)["metadata"];
  CHECK(md["labels"]["gateway.networking.k8s.io/gateway-name"] == "wp");
  REQUIRE(md["ownerReferences"].size() == 1);
  CHECK(md["ownerReferences"][0]["kind"] == "Gateway");
  CHECK(md["ownerReferences"][0]["name"] == "wp");
  CHECK(md["ownerReferences"][0]["uid"] == "uid-wp");
  const json& pod = (*dep)["spec"]["template"];
  CHECK(pod["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"] == "wp");
  CHECK(pod["spec"]["serviceAccountName"] == "wp");
  const json& c = pod["spec"]["containers"][0];
  CHECK(c["image"] == "registry.example/warren-waypoint:1.0");
  std::vector<std::string> args = c["args"];
  CHECK(std::find(args.begin(), args.end(), "shop/wp") != args.end());
  CHECK(std::find(args.begin(), args.end(), "warren-controller.warren-system.svc:15012") != args.end());
  auto sa = f.api->get("ServiceAccount", "shop", "wp");
  REQUIRE(sa);
  CHECK((*sa)["metadata"]["ownerReferences"][0]["uid"] == "uid-wp");
  auto ca = f.api->get("ConfigMap", "shop", "wp-warren-ca");
  REQUIRE(ca);
  CHECK((*ca)["data"]["root-cert.pem"] == "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
  CHECK(pod["spec"]["volumes"][1]["configMap"]["name"] == "wp-warren-ca");
  auto svc = f.api->get("Service", "shop", "wp");
  REQUIRE(svc);
  CHECK((*svc)["spec"]["selector"]["gateway.networking.k8s.io/gateway-name"] == "wp");
  CHECK((*svc)["spec"]["ports"][0]["port"] == 15008);
}

TEST_CASE("waypoint deployer: a changed Gateway updates its objects and a removed one deletes them", "[controller][k8s][waypoint]") {
  DeployerFixture f;
  f.d->set_leader(true);
  f.d->sync({{"shop/wp", gw("wp")}});
  REQUIRE(f.loop.run_until([&] { return f.d->applied().count("shop/wp"); }));
  // Another service account (gateway.istio.io/service-account): the existing
  // Deployment is patched, a new ServiceAccount created.
  f.d->sync({{"shop/wp", gw("wp", "custom")}});
  REQUIRE(f.loop.run_until([&] { return f.d->applied().count("shop/wp") && f.d->applied().at("shop/wp").service_account == "custom"; }));
  CHECK((*f.api->get("Deployment", "shop", "wp"))["spec"]["template"]["spec"]["serviceAccountName"] == "custom");
  CHECK(f.api->get("ServiceAccount", "shop", "custom"));
  // The Gateway's removal deletes the objects (the first ServiceAccount,
  // "wp", is left to the garbage collector: it is owned by the Gateway).
  f.d->sync({});
  REQUIRE(f.loop.run_until([&] { return f.d->applied().empty(); }));
  CHECK_FALSE(f.api->get("Deployment", "shop", "wp"));
  CHECK_FALSE(f.api->get("Service", "shop", "wp"));
  CHECK_FALSE(f.api->get("ServiceAccount", "shop", "custom"));
  CHECK_FALSE(f.api->get("ConfigMap", "shop", "wp-warren-ca"));
  CHECK(f.done.back() == "delete shop/wp");
}

TEST_CASE("waypoint deployer: a follower writes nothing and a new leader applies everything", "[controller][k8s][waypoint]") {
  DeployerFixture f;
  f.d->sync({{"shop/wp", gw("wp")}});
  f.loop.run_for(std::chrono::milliseconds(200));
  CHECK_FALSE(f.api->get("Deployment", "shop", "wp"));
  CHECK(f.done.empty());
  // An object already there (a previous leader's) is brought to the template.
  json stale = {{"apiVersion", "apps/v1"},
                {"kind", "Deployment"},
                {"metadata", {{"name", "wp"}, {"namespace", "shop"}}},
                {"spec", {{"replicas", 3}}}};
  REQUIRE(f.api->create(stale));
  f.d->set_leader(true);
  REQUIRE(f.loop.run_until([&] { return f.d->applied().count("shop/wp"); }));
  auto dep = f.api->get("Deployment", "shop", "wp");
  REQUIRE(dep);
  CHECK((*dep)["spec"]["template"]["spec"]["serviceAccountName"] == "wp");
  CHECK((*dep)["metadata"]["ownerReferences"][0]["uid"] == "uid-wp");
}

TEST_CASE("waypoint deployer: new CA roots are applied to every waypoint", "[controller][k8s][waypoint]") {
  DeployerFixture f;
  f.d->set_leader(true);
  f.d->sync({{"shop/wp", gw("wp")}, {"shop/other", gw("other")}});
  REQUIRE(f.loop.run_until([&] { return f.d->applied().size() == 2; }));
  f.d->set_trust_bundle("ROOTS-2");
  REQUIRE(f.loop.run_until([&] {
    auto a = f.api->get("ConfigMap", "shop", "wp-warren-ca"), b = f.api->get("ConfigMap", "shop", "other-warren-ca");
    return a && b && (*a)["data"]["root-cert.pem"] == "ROOTS-2" && (*b)["data"]["root-cert.pem"] == "ROOTS-2";
  }));
}

TEST_CASE("waypoint deployer: a failed API call is retried", "[controller][k8s][waypoint]") {
  DeployerFixture f;
  f.api->fail_requests("POST", "/apis/apps/v1/namespaces/shop/deployments", 500, 2);
  f.d->set_leader(true);
  f.d->sync({{"shop/wp", gw("wp")}});
  REQUIRE(f.loop.run_until([&] { return f.d->applied().count("shop/wp"); }));
  CHECK(f.done.size() == 3);
  CHECK(f.done[0] == "apply shop/wp error");
  CHECK(f.api->get("Deployment", "shop", "wp"));
}

TEST_CASE("waypoint deployer: a template with an unknown variable or kind is refused with its file name", "[controller][k8s][waypoint]") {
  fakes::TestLoop loop;
  auto api = fakes::FakeApiServer::start();
  REQUIRE(api);
  auto client = k8s::Client::create(loop.get(), fakes::fake_config(**api));
  REQUIRE(client);
  fakes::TempDir dir;
  WaypointDeployerOptions o;
  o.template_file = dir.write("bad.yaml", "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: \"${NAME_TYPO}\"\n");
  auto d = WaypointDeployer::create(loop.get(), **client, o);
  REQUIRE_FALSE(d);
  CHECK(d.error().message == o.template_file + ": unknown variable ${NAME_TYPO}");
  o.template_file = dir.write("kind.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: \"${NAME}\"\n");
  d = WaypointDeployer::create(loop.get(), **client, o);
  REQUIRE_FALSE(d);
  CHECK(d.error().message.rfind(o.template_file + ": document at line 1: kind \"Namespace\"", 0) == 0);
}
