// The Kubernetes source when things go wrong: 410 Gone in both forms,
// bookmarks, dropped and ended watches, slow streams, token rotation.
//
// To make the source miss events on purpose, a test stops running the
// controller's loop (the fake keeps answering on its own thread), changes
// the fake, then runs the loop again.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "fake_apiserver.h"
#include "k8s/kube_source.h"
#include "k8s_test_support.h"

using namespace warren::fakes;
using namespace warren::controller::k8s;

namespace {

struct PodFixture {
  std::unique_ptr<FakeApiServer> api;
  TestLoop loop;
  RecordingSink sink;
  std::unique_ptr<KubernetesSource> src;

  explicit PodFixture(FakeApiServerOptions fo = {}, int pods = 3) {
    auto a = FakeApiServer::start(std::move(fo));
    REQUIRE(a.ok());
    api = std::move(*a);
    for (int i = 0; i < pods; ++i) add_pod("web-" + std::to_string(i));
  }
  void start(ClusterConfig cfg = {}) {
    if (cfg.server.empty()) cfg = fake_config(*api);
    SourceOptions o = fast_options();
    o.kinds = {"Pod"};
    auto s = KubernetesSource::create(loop.get(), std::move(cfg), o);
    REQUIRE(s.ok());
    src = std::move(*s);
    src->start(&sink);
    REQUIRE(loop.run_until([&] { return sink.synced_count == 1 && api->open_watches("Pod") == 1; }));
  }
  void add_pod(const std::string& name) {
    auto pod = load_testdata("pod.json");
    pod["metadata"]["name"] = name;
    REQUIRE(api->create(pod).ok());
  }
  const KindWatcher& w() { return *src->watcher("Pod"); }
  std::vector<RecordedRequest> of(bool watches) {
    std::vector<RecordedRequest> out;
    for (auto& r : api->requests()) {
      if (r.path == "/api/v1/pods" && r.is_watch() == watches) out.push_back(r);
    }
    return out;
  }
  size_t lists() { return of(false).size(); }
  std::vector<RecordedRequest> watches() { return of(true); }
  bool has(const std::string& name) { return sink.has("Pod", "shop", name); }
  ~PodFixture() { src.reset(); }
};

}  // namespace

TEST_CASE("k8s source: 410 at watch start relists and synthesizes missed deletes",
          "[controller][k8s]") {
  PodFixture f;
  f.start();
  REQUIRE(f.sink.count("Pod") == 3);
  // While the controller's loop is not running: the watch drops, a pod goes,
  // another comes, and the history is compacted away.
  f.api->drop_watches("Pod");
  REQUIRE(f.api->remove("Pod", "shop", "web-1").ok());
  f.add_pod("web-9");
  f.api->compact();
  REQUIRE(f.loop.run_until([&] { return !f.has("web-1") && f.has("web-9"); }));
  CHECK(f.sink.removes_of("Pod", "shop", "web-1") == 1);
  CHECK(f.lists() == 2);
  auto ws = f.watches();
  REQUIRE(ws.size() >= 2);
  CHECK(ws[1].status == 410);
  // Unchanged pods were not handed over again.
  CHECK(f.sink.ops('U', "Pod") == 4);
  REQUIRE(f.loop.run_until([&] { return f.w().watching() && f.api->open_watches("Pod") == 1; }));
  CHECK(f.w().resource_version() == std::to_string(f.api->resource_version()));
  CHECK(f.w().stats().relists == 1);
}

TEST_CASE("k8s source: 410 as an ERROR event relists and synthesizes missed deletes",
          "[controller][k8s]") {
  PodFixture f;
  f.api->set_expired_watch_as_event(true);
  f.start();
  f.api->drop_watches("Pod");
  REQUIRE(f.api->remove("Pod", "shop", "web-0").ok());
  REQUIRE(f.api->remove("Pod", "shop", "web-2").ok());
  f.api->compact();
  REQUIRE(f.loop.run_until([&] { return !f.has("web-0") && !f.has("web-2"); }));
  CHECK(f.has("web-1"));
  CHECK(f.sink.ops('R', "Pod") == 2);
  CHECK(f.lists() == 2);
  auto ws = f.watches();
  REQUIRE(ws.size() >= 2);
  CHECK(ws[1].status == 200);  // refused inside the stream, not by the HTTP status
  CHECK(f.w().stats().relists == 1);
}

TEST_CASE("k8s source: an ERROR 410 on a live watch relists", "[controller][k8s]") {
  PodFixture f;
  f.start();
  f.api->expire_watches("Pod");
  REQUIRE(f.loop.run_until([&] { return f.w().stats().relists == 1 && f.w().watching(); }));
  CHECK(f.lists() == 2);
  CHECK(f.sink.ops('U', "Pod") == 3);  // nothing changed: no upserts again
  CHECK(f.sink.ops('R', "Pod") == 0);
  f.add_pod("after");
  REQUIRE(f.loop.run_until([&] { return f.has("after"); }));
}

TEST_CASE("k8s source: bookmarks advance the resourceVersion of the next watch",
          "[controller][k8s]") {
  PodFixture f;
  f.start();
  std::string listed = f.w().resource_version();
  // Other kinds move the global version; the pod watch only learns of it by bookmark.
  for (int i = 0; i < 3; ++i) {
    auto ns = load_testdata("namespace.json");
    ns["metadata"]["name"] = "other-" + std::to_string(i);
    REQUIRE(f.api->create(ns).ok());
  }
  std::string now = std::to_string(f.api->resource_version());
  REQUIRE(now != listed);
  f.api->send_bookmarks("Pod");
  REQUIRE(f.loop.run_until([&] { return f.w().resource_version() == now; }));
  CHECK(f.sink.ops('U', "Pod") == 3);  // a bookmark is not an object
  f.api->end_watches("Pod");
  REQUIRE(f.loop.run_until([&] { return f.watches().size() == 2 && f.w().watching(); }));
  CHECK(f.watches()[1].param("resourceVersion") == now);
  CHECK(f.lists() == 1);
}

TEST_CASE("k8s source: periodic bookmarks keep the resourceVersion fresh", "[controller][k8s]") {
  FakeApiServerOptions fo;
  fo.bookmark_interval = std::chrono::milliseconds(50);
  PodFixture f(fo);
  f.start();
  auto ns = load_testdata("namespace.json");
  REQUIRE(f.api->create(ns).ok());
  std::string now = std::to_string(f.api->resource_version());
  REQUIRE(f.loop.run_until([&] { return f.w().resource_version() == now; }));
  CHECK(f.w().stats().events >= 1);
  CHECK(f.sink.ops('U', "Pod") == 3);
}

TEST_CASE("k8s source: a dropped watch resumes from the last resourceVersion without a relist",
          "[controller][k8s]") {
  PodFixture f;
  f.start();
  f.add_pod("seen");
  REQUIRE(f.loop.run_until([&] { return f.has("seen"); }));
  std::string rv = std::to_string(f.api->resource_version());
  REQUIRE(f.w().resource_version() == rv);
  // Dropped while the loop is not running, and a pod is created before the
  // source reconnects: it comes from the replay after `rv`.
  f.api->drop_watches("Pod");
  f.add_pod("while-away");
  REQUIRE(f.loop.run_until([&] { return f.has("while-away"); }));
  auto ws = f.watches();
  REQUIRE(ws.size() == 2);
  CHECK(ws[1].param("resourceVersion") == rv);
  CHECK(f.lists() == 1);
  CHECK(f.w().stats().errors >= 1);
  // Dropped again with the loop running.
  f.api->drop_watches("Pod");
  REQUIRE(f.loop.run_until([&] { return f.watches().size() == 3 && f.w().watching(); }));
  f.add_pod("after");
  REQUIRE(f.loop.run_until([&] { return f.has("after"); }));
  CHECK(f.lists() == 1);
  CHECK(f.sink.ops('R') == 0);
}

TEST_CASE("k8s source: watches the server ends are resumed without a relist",
          "[controller][k8s]") {
  FakeApiServerOptions fo;
  fo.max_watch = std::chrono::milliseconds(100);  // the server's watch timeout
  PodFixture f(fo);
  f.start();
  REQUIRE(f.loop.run_until([&] { return f.watches().size() >= 4; }));
  f.add_pod("late");
  REQUIRE(f.loop.run_until([&] { return f.has("late"); }));
  CHECK(f.lists() == 1);
  CHECK(f.w().stats().errors == 0);
  for (const auto& w : f.watches()) CHECK(w.status == 200);
}

TEST_CASE("k8s source: slow streams deliver every event in order", "[controller][k8s]") {
  PodFixture f({}, 0);
  f.start();
  f.api->set_event_delay(std::chrono::milliseconds(20));
  for (int i = 0; i < 8; ++i) f.add_pod("slow-" + std::to_string(i));
  REQUIRE(f.api->remove("Pod", "shop", "slow-3").ok());
  REQUIRE(f.loop.run_until([&] { return f.sink.log.size() >= 10; }));
  std::vector<std::string> order;
  for (const auto& op : f.sink.log) {
    if (op.op != 'S') order.push_back(std::string(1, op.op) + op.key.name);
  }
  CHECK(order == std::vector<std::string>{"Uslow-0", "Uslow-1", "Uslow-2", "Uslow-3", "Uslow-4",
                                          "Uslow-5", "Uslow-6", "Uslow-7", "Rslow-3"});
  CHECK(f.watches().size() == 1);
  CHECK(f.lists() == 1);
}

TEST_CASE("k8s source: a rotated token file is re-read", "[controller][k8s]") {
  PodFixture f;
  TempDir dir;
  std::string token_file = dir.write("token", "token-aaaa-0001\n");
  f.api->set_tokens({"token-aaaa-0001"});
  ClusterConfig cfg = fake_config(*f.api, "");
  cfg.token_file = token_file;
  f.start(cfg);

  SECTION("noticed before the next request (the file changed)") {
    dir.write("token", "token-bbbb-0002\n");
    f.api->set_tokens({"token-bbbb-0002"});
    f.api->end_watches("Pod");
    REQUIRE(f.loop.run_until([&] { return f.watches().size() == 2 && f.w().watching(); }));
    CHECK(f.watches()[1].status == 200);
    for (const auto& r : f.api->requests()) CHECK(r.status != 401);
  }
  SECTION("after a 401 (the file changed without a visible stat change)") {
    struct stat before {};
    REQUIRE(::stat(token_file.c_str(), &before) == 0);
    int fd = ::open(token_file.c_str(), O_WRONLY | O_TRUNC);
    REQUIRE(fd >= 0);
    std::string t = "token-cccc-0003\n";  // same size, same inode
    REQUIRE(::write(fd, t.data(), t.size()) == static_cast<ssize_t>(t.size()));
    ::close(fd);
    timespec times[2] = {before.st_atim, before.st_mtim};
    REQUIRE(::utimensat(AT_FDCWD, token_file.c_str(), times, 0) == 0);
    f.api->set_tokens({"token-cccc-0003"});
    f.api->end_watches("Pod");
    REQUIRE(f.loop.run_until([&] { return f.watches().size() == 3 && f.w().watching(); }));
    auto ws = f.watches();
    CHECK(ws[1].status == 401);
    CHECK(ws[2].status == 200);
    CHECK(f.w().stats().errors == 0);  // the retry was transparent
  }
  f.add_pod("with-new-token");
  REQUIRE(f.loop.run_until([&] { return f.has("with-new-token"); }));
  CHECK(f.lists() == 1);
}

TEST_CASE("k8s source: an expired token is retried with backoff until it works",
          "[controller][k8s]") {
  PodFixture f;
  f.start();
  f.api->set_tokens({"something-else"});
  f.api->end_watches("Pod");
  REQUIRE(f.loop.run_until([&] { return f.watches().size() >= 4; }));
  CHECK(f.w().stats().errors >= 3);
  f.api->set_tokens({"test-token"});
  f.add_pod("back");
  REQUIRE(f.loop.run_until([&] { return f.has("back"); }));
  CHECK(f.lists() == 1);
}
