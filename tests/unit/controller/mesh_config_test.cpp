// meshConfig (the ConfigMap istio of the root namespace): extensionProviders
// validated as warren-waypoint reads them and pushed in every waypoint block.
#include <catch2/catch.hpp>

#include "ext_authz.h"
#include "mesh_config.h"
#include "model.h"
#include "model_fixtures.h"

using namespace warren;
using nlohmann::json;

namespace {

json configmap(const std::string& mesh, const std::string& ns = "istio-system", const std::string& name = "istio") {
  return {{"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata", {{"name", name}, {"namespace", ns}}},
          {"data", {{"mesh", mesh}}}};
}

// As Istio users write it (istioctl's default mesh config plus providers).
const char* kMesh = R"(defaultConfig:
  discoveryAddress: istiod.istio-system.svc:15012
enablePrometheusMerge: true
extensionProviders:
- name: ext-authz
  envoyExtAuthzHttp:
    service: ext-authz.foo.svc.cluster.local
    port: "8000"
    timeout: 2s
    pathPrefix: /check
    failOpen: false
    statusOnError: "503"
    includeRequestHeadersInCheck: ["x-ext-authz"]
    headersToUpstreamOnAllow: ["x-ext-authz-*"]
    headersToDownstreamOnDeny: ["content-type", "x-ext-authz-*"]
- name: otel
  opentelemetry:
    service: otel-collector.observability.svc.cluster.local
    port: 4317
- name: broken
  envoyExtAuthzHttp:
    service: broken.foo.svc.cluster.local
    timeout: soon
- name: grpc-authz
  envoyExtAuthzGrpc:
    service: grpc-authz.foo.svc.cluster.local
    port: 9000
- name: ext-authz
  envoyExtAuthzHttp:
    service: again.foo.svc.cluster.local
    port: 80
- name: body
  envoyExtAuthzHttp:
    service: body.foo.svc.cluster.local
    port: 80
    includeRequestBodyInCheck: {maxRequestBytes: 100}
)";

json waypoint_pod(const std::string& name, const std::string& gw, const std::string& ip) {
  return fixtures::pod("shop", name, ip, {{"gateway.networking.k8s.io/gateway-name", gw}}, "node-a", gw);
}

const json* resource(const controller::Model& m, const std::string& id) {
  auto it = m.resources().find(id);
  return it == m.resources().end() ? nullptr : it->second.get();
}

}  // namespace

TEST_CASE("mesh config: envoyExtAuthzHttp providers are kept and a bad one is left out alone", "[controller][mesh_config]") {
  auto r = controller::mesh_config_from_configmap(configmap(kMesh));
  CHECK_FALSE(r.fatal);
  const json& eps = r.config.extension_providers;
  REQUIRE(eps.size() == 1);
  CHECK(eps[0]["name"] == "ext-authz");
  CHECK(eps[0]["envoyExtAuthzHttp"]["port"] == 8000);  // the quoted port as a number
  CHECK(eps[0]["envoyExtAuthzHttp"]["service"] == "ext-authz.foo.svc.cluster.local");
  std::string all;
  for (const auto& p : r.problems) all += p.path + ": " + p.message + "\n";
  INFO(all);
  REQUIRE(r.problems.size() == 5);
  CHECK(r.problems[0].path == "data.mesh.extensionProviders[2].envoyExtAuthzHttp.port");
  CHECK(r.problems[1].path == "data.mesh.extensionProviders[2].envoyExtAuthzHttp.timeout");
  CHECK(r.problems[1].message.find("provider left out") != std::string::npos);
  CHECK(r.problems[2].path == "data.mesh.extensionProviders[3].envoyExtAuthzGrpc");
  CHECK(r.problems[3].path == "data.mesh.extensionProviders[4].name");
  CHECK(r.problems[3].message.find("already the name") != std::string::npos);
  CHECK(r.problems[4].path == "data.mesh.extensionProviders[5].envoyExtAuthzHttp.includeRequestBodyInCheck");

  // What the controller accepts, the waypoint reads (same parser as its file mode).
  for (size_t i = 0; i < eps.size(); ++i) {
    auto p = waypoint::parse_ext_authz_provider(eps[i], "/extensionProviders/" + std::to_string(i));
    INFO((p.ok() ? std::string() : p.error().message));
    REQUIRE(p.ok());
    CHECK(p->port == 8000);
    CHECK(p->status_on_error == 503);
    CHECK(p->path_prefix == "/check");
  }
}

TEST_CASE("mesh config: an unreadable mesh rejects the ConfigMap and an empty one has no providers", "[controller][mesh_config]") {
  auto r = controller::mesh_config_from_configmap(configmap("extensionProviders: [unclosed"));
  CHECK(r.fatal);
  REQUIRE(r.problems.size() == 1);
  CHECK(r.problems[0].path == "data.mesh");
  r = controller::mesh_config_from_configmap(configmap("extensionProviders: {name: x}"));
  CHECK(r.fatal);
  CHECK(r.problems.at(0).path == "data.mesh.extensionProviders");
  json no_mesh = configmap("");
  no_mesh.erase("data");
  r = controller::mesh_config_from_configmap(no_mesh);
  CHECK_FALSE(r.fatal);
  CHECK(r.problems.empty());
  CHECK(r.config.extension_providers.empty());
  r = controller::mesh_config_from_configmap(configmap("accessLogFile: /dev/stdout\n"));
  CHECK(r.problems.empty());
  CHECK(r.config.extension_providers.empty());
}

TEST_CASE("model: the providers of the istio ConfigMap go into every waypoint block and a change re-pushes", "[controller][model][mesh_config][waypoint]") {
  controller::Model m({});
  m.upsert("t", waypoint_pod("wp-1", "wp", "10.1.0.9"));
  m.upsert("t", waypoint_pod("wp-2", "wp", "10.1.0.10"));
  m.upsert("t", fixtures::pod("shop", "app", "10.1.0.1"));
  m.flush();
  const std::string b1 = "waypoint/shop/wp/wp-1", b2 = "waypoint/shop/wp/wp-2";
  REQUIRE(resource(m, b1));
  CHECK_FALSE(resource(m, b1)->contains("extensionProviders"));

  // The meshConfig arrives: both blocks change, nothing else; the bad
  // providers are reported against the ConfigMap, the good one applies.
  m.upsert("shop/mesh.yaml", configmap(kMesh));
  auto d = m.flush();
  CHECK(fixtures::ids(d) == std::vector<std::string>{b1, b2});
  REQUIRE(resource(m, b1)->contains("extensionProviders"));
  CHECK((*resource(m, b1))["extensionProviders"] == m.mesh_config().extension_providers);
  CHECK((*resource(m, b2))["extensionProviders"][0]["name"] == "ext-authz");
  auto rej = m.rejected();
  REQUIRE(rej.count({"ConfigMap", "istio-system", "istio"}));
  std::string msg = rej.at({"ConfigMap", "istio-system", "istio"});
  CHECK(msg.find("shop/mesh.yaml: ConfigMap istio-system/istio: data.mesh.extensionProviders[2].envoyExtAuthzHttp.port") !=
        std::string::npos);

  // The same again: nothing to push. A valid edit clears the rejection and re-pushes.
  m.upsert("shop/mesh.yaml", configmap(kMesh));
  CHECK(m.flush().empty());
  m.upsert("shop/mesh.yaml", configmap("extensionProviders:\n- name: a\n  envoyExtAuthzHttp: {service: 10.1.0.50, port: 80}\n"));
  CHECK(fixtures::ids(m.flush()) == std::vector<std::string>{b1, b2});
  CHECK(m.rejected().empty());
  CHECK((*resource(m, b1))["extensionProviders"][0]["name"] == "a");

  // An unreadable mesh is rejected whole: the last good providers stay.
  m.upsert("shop/mesh.yaml", configmap("extensionProviders: ["));
  CHECK(m.flush().empty());
  CHECK(m.rejected().size() == 1);
  CHECK((*resource(m, b1))["extensionProviders"][0]["name"] == "a");

  // Other ConfigMaps (another name, another namespace) change nothing.
  m.upsert("t", configmap("extensionProviders: []", "istio-system", "istio-sidecar-injector"));
  m.upsert("t", configmap("extensionProviders: []", "shop", "istio"));
  CHECK(m.flush().empty());

  // A waypoint pod that comes later gets them too; removing the ConfigMap removes them.
  m.upsert("t", waypoint_pod("wp-3", "wp", "10.1.0.11"));
  m.flush();
  CHECK((*resource(m, "waypoint/shop/wp/wp-3"))["extensionProviders"][0]["name"] == "a");
  m.remove({"ConfigMap", "istio-system", "istio"});
  CHECK(fixtures::ids(m.flush()) == std::vector<std::string>{b1, b2, "waypoint/shop/wp/wp-3"});
  CHECK_FALSE(resource(m, b1)->contains("extensionProviders"));
  CHECK(m.rejected().empty());
}

TEST_CASE("model: the meshConfig ConfigMap follows --root-namespace", "[controller][model][mesh_config]") {
  controller::ModelOptions mo;
  mo.root_namespace = "mesh-root";
  controller::Model m(mo);
  m.upsert("t", waypoint_pod("wp-1", "wp", "10.1.0.9"));
  m.upsert("t", configmap("extensionProviders:\n- name: a\n  envoyExtAuthzHttp: {service: x, port: 80}\n"));
  m.flush();
  CHECK_FALSE(resource(m, "waypoint/shop/wp/wp-1")->contains("extensionProviders"));
  m.upsert("t", configmap("extensionProviders:\n- name: a\n  envoyExtAuthzHttp: {service: x, port: 80}\n", "mesh-root"));
  CHECK(fixtures::ids(m.flush()) == std::vector<std::string>{"waypoint/shop/wp/wp-1"});
  CHECK(m.mesh_config().extension_providers.size() == 1);
}
