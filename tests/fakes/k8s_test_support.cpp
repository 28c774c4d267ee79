#include "k8s_test_support.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace warren::fakes {

using controller::ObjectKey;

void RecordingSink::upsert(const std::string& origin, nlohmann::json obj) {
  ObjectKey k = controller::key_of(obj);
  std::string rv;
  if (obj.contains("metadata") && obj["metadata"].is_object())
    rv = obj["metadata"].value("resourceVersion", "");
  log.push_back({'U', k, rv});
  origins.push_back(origin);
  if (on_upsert) on_upsert(obj);
  objects[k] = std::move(obj);
}

void RecordingSink::remove(const ObjectKey& key) {
  log.push_back({'R', key, ""});
  objects.erase(key);
}

void RecordingSink::synced() {
  log.push_back({'S', {}, ""});
  ++synced_count;
}

bool RecordingSink::has(const std::string& kind, const std::string& ns,
                        const std::string& name) const {
  return objects.count(ObjectKey{kind, ns, name}) > 0;
}

nlohmann::json RecordingSink::object(const std::string& kind, const std::string& ns,
                                     const std::string& name) const {
  auto it = objects.find(ObjectKey{kind, ns, name});
  return it == objects.end() ? nlohmann::json() : it->second;
}

size_t RecordingSink::count(const std::string& kind) const {
  size_t n = 0;
  for (const auto& [k, v] : objects) n += k.kind == kind ? 1 : 0;
  return n;
}

size_t RecordingSink::ops(char op, const std::string& kind) const {
  size_t n = 0;
  for (const auto& o : log) n += o.op == op && (kind.empty() || o.key.kind == kind) ? 1 : 0;
  return n;
}

size_t RecordingSink::removes_of(const std::string& kind, const std::string& ns,
                                 const std::string& name) const {
  size_t n = 0;
  for (const auto& o : log) n += o.op == 'R' && o.key == ObjectKey{kind, ns, name} ? 1 : 0;
  return n;
}

TestLoop::TestLoop() { uv_loop_init(&loop_); }

TestLoop::~TestLoop() {
  // Whatever the test destroyed closes its handles asynchronously.
  for (int i = 0; i < 100 && uv_loop_alive(&loop_); ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  if (uv_loop_close(&loop_) != 0) {
    uv_walk(
        &loop_,
        [](uv_handle_t* h, void*) {
          if (!uv_is_closing(h)) uv_close(h, nullptr);
        },
        nullptr);
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
  }
}

bool TestLoop::run_until(const std::function<bool()>& pred, std::chrono::milliseconds deadline) {
  auto end = std::chrono::steady_clock::now() + deadline;
  uv_timer_t tick;
  uv_timer_init(&loop_, &tick);
  uv_timer_start(&tick, [](uv_timer_t*) {}, 5, 5);  // wakes the loop to re-check pred
  auto close_tick = [&] {
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);  // the timer lives on this stack: finish closing it here
  };
  bool ok = false;
  try {
    ok = pred();
    while (!ok && std::chrono::steady_clock::now() < end) {
      uv_run(&loop_, UV_RUN_ONCE);
      ok = pred();
    }
  } catch (...) {
    close_tick();
    throw;
  }
  close_tick();
  return ok;
}

void TestLoop::run_for(std::chrono::milliseconds d) {
  auto end = std::chrono::steady_clock::now() + d;
  run_until([&] { return std::chrono::steady_clock::now() >= end; }, d + std::chrono::seconds(1));
}

TempDir::TempDir() {
  const char* tmp = getenv("TMPDIR");
  std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/warren-k8s-XXXXXX";
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TempDir::write(const std::string& name, const std::string& content) const {
  std::string p = file(name);
  std::string tmp = p + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << content;
  }
  std::filesystem::rename(tmp, p);
  return p;
}

std::string testdata_dir() { return WARREN_FAKES_TESTDATA_DIR; }

nlohmann::json load_testdata(const std::string& name) {
  std::ifstream in(testdata_dir() + "/" + name);
  if (!in) throw std::runtime_error("no testdata " + name);
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

const std::map<std::string, std::string>& testdata_by_kind() {
  static const std::map<std::string, std::string> m = {
      {"Namespace", "namespace.json"},
      {"Pod", "pod.json"},
      {"Service", "service.json"},
      {"EndpointSlice", "endpointslice.json"},
      {"ServiceAccount", "serviceaccount.json"},
      {"Node", "node.json"},
      {"AuthorizationPolicy", "authorizationpolicy.json"},
      {"PeerAuthentication", "peerauthentication.json"},
      {"RequestAuthentication", "requestauthentication.json"},
      {"VirtualService", "virtualservice.json"},
      {"DestinationRule", "destinationrule.json"},
      {"Gateway", "gateway.json"},
      {"HTTPRoute", "httproute.json"}};
  return m;
}

void create_all_kinds(FakeApiServer& api) {
  for (const auto& [kind, file] : testdata_by_kind()) {
    auto r = api.create(load_testdata(file));
    if (!r) throw std::runtime_error("create " + kind + ": " + r.error().message);
  }
}

controller::k8s::ClusterConfig fake_config(FakeApiServer& api, const std::string& token) {
  controller::k8s::ClusterConfig c;
  c.server = api.url();
  c.ca_pem = api.ca_pem();
  c.token = token;
  return c;
}

controller::k8s::SourceOptions fast_options(bool leader_election) {
  controller::k8s::SourceOptions o;
  o.watch.page_size = 500;
  o.watch.backoff_initial = std::chrono::milliseconds(10);
  o.watch.backoff_max = std::chrono::milliseconds(200);
  o.watch.absent_retry = std::chrono::milliseconds(200);
  o.watch.min_healthy_watch = std::chrono::milliseconds(50);
  o.leader_election = leader_election;
  o.lease.lease_duration = std::chrono::seconds(1);
  o.lease.renew_period = std::chrono::milliseconds(100);
  o.lease.retry_period = std::chrono::milliseconds(100);
  o.lease.renew_deadline = std::chrono::milliseconds(800);
  o.status.retry_delay = std::chrono::milliseconds(50);
  return o;
}

}  // namespace warren::fakes
