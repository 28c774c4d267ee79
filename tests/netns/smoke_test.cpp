// The harness itself: a 2x2 cluster routes pod to pod without any mesh, the
// podtool subcommands work, clusters are isolated and teardown leaves nothing.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "harness.h"
#include "test_util.h"

using namespace warren::netns;
using nlohmann::json;
using warren::e2e::Process;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {


// The last JSON line of a podtool run (null when there is none).
json last_json(const std::string& out) {
  json j;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] == '{') j = json::parse(line, nullptr, false);
  return j;
}


bool leftovers(const std::string& tag) {
  std::error_code ec;
  for (auto& e : fs::directory_iterator("/var/run/netns", ec))
    if (e.path().filename().string().find("wrn-" + tag + "-") == 0) return true;
  return fs::exists(std::string(kCgroupRoot) + "/" + kCgroupPrefix + tag) ||
         fs::exists(std::string(kStateDir) + "/" + tag + ".owner");
}

// Connectivity of a whole cluster: every pod reaches every other by plain IP.
void check_pod_to_pod(Cluster& c, uint16_t port) {
  auto pods = c.all_pods();
  std::vector<std::unique_ptr<Process>> servers;
  for (auto& p : pods)
    servers.push_back(
        serve(c, p, {"--port", std::to_string(port), "--echo"}, "echo-" + p.name + ".log"));
  for (auto& from : pods)
    for (auto& to : pods) {
      if (from.name == to.name) continue;
      INFO(from.name << " -> " << to.name);
      auto r = c.exec_in_pod(from,
                             {podtool_path(), "connect", "--to", to.ip + ":" + std::to_string(port),
                              "--send-marker", "hello-" + from.name, "--expect-echo"});
      REQUIRE(r.exit_code == 0);
      auto j = last_json(r.output);
      CHECK(j["peername"] == to.ip + ":" + std::to_string(port));
      CHECK(j["sockname"].get<std::string>().rfind(from.ip + ":", 0) == 0);
      CHECK(j["echo_ok"] == true);
    }
}

}  // namespace

TEST_CASE("smoke: pod to pod TCP and UDP without a mesh") {
  std::string tag;
  {
    auto c = Cluster::create(topo(2, 2));
    tag = c->tag();
    REQUIRE(c->nodes().size() == 2);
    REQUIRE(c->pod(2, 2).ip == "10.2.0.12");
    REQUIRE(c->node(2).ip == "192.168.100.2");
    for (auto& p : c->all_pods()) {
      CHECK(fs::exists(p.netns_path));
      struct stat pause_ns {
      }, want{};
      REQUIRE(stat(("/proc/" + std::to_string(p.pause_pid) + "/ns/net").c_str(), &pause_ns) == 0);
      REQUIRE(stat(p.netns_path.c_str(), &want) == 0);
      CHECK(pause_ns.st_ino == want.st_ino);
      std::string cg = warren::e2e::read_file("/proc/" + std::to_string(p.pause_pid) + "/cgroup");
      CHECK(cg.find("/warren-test-" + tag + "/node-" + std::to_string(p.node) + "/" + p.name) !=
            std::string::npos);
    }
    if (std::getenv("WARREN_NETNS_FORCE_FAIL")) FAIL("forced failure (WARREN_NETNS_FORCE_FAIL)");
    check_pod_to_pod(*c, 8080);

    // A process spawned in a pod is in the pod's cgroup.
    auto r = c->exec_in_pod(c->pod(1, 1), {"cat", "/proc/self/cgroup"});
    CHECK(r.output.find(c->pod(1, 1).cgroup.substr(std::string(kCgroupRoot).size())) !=
          std::string::npos);
    // A node process is in the node netns but not in the node cgroup.
    r = c->exec_in_node(1, {"cat", "/proc/self/cgroup"});
    CHECK(r.output.find("warren-test-") == std::string::npos);
    r = c->exec_in_node(1, {"/usr/sbin/ip", "-br", "addr", "show", "eth0"});
    CHECK(r.output.find("192.168.100.1/24") != std::string::npos);

    // UDP across nodes.
    auto u = c->spawn_in_pod(c->pod(2, 1), {podtool_path(), "udp-echo-serve", "--port", "5353"},
                             "udp.log");
    REQUIRE(warren::e2e::wait_until([&] { return u->log().find("listening") != std::string::npos; },
                                    5s));
    r = c->exec_in_pod(c->pod(1, 2),
                       {podtool_path(), "udp-echo", "--to", "10.2.0.11:5353", "--count", "5"});
    INFO(r.output);
    CHECK(r.exit_code == 0);
    CHECK(last_json(r.output)["received"] == 5);
    // The host netns has none of the cluster's addresses.
    auto host = warren::e2e::run({"/usr/sbin/ip", "-br", "addr"});
    CHECK(host.output.find("192.168.100.") == std::string::npos);
    CHECK(host.output.find("10.1.0.") == std::string::npos);
  }
  CHECK_FALSE(leftovers(tag));
}

TEST_CASE("smoke: podtool transfer long-lived and benchmarks") {
  auto c = Cluster::create(topo(2, 1));
  const auto& a = c->pod(1, 1);
  const auto& b = c->pod(2, 1);
  auto bulk = serve(*c, b, {"--port", "9000", "--bulk", "3000000"}, "bulk.log");
  auto r =
      c->exec_in_pod(a, {podtool_path(), "transfer", "--to", b.ip + ":9000", "--bytes", "3000000"});
  INFO(r.output << bulk->log());
  REQUIRE(r.exit_code == 0);
  CHECK(last_json(r.output)["received"] == 3000000);
  REQUIRE(warren::e2e::wait_until(
      [&] { return bulk->log().find("\"ok\":true") != std::string::npos; }, 5s));

  auto echo = serve(*c, b, {"--port", "9001", "--echo", "--speak-first", "100"}, "echo.log");
  r = c->exec_in_pod(
      a, {podtool_path(), "connect", "--to", b.ip + ":9001", "--expect-speak-first", "100"});
  CHECK(r.exit_code == 0);
  r = c->exec_in_pod(a, {podtool_path(), "transfer", "--to", b.ip + ":9001", "--bytes", "100",
                         "--peer", "echo", "--expect-bytes", "200"});
  CHECK(r.exit_code != 0);  // the speak-first bytes are not the client's stream

  auto plain = serve(*c, b, {"--port", "9002", "--echo"}, "plain.log");
  std::string stop = c->dir() + "/stop-long-lived";
  auto ll = c->spawn_in_pod(a,
                            {podtool_path(), "long-lived", "--to", b.ip + ":9002", "--interval-ms",
                             "50", "--stop-file", stop},
                            "ll.log");
  REQUIRE(
      warren::e2e::wait_until([&] { return ll->log().find("\"t\":1") != std::string::npos; }, 5s));
  warren::e2e::write_file_atomic(stop, "");
  REQUIRE(ll->wait_exit(5s));
  CHECK(ll->exit_code() == 0);

  r = c->exec_in_pod(
      a, {podtool_path(), "rr", "--to", b.ip + ":9002", "--rate", "200", "--seconds", "1"});
  CHECK(r.exit_code == 0);
  CHECK(last_json(r.output)["requests"] == 200);
  r = c->exec_in_pod(a, {podtool_path(), "cps", "--to", b.ip + ":9002", "--seconds", "1"});
  CHECK(r.exit_code == 0);
  auto sink = serve(*c, b, {"--port", "9003", "--discard"}, "sink.log");
  r = c->exec_in_pod(
      a, {podtool_path(), "tput", "--to", b.ip + ":9003", "--seconds", "1", "--streams", "2"});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(last_json(r.output)["bytes"].get<double>() > 0);
}

TEST_CASE("smoke: two clusters at once do not collide") {
  std::string tags[2];
  std::string errors[2];
  auto work = [&](int i) {
    // Everything in the thread: pause processes die with the thread that forked them.
    try {
      auto c = Cluster::create(topo(2, 1));
      tags[i] = c->tag();
      auto s = c->spawn_in_pod(c->pod(2, 1), {podtool_path(), "serve", "--port", "7000", "--echo"},
                               "s.log");
      warren::e2e::wait_until([&] { return s->log().find("listening") != std::string::npos; }, 5s);
      for (int k = 0; k < 5; k++) {
        auto r = c->exec_in_pod(c->pod(1, 1), {podtool_path(), "connect", "--to", "10.2.0.11:7000",
                                               "--send-marker", "x", "--expect-echo"});
        if (r.exit_code != 0) errors[i] += r.output;
      }
    } catch (const std::exception& e) {
      errors[i] = e.what();
    }
  };
  std::thread t0(work, 0), t1(work, 1);
  t0.join();
  t1.join();
  CHECK(errors[0] == "");
  CHECK(errors[1] == "");
  CHECK(tags[0] != tags[1]);
  CHECK_FALSE(leftovers(tags[0]));
  CHECK_FALSE(leftovers(tags[1]));
}

TEST_CASE("smoke: teardown after a failure and stale sweep") {
  // An exception half way through a test: the destructor removes everything.
  std::string tag;
  std::unique_ptr<Process> kept_s, kept_n;
  try {
    auto c = Cluster::create(topo(2, 2));
    tag = c->tag();
    // Handed out of the cluster's scope on purpose: teardown must still kill
    // them (cgroup.kill for the pod one, the netns sweep for the node one).
    kept_s = c->spawn_in_pod(c->pod(1, 1), {"sleep", "1000"}, "sleep.log");
    kept_n = c->spawn_in_node(1, {"sleep", "1000"}, "node-sleep.log");
    throw std::runtime_error("boom");
  } catch (const std::runtime_error&) {
  }
  CHECK_FALSE(leftovers(tag));
  // (Their Process objects reap or stop them; whether a child spawned a
  // moment before the teardown had entered its netns yet is racy, so the
  // check is on what the cluster leaves behind, as before.)

  // A crashed owner: a child builds a cluster and exits without destructors.
  int p[2];
  REQUIRE(pipe(p) == 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    try {
      auto c = Cluster::create(topo(1, 1));
      std::string t = c->tag();
      (void)!write(p[1], t.data(), t.size());
      _exit(0);  // no teardown
    } catch (...) {
    }
    _exit(1);
  }
  close(p[1]);
  char buf[16] = {};
  ssize_t n = read(p[0], buf, sizeof buf - 1);
  close(p[0]);
  waitpid(pid, nullptr, 0);
  REQUIRE(n > 0);
  std::string stale(buf, static_cast<size_t>(n));
  REQUIRE(leftovers(stale));
  CHECK_FALSE(owner_alive(stale));
  auto swept = sweep_stale();
  CHECK(std::find(swept.begin(), swept.end(), stale) != swept.end());
  CHECK_FALSE(leftovers(stale));
}
