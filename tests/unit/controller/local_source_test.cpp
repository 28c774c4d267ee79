#include <catch2/catch.hpp>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>

#include "local_manifest.h"
#include "local_source.h"
#include "model.h"
#include "model_fixtures.h"
#include "warren/defer.h"

using namespace warren::controller;
using namespace fixtures;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    static int n = 0;
    path = fs::temp_directory_path() / ("warren-local-" + std::to_string(getpid()) + "-" + std::to_string(++n));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  // Write in place (open, truncate, write), making directories as needed.
  void write(const std::string& rel, const std::string& text) const {
    fs::create_directories((path / rel).parent_path());
    std::ofstream(path / rel, std::ios::binary | std::ios::trunc) << text;
  }
  // An editor's atomic save: a hidden temporary file renamed over the target.
  void replace(const std::string& rel, const std::string& text) const {
    fs::path tmp = (path / rel).parent_path() / ("." + fs::path(rel).filename().string() + ".tmp");
    std::ofstream(tmp, std::ios::binary) << text;
    fs::rename(tmp, path / rel);
  }
  void remove(const std::string& rel) const { fs::remove(path / rel); }
};

struct Loop {
  uv_loop_t loop;
  Loop() { uv_loop_init(&loop); }
  ~Loop() {
    for (int i = 0; i < 10 && uv_loop_close(&loop) == UV_EBUSY; i++) uv_run(&loop, UV_RUN_NOWAIT);
  }
  // Runs the loop until cond() holds; false after 10 s.
  bool until(const std::function<bool()>& cond) {
    warren::Timer tick(&loop);
    tick.start(5, 5, [] {});
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!cond()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      uv_run(&loop, UV_RUN_ONCE);
    }
    return true;
  }
};

// Remembers what the source fed, and forwards to a model.
struct RecordingSink : Sink {
  Model model{{}};
  std::map<ObjectKey, std::pair<std::string, json>> objects;  // key → origin, object
  int upserts = 0, removes = 0;
  bool synced_ = false;
  void upsert(const std::string& origin, json obj) override {
    upserts++;
    objects[key_of(obj)] = {origin, obj};
    model.upsert(origin, std::move(obj));
  }
  void remove(const ObjectKey& key) override {
    removes++;
    objects.erase(key);
    model.remove(key);
  }
  void synced() override { synced_ = true; }
  std::string origin(const ObjectKey& k) const { return objects.count(k) ? objects.at(k).first : ""; }
  std::string ip(const std::string& ns, const std::string& name) const {
    auto it = objects.find({"Pod", ns, name});
    return it == objects.end() ? "" : it->second.second["status"].value("podIP", "");
  }
};

std::string pod_yaml(const std::string& name, const std::string& ip, const std::string& ns = "shop") {
  return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: " + name + "\n  namespace: " + ns +
         "\nspec:\n  nodeName: node-a\nstatus:\n  podIP: " + ip + "\n";
}

}  // namespace

TEST_CASE("local manifest: documents lists and line numbers", "[controller][local]") {
  auto r = parse_manifest("# comment\n---\na: 1\nkind: X\n---\n\n--- {kind: Y, b: 2}\n...\n---\n~\n", false);
  REQUIRE(r.ok());
  REQUIRE(r->size() == 2);
  CHECK(r->at(0).obj == json::parse(R"({"a": 1, "kind": "X"})"));
  CHECK(r->at(1).obj == json::parse(R"({"kind": "Y", "b": 2})"));
  CHECK(r->at(1).line == 7);

  auto bad = parse_manifest("kind: A\n---\nkind: B\nmetadata:\n  name: x\n   bad: indent\n", false);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().message.rfind("line 6, column", 0) == 0);
  CHECK(parse_manifest("kind: A\n---\n- 1\n", false).error().message == "document at line 3: must be an object, got an array");

  auto list = parse_manifest(R"(apiVersion: v1
kind: PodList
items:
- metadata: {name: a}
- kind: List
  items: [{kind: Service, metadata: {name: s}}]
)", false);
  REQUIRE(list.ok());
  REQUIRE(list->size() == 2);
  CHECK(list->at(0).obj == json::parse(R"({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}})"));
  CHECK(list->at(1).obj["kind"] == "Service");

  auto js = parse_manifest(R"([{"kind": "A"}, {"kind": "List", "items": [{"kind": "B"}]}])", true);
  REQUIRE(js.ok());
  CHECK(js->size() == 2);
  CHECK(parse_manifest("{\"kind\": \n", true).error().message.rfind("line 2, column 1:", 0) == 0);
  CHECK_FALSE(parse_manifest("{\"a\": 1e99999}", true).ok());  // out of range: an error, not an exception
  CHECK_FALSE(parse_manifest("a: [1\n", false).ok());
}

TEST_CASE("local source: reads nested multi-document YAML JSON and lists", "[controller][local]") {
  TempDir dir;
  dir.write("shop/apps/pods.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n" + pod_yaml("a", "10.1.0.1") +
                                       "---\n# only a comment\n---\n" +
                                       "apiVersion: v1\nkind: Pod\nmetadata:\n  name: b\nstatus:\n  podIP: 10.1.0.2\n");
  dir.write("shop/svc.json", R"({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": "shop"},
                                 "spec": {"clusterIP": "10.96.0.10", "selector": {"app": "echo"}, "ports": [{"port": 80}]}})");
  dir.write("lists/all.yml", "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ServiceAccount\n  metadata: {name: sa, namespace: shop}\n");
  dir.write("deep/a/b/c/d/ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: deep\n");
  dir.write(".hidden/x.yaml", pod_yaml("hidden", "10.1.0.9"));
  dir.write("shop/.pods.yaml.swp", "garbage");
  dir.write("shop/#pods.yaml#", "garbage");
  dir.write("shop/pods.yaml~", "garbage");
  dir.write("README.txt", "not a manifest");
  Loop loop;
  RecordingSink sink;
  LocalSource src(&loop.loop, dir.path.string(), &sink);
  int batches = 0;
  src.set_on_batch([&] { batches++; });
  REQUIRE(src.start().ok());
  CHECK(sink.synced_);
  CHECK(batches == 1);
  CHECK(src.batches() == 1);
  CHECK(sink.objects.size() == 6);
  CHECK(sink.origin({"Pod", "shop", "a"}) == "shop/apps/pods.yaml");
  CHECK(sink.origin({"Pod", "default", "b"}) == "shop/apps/pods.yaml");  // no namespace: "default"
  CHECK(sink.origin({"Service", "shop", "echo"}) == "shop/svc.json");
  CHECK(sink.origin({"ServiceAccount", "shop", "sa"}) == "lists/all.yml");
  CHECK(sink.origin({"Namespace", "", "deep"}) == "deep/a/b/c/d/ns.yaml");
  CHECK(src.errors().empty());
  CHECK(src.watched_dirs() == 9);  // the root, shop, shop/apps, lists, deep and its four levels
  // Local defaults make pods workloads: uid <ns>/<name>, phase Running.
  auto d = sink.model.flush();
  CHECK(sink.model.resources().count("workload/shop/a"));
  CHECK(sink.model.resources().count("workload/default/b"));
  CHECK(sink.model.rejected().empty());
}

TEST_CASE("local source: a missing directory fails to start", "[controller][local]") {
  Loop loop;
  RecordingSink sink;
  LocalSource src(&loop.loop, "/nonexistent/warren/manifests", &sink);
  auto r = src.start();
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find("/nonexistent/warren/manifests") != std::string::npos);
}

TEST_CASE("local source: edits in place and rename-over", "[controller][local]") {
  TempDir dir;
  dir.write("pods.yaml", pod_yaml("a", "10.1.0.1") + "---\n" + pod_yaml("b", "10.1.0.2"));
  Loop loop;
  RecordingSink sink;
  LocalSource src(&loop.loop, dir.path.string(), &sink);
  REQUIRE(src.start().ok());
  CHECK(sink.upserts == 2);

  dir.write("pods.yaml", pod_yaml("a", "10.1.0.11") + "---\n" + pod_yaml("b", "10.1.0.2"));
  REQUIRE(loop.until([&] { return sink.ip("shop", "a") == "10.1.0.11"; }));
  CHECK(sink.upserts == 3);  // b did not change: not fed again

  dir.replace("pods.yaml", pod_yaml("a", "10.1.0.21") + "---\n" + pod_yaml("b", "10.1.0.2"));
  REQUIRE(loop.until([&] { return sink.ip("shop", "a") == "10.1.0.21"; }));
  CHECK(sink.upserts == 4);

  // Dropping an object from a file removes it.
  dir.replace("pods.yaml", pod_yaml("a", "10.1.0.21"));
  REQUIRE(loop.until([&] { return sink.removes == 1; }));
  CHECK_FALSE(sink.objects.count({"Pod", "shop", "b"}));
  CHECK(src.batches() == 4);
}

TEST_CASE("local source: a syntax error keeps the file's last good objects", "[controller][local]") {
  TempDir dir;
  dir.write("shop/pods.yaml", pod_yaml("a", "10.1.0.1") + "---\n" + pod_yaml("b", "10.1.0.2"));
  dir.write("other.yaml", pod_yaml("c", "10.1.0.3"));
  Loop loop;
  RecordingSink sink;
  Recorder listener;
  LocalSource src(&loop.loop, dir.path.string(), &sink, &listener);
  REQUIRE(src.start().ok());

  dir.write("shop/pods.yaml", pod_yaml("a", "10.1.0.11") + "---\nkind: Pod\nmetadata:\n  name: b\n   oops: 1\n");
  dir.write("other.yaml", pod_yaml("c", "10.1.0.33"));
  REQUIRE(loop.until([&] { return sink.ip("shop", "c") == "10.1.0.33"; }));  // the other file goes on
  REQUIRE(src.errors().count("shop/pods.yaml"));
  CHECK(src.errors().at("shop/pods.yaml") == "shop/pods.yaml: line 14, column 8: illegal map value");
  CHECK(listener.rejections ==
        std::vector<std::string>{"shop/pods.yaml: line 14, column 8: illegal map value (its objects keep their last good version)"});
  CHECK(sink.ip("shop", "a") == "10.1.0.1");  // last good versions, both
  CHECK(sink.ip("shop", "b") == "10.1.0.2");
  CHECK(sink.removes == 0);

  dir.write("shop/pods.yaml", pod_yaml("a", "10.1.0.11"));
  REQUIRE(loop.until([&] { return sink.removes == 1; }));
  CHECK(sink.ip("shop", "a") == "10.1.0.11");
  CHECK(src.errors().empty());
}

TEST_CASE("local source: deleting a file removes its objects", "[controller][local]") {
  TempDir dir;
  dir.write("a.yaml", pod_yaml("a", "10.1.0.1"));
  dir.write("sub/b.yaml", pod_yaml("b", "10.1.0.2"));
  Loop loop;
  RecordingSink sink;
  LocalSource src(&loop.loop, dir.path.string(), &sink);
  REQUIRE(src.start().ok());
  sink.model.flush();
  dir.remove("sub/b.yaml");
  REQUIRE(loop.until([&] { return sink.removes == 1; }));
  CHECK(sink.objects.size() == 1);
  CHECK(sink.model.flush().removes == std::vector<std::string>{"workload/shop/b"});
  fs::remove_all(dir.path / "sub");
  dir.remove("a.yaml");
  REQUIRE(loop.until([&] { return sink.removes == 2; }));
  CHECK(sink.objects.empty());
}

TEST_CASE("local source: new subdirectories are watched", "[controller][local]") {
  TempDir dir;
  Loop loop;
  RecordingSink sink;
  LocalSource src(&loop.loop, dir.path.string(), &sink);
  REQUIRE(src.start().ok());
  CHECK(sink.objects.empty());
  CHECK(src.watched_dirs() == 1);
  dir.write("new/deeper/pods.yaml", pod_yaml("a", "10.1.0.1"));
  REQUIRE(loop.until([&] { return sink.objects.size() == 1; }));
  CHECK(src.watched_dirs() == 3);
  // A file added later inside the new directory is seen through its own watch.
  dir.write("new/deeper/more.yaml", pod_yaml("b", "10.1.0.2"));
  REQUIRE(loop.until([&] { return sink.objects.size() == 2; }));
  // A directory renamed in moves its files' origins, objects stay.
  fs::rename(dir.path / "new", dir.path / "renamed");
  REQUIRE(loop.until([&] { return sink.origin({"Pod", "shop", "a"}) == "renamed/deeper/pods.yaml"; }));
  CHECK(sink.objects.size() == 2);
  CHECK(sink.removes == 0);
}

TEST_CASE("local source: the same object in two files", "[controller][local]") {
  TempDir dir;
  dir.write("a.yaml", pod_yaml("x", "10.1.0.1"));
  dir.write("b.yaml", pod_yaml("x", "10.1.0.2"));
  Loop loop;
  RecordingSink sink;
  Recorder listener;
  LocalSource src(&loop.loop, dir.path.string(), &sink, &listener);
  REQUIRE(src.start().ok());
  // Path order at the first scan: a.yaml defines it first.
  CHECK(sink.ip("shop", "x") == "10.1.0.1");
  std::string dup = "b.yaml: Pod shop/x: also defined in a.yaml, which is in force; this definition is ignored";
  REQUIRE(listener.rejections == std::vector<std::string>{dup});
  CHECK(src.errors() == std::map<std::string, std::string>{{"b.yaml", dup}});

  // a.yaml drops it: b.yaml's definition takes over, the object is never removed.
  dir.write("a.yaml", pod_yaml("other", "10.1.0.9"));
  REQUIRE(loop.until([&] { return sink.ip("shop", "x") == "10.1.0.2"; }));
  CHECK(sink.origin({"Pod", "shop", "x"}) == "b.yaml");
  CHECK(sink.removes == 0);
  CHECK(src.errors().empty());

  // Defined again in a.yaml: now the later one, so the duplicate.
  dir.write("a.yaml", pod_yaml("x", "10.1.0.3"));
  REQUIRE(loop.until([&] { return src.errors().count("a.yaml") > 0; }));
  CHECK(sink.ip("shop", "x") == "10.1.0.2");
  CHECK(listener.rejections.back() ==
        "a.yaml: Pod shop/x: also defined in b.yaml, which is in force; this definition is ignored");

  // Moving an object between files in one save: not lost.
  dir.write("c.yaml", pod_yaml("y", "10.1.0.4"));
  REQUIRE(loop.until([&] { return sink.objects.count({"Pod", "shop", "y"}) > 0; }));
  int removes = sink.removes;
  dir.write("c.yaml", "");
  dir.write("d.yaml", pod_yaml("y", "10.1.0.4"));
  REQUIRE(loop.until([&] { return sink.origin({"Pod", "shop", "y"}) == "d.yaml"; }));
  CHECK(sink.removes == removes);

  // Twice in one file: the first definition is used.
  dir.write("e.yaml", pod_yaml("z", "10.1.0.5") + "---\n" + pod_yaml("z", "10.1.0.6"));
  REQUIRE(loop.until([&] { return sink.objects.count({"Pod", "shop", "z"}) > 0; }));
  CHECK(sink.ip("shop", "z") == "10.1.0.5");
  CHECK(src.errors().at("e.yaml") ==
        "e.yaml:11: Pod shop/z: defined twice in this file (from line 1); the first definition is used");
}

TEST_CASE("local source: a burst of writes is one batch", "[controller][local]") {
  TempDir dir;
  Loop loop;
  RecordingSink sink;
  LocalSource src(&loop.loop, dir.path.string(), &sink);
  int batches = 0;
  src.set_on_batch([&] { batches++; });
  REQUIRE(src.start().ok());
  // The events queue up while the loop is not running: the first run sees
  // them all, and the debounce makes one scan of them.
  for (int i = 0; i < 20; i++) dir.write("p" + std::to_string(i) + ".yaml", pod_yaml("p" + std::to_string(i), "10.1.1." + std::to_string(i)));
  REQUIRE(loop.until([&] { return sink.objects.size() == 20; }));
  CHECK(batches == 2);
  CHECK(sink.upserts == 20);
}

TEST_CASE("local source: objects without kind or name are reported", "[controller][local]") {
  TempDir dir;
  dir.write("x.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  namespace: shop\n---\n" + pod_yaml("ok", "10.1.0.1"));
  Loop loop;
  RecordingSink sink;
  LocalSource src(&loop.loop, dir.path.string(), &sink);
  REQUIRE(src.start().ok());
  CHECK(sink.objects.size() == 1);
  CHECK(src.errors().at("x.yaml") == "x.yaml:1: Pod shop/(no name): metadata.name: is required");
}

TEST_CASE("local source: Istio users' YAML is accepted unchanged", "[controller][local]") {
  Loop loop;
  RecordingSink sink;
  Recorder listener;
  LocalSource src(&loop.loop, WARREN_SRC_DIR "/tests/unit/controller/testdata/cluster", &sink, &listener);
  REQUIRE(src.start().ok());
  CHECK(listener.rejections.empty());
  CHECK(src.errors().empty());
  CHECK(sink.model.rejected().empty());
  CHECK(sink.model.object_count() == 14);
  sink.model.flush();
  std::vector<std::string> ids;
  for (const auto& [id, body] : sink.model.resources()) ids.push_back(id);
  // Node resources, and the routing objects waypoints receive.
  CHECK(ids == std::vector<std::string>{"destinationrule/bookinfo/reviews", "httproute/bookinfo/reviews",
                                        "namespace/bookinfo", "namespace/istio-system", "peerauth/istio-system/default",
                                        "policy/bookinfo/deny-delete", "policy/bookinfo/reviews-viewer",
                                        "requestauthentication/bookinfo/jwt-example", "service/bookinfo/reviews",
                                        "virtualservice/bookinfo/reviews", "workload/bookinfo/reviews-v1-7d9c8",
                                        "workload/bookinfo/reviews-v2-5b6f4"});
  const json& svc = *sink.model.resources().at("service/bookinfo/reviews");
  CHECK(svc["ports"] == json::parse(R"([{"port": 9080, "targetPort": 9080, "name": "http"}])"));
  CHECK(svc["endpoints"] == json{"bookinfo/reviews-v1-7d9c8", "bookinfo/reviews-v2-5b6f4"});
  CHECK(sink.model.resources().at("workload/bookinfo/reviews-v1-7d9c8")->at("waypoint") == "waypoint");
  CHECK(sink.model.held({"DestinationRule", "bookinfo", "reviews"}));
  CHECK(sink.model.identity_on_node("node-b", "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"));
  auto snap = warren::config::parse(node_config(sink.model, "node-a"));
  REQUIRE(snap.ok());
  CHECK((*snap)->policies.size() == 2);
}

TEST_CASE("local source: the directory itself vanishing keeps the objects", "[controller][local]") {
  TempDir dir;
  dir.write("a.yaml", pod_yaml("a", "10.1.0.1"));
  Loop loop;
  RecordingSink sink;
  LocalSource src(&loop.loop, (dir.path / "").string(), &sink);
  REQUIRE(src.start().ok());
  fs::rename(dir.path, dir.path.string() + ".moved");
  src.rescan();
  CHECK(sink.objects.size() == 1);
  CHECK(sink.removes == 0);
  fs::rename(dir.path.string() + ".moved", dir.path);
  dir.write("b.yaml", pod_yaml("b", "10.1.0.2"));
  src.rescan();
  CHECK(sink.objects.size() == 2);
}
