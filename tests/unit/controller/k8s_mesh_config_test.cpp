// Kubernetes mode: the meshConfig ConfigMap (istio in the root namespace) is
// listed and watched alone, not every ConfigMap of the cluster.
#include <catch2/catch.hpp>

#include "fake_apiserver.h"
#include "k8s/kube_source.h"
#include "k8s_test_support.h"

using namespace warren::fakes;
using namespace warren::controller::k8s;
using nlohmann::json;

namespace {

json configmap(const std::string& ns, const std::string& name, const std::string& mesh) {
  return {{"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata", {{"name", name}, {"namespace", ns}}},
          {"data", {{"mesh", mesh}}}};
}

}  // namespace

TEST_CASE("k8s source: the istio ConfigMap of the root namespace is watched alone", "[controller][k8s][mesh_config]") {
  auto api = FakeApiServer::start({});
  REQUIRE(api.ok());
  auto& fake = **api;
  REQUIRE(fake.create(configmap("istio-system", "istio", "extensionProviders: []")).ok());
  REQUIRE(fake.create(configmap("shop", "istio", "not: this one")).ok());
  TestLoop loop;
  RecordingSink sink;
  SourceOptions o = fast_options();
  o.kinds = {"Namespace"};
  o.mesh_config_namespace = "istio-system";
  auto src = KubernetesSource::create(loop.get(), fake_config(fake), o);
  REQUIRE(src.ok());
  (*src)->start(&sink);
  REQUIRE(loop.run_until([&] { return sink.synced_count == 1 && fake.open_watches("ConfigMap") == 1; }));
  CHECK(sink.has("ConfigMap", "istio-system", "istio"));
  CHECK_FALSE(sink.has("ConfigMap", "shop", "istio"));
  bool listed = false, watched = false;
  for (const auto& r : fake.requests()) {
    if (r.path != "/api/v1/namespaces/istio-system/configmaps") continue;
    CHECK(r.param("fieldSelector") == "metadata.name=istio");
    (r.is_watch() ? watched : listed) = true;
  }
  CHECK(listed);
  CHECK(watched);

  // An edit and a removal come through the watch.
  REQUIRE(fake.apply(configmap("istio-system", "istio", "extensionProviders: [{name: a}]")).ok());
  REQUIRE(loop.run_until([&] {
    return sink.object("ConfigMap", "istio-system", "istio").value("data", json::object()).value("mesh", "") ==
           "extensionProviders: [{name: a}]";
  }));
  REQUIRE(fake.remove("ConfigMap", "istio-system", "istio").ok());
  REQUIRE(loop.run_until([&] { return !sink.has("ConfigMap", "istio-system", "istio"); }));
}
