// The Kubernetes source against the fake API server: initial sync, every
// kind's add/update/delete, paging, absent CRDs.
#include <catch2/catch.hpp>

#include "fake_apiserver.h"
#include "k8s/kube_source.h"
#include "k8s_test_support.h"

using namespace warren::fakes;
using namespace warren::controller::k8s;
using warren::controller::ObjectKey;

namespace {

std::unique_ptr<FakeApiServer> start_fake(FakeApiServerOptions o = {}) {
  auto api = FakeApiServer::start(std::move(o));
  REQUIRE(api.ok());
  return std::move(*api);
}

std::unique_ptr<KubernetesSource> make_source(TestLoop& loop, FakeApiServer& api,
                                              SourceOptions o = fast_options()) {
  auto src = KubernetesSource::create(loop.get(), fake_config(api), std::move(o));
  REQUIRE(src.ok());
  return std::move(*src);
}

}  // namespace

TEST_CASE("k8s source: initial sync of all kinds", "[controller][k8s]") {
  auto api = start_fake();
  create_all_kinds(*api);
  TestLoop loop;
  RecordingSink sink;
  auto src = make_source(loop, *api);
  src->start(&sink);
  REQUIRE(loop.run_until([&] { return sink.synced_count == 1; }));
  CHECK(src->synced());
  CHECK(src->object_count() == 13);
  // synced() comes after every object of every kind.
  REQUIRE(sink.log.back().op == 'S');
  CHECK(sink.ops('U') == 13);
  for (const auto& [kind, file] : testdata_by_kind()) {
    INFO(kind);
    auto want = load_testdata(file);
    std::string ns = want["metadata"].value("namespace", "");
    std::string name = want["metadata"]["name"];
    auto got = sink.object(kind, ns, name);
    REQUIRE(got.is_object());
    // kind/apiVersion restored on list items, the rest as served.
    CHECK(got["kind"] == want["kind"]);
    CHECK(got["apiVersion"] == want["apiVersion"]);
    CHECK(got["spec"] == want.value("spec", nlohmann::json()));
  }
  auto pod = sink.object("Pod", "shop", "reviews-v1-7d9f8c6b5-x2k4p");
  CHECK(pod["status"]["podIPs"][1]["ip"] == "fd00:10:244:1::11");
  CHECK(pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet");
  for (const auto& o : sink.origins) CHECK(o == "kubernetes");

  // Every kind is watched from its list's resourceVersion, with bookmarks.
  REQUIRE(loop.run_until([&] { return api->open_watches("") == 13; }));
  std::string list_rv = std::to_string(api->resource_version());
  for (const auto& r : api->requests()) {
    if (!r.is_watch()) continue;
    CHECK(r.param("allowWatchBookmarks") == "true");
    CHECK(r.param("resourceVersion") == list_rv);
    CHECK(r.status == 200);
  }
  CHECK(sink.synced_count == 1);
}

TEST_CASE("k8s source: add update and delete of each kind reach the sink", "[controller][k8s]") {
  auto api = start_fake();
  TestLoop loop;
  RecordingSink sink;
  auto src = make_source(loop, *api);
  src->start(&sink);
  REQUIRE(loop.run_until([&] { return sink.synced_count == 1 && api->open_watches("") == 13; }));
  CHECK(sink.objects.empty());

  for (const auto& [kind, file] : testdata_by_kind()) {
    INFO(kind);
    auto obj = load_testdata(file);
    std::string ns = obj["metadata"].value("namespace", "");
    std::string name = obj["metadata"]["name"].get<std::string>() + "-2";
    obj["metadata"]["name"] = name;
    REQUIRE(api->create(obj).ok());
    REQUIRE(loop.run_until([&] { return sink.has(kind, ns, name); }));
    CHECK(sink.object(kind, ns, name)["kind"] == kind);

    obj["metadata"]["labels"]["changed"] = "yes";
    REQUIRE(api->update(obj).ok());
    REQUIRE(loop.run_until([&] {
      auto o = sink.object(kind, ns, name);
      return o.is_object() &&
             o["metadata"].value("labels", nlohmann::json::object()).value("changed", "") == "yes";
    }));

    REQUIRE(api->remove(kind, ns, name).ok());
    REQUIRE(loop.run_until([&] { return !sink.has(kind, ns, name); }));
    CHECK(sink.removes_of(kind, ns, name) == 1);
  }
  CHECK(src->object_count() == 0);
  // Nothing was relisted: one list per kind.
  size_t lists = 0;
  for (const auto& r : api->requests()) lists += r.is_watch() || r.method != "GET" ? 0 : 1;
  CHECK(lists == 13);
}

TEST_CASE("k8s source: lists page by page with limit and continue", "[controller][k8s]") {
  auto api = start_fake();
  auto pod = load_testdata("pod.json");
  for (int i = 0; i < 7; ++i) {
    pod["metadata"]["name"] = "web-" + std::to_string(i);
    REQUIRE(api->create(pod).ok());
  }
  TestLoop loop;
  RecordingSink sink;
  SourceOptions o = fast_options();
  o.kinds = {"Pod"};
  o.watch.page_size = 3;
  auto src = make_source(loop, *api, o);
  src->start(&sink);
  REQUIRE(loop.run_until([&] { return sink.synced_count == 1; }));
  CHECK(sink.count("Pod") == 7);
  std::vector<RecordedRequest> lists;
  for (const auto& r : api->requests()) {
    if (!r.is_watch()) lists.push_back(r);
  }
  REQUIRE(lists.size() == 3);
  CHECK(lists[0].param("limit") == "3");
  CHECK(lists[0].param("continue").empty());
  CHECK(!lists[1].param("continue").empty());
  CHECK(!lists[2].param("continue").empty());
}

TEST_CASE("k8s source: a kind whose CRD is absent does not hold up synced", "[controller][k8s]") {
  auto api = start_fake();
  api->set_served("HTTPRoute", false);
  api->set_served("VirtualService", false);
  TestLoop loop;
  RecordingSink sink;
  auto src = make_source(loop, *api);
  src->start(&sink);
  REQUIRE(loop.run_until([&] { return sink.synced_count == 1; }));
  CHECK(src->watcher("HTTPRoute")->absent());
  CHECK(!src->watcher("Pod")->absent());

  // Installed later: found on a later list, then watched.
  api->set_served("HTTPRoute", true);
  REQUIRE(api->create(load_testdata("httproute.json")).ok());
  REQUIRE(loop.run_until([&] { return sink.has("HTTPRoute", "shop", "reviews"); }));
  REQUIRE(loop.run_until([&] { return src->watcher("HTTPRoute")->watching(); }));
  CHECK(!src->watcher("HTTPRoute")->absent());

  // Uninstalled again: its objects go away with it.
  api->set_served("HTTPRoute", false);
  api->end_watches("HTTPRoute");
  REQUIRE(loop.run_until([&] { return !sink.has("HTTPRoute", "shop", "reviews"); }));
  CHECK(src->watcher("HTTPRoute")->absent());
  CHECK(sink.synced_count == 1);
}

TEST_CASE("k8s source: stop ends every request and no Sink call follows", "[controller][k8s]") {
  auto api = start_fake();
  TestLoop loop;
  RecordingSink sink;
  auto src = make_source(loop, *api);
  src->start(&sink);
  REQUIRE(loop.run_until([&] { return api->open_watches("") == 13; }));
  src->stop();
  size_t ops = sink.log.size();
  REQUIRE(api->create(load_testdata("namespace.json")).ok());
  REQUIRE(loop.run_until([&] { return api->open_watches("") == 0; }));
  CHECK(sink.log.size() == ops);
  CHECK(src->client().active_calls() == 0);
}
