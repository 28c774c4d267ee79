// Helpers for tests of the controller's Kubernetes source against the fake
// API server: a Sink that records what it is told, a loop driver that waits
// for a condition with a deadline (never a fixed sleep), temporary
// directories, and the JSON objects of tests/fakes/testdata/.
//
//   TestLoop loop;
//   RecordingSink sink;
//   ... src->start(&sink);
//   REQUIRE(loop.run_until([&] { return sink.synced_count > 0; }));
#pragma once

#include <uv.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "fake_apiserver.h"
#include "k8s/kube_source.h"
#include "source.h"

namespace warren::fakes {

class RecordingSink : public controller::Sink {
 public:
  struct Op {
    char op;  // 'U' upsert, 'R' remove, 'S' synced
    controller::ObjectKey key;
    std::string resource_version;
  };
  void upsert(const std::string& origin, nlohmann::json obj) override;
  void remove(const controller::ObjectKey& key) override;
  void synced() override;

  bool has(const std::string& kind, const std::string& ns, const std::string& name) const;
  // The last upserted version of an object held now (null when not held).
  nlohmann::json object(const std::string& kind, const std::string& ns,
                        const std::string& name) const;
  size_t count(const std::string& kind) const;  // objects of a kind held now
  size_t ops(char op, const std::string& kind = {}) const;
  size_t removes_of(const std::string& kind, const std::string& ns, const std::string& name) const;

  std::vector<Op> log;
  std::map<controller::ObjectKey, nlohmann::json> objects;
  std::vector<std::string> origins;
  int synced_count = 0;
  // Called from upsert (e.g. a model that validates).
  std::function<void(const nlohmann::json&)> on_upsert;
};

// A libuv loop owned by the test.
class TestLoop {
 public:
  TestLoop();
  ~TestLoop();  // runs the loop until every handle has closed, then closes it
  uv_loop_t* get() { return &loop_; }
  // Runs the loop until pred() holds or the deadline passes; returns pred().
  bool run_until(const std::function<bool()>& pred,
                 std::chrono::milliseconds deadline = std::chrono::seconds(10));
  // Runs the loop for a while (to let things that must NOT happen show up).
  void run_for(std::chrono::milliseconds d);

 private:
  uv_loop_t loop_;
};

// mkdtemp under $TMPDIR; removed with its files on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  // Writes (atomically: temp file + rename) and returns the path.
  std::string write(const std::string& name, const std::string& content) const;

 private:
  std::string path_;
};

// tests/fakes/testdata/<name>.
std::string testdata_dir();
nlohmann::json load_testdata(const std::string& name);
// The testdata file of each of the 13 watched kinds, by kind.
const std::map<std::string, std::string>& testdata_by_kind();
// Creates one object of each watched kind in the fake.
void create_all_kinds(FakeApiServer& api);

// A client configuration for the fake (its CA, a static token).
controller::k8s::ClusterConfig fake_config(FakeApiServer& api,
                                           const std::string& token = "test-token");
// Source options with test durations: backoff 10-200 ms, no leader election
// unless asked, lease 1 s / renew 100 ms.
controller::k8s::SourceOptions fast_options(bool leader_election = false);

}  // namespace warren::fakes
