// Needs root (creates a named netns with `ip netns`); tagged [root].
#include "netns_scan.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <string>
#include <thread>

using namespace warren;
using namespace warren::cni;

namespace {

int sh(const std::string& cmd) {
  int st = std::system(cmd.c_str());  // NOLINT(concurrency-mt-unsafe)
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// A named netns with 10.99.0.1/32 and fd00:99::1/128 on lo, and one process in it.
struct TestNetns {
  std::string name = "warren-scan-test-" + std::to_string(getpid());
  pid_t pid = -1;

  TestNetns() {
    sh("ip netns del " + name + " 2>/dev/null");
    REQUIRE(sh("ip netns add " + name) == 0);
    std::string ex = "ip netns exec " + name + " ";
    REQUIRE(sh(ex + "ip link set lo up") == 0);
    REQUIRE(sh(ex + "ip addr add 10.99.0.1/32 dev lo") == 0);
    REQUIRE(sh(ex + "ip addr add fd00:99::1/128 dev lo nodad") == 0);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      execlp("ip", "ip", "netns", "exec", name.c_str(), "sleep", "30", nullptr);
      _exit(127);
    }
    // `ip netns exec` enters the netns, then execs sleep in the same process.
    std::string path = "/var/run/netns/" + name;
    auto want = netns_inode(path);
    REQUIRE(want.ok());
    for (int i = 0; i < 200; ++i) {
      auto got = netns_inode("/proc/" + std::to_string(pid) + "/ns/net");
      if (got.ok() && *got == *want) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL("the process never entered " << name);
  }
  ~TestNetns() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    sh("ip netns del " + name + " 2>/dev/null");
  }
};

std::string ips_text(const std::vector<IpAddr>& ips) {
  std::string s;
  for (const auto& ip : ips) s += ip.to_string() + " ";
  return s;
}

}  // namespace

TEST_CASE("scan_netns finds a pod-like netns by its addresses", "[cni][netns][root]") {
  if (geteuid() != 0) std::_Exit(77);  // [root]: ctest reports it skipped (SKIP_RETURN_CODE 77)
  TestNetns ns;
  auto self_before = netns_inode("/proc/thread-self/ns/net");
  REQUIRE(self_before.ok());

  auto scan = scan_netns();
  if (!scan.ok()) FAIL(scan.error().to_string());
  auto want = netns_inode("/var/run/netns/" + ns.name);
  REQUIRE(want.ok());

  // The caller's thread stayed where it was, and its netns is not listed.
  auto self_after = netns_inode("/proc/thread-self/ns/net");
  REQUIRE(self_after.ok());
  CHECK(*self_after == *self_before);
  auto self = netns_inode("/proc/self/ns/net");
  for (const auto& e : *scan) CHECK(e.inode != *self);

  // One entry per netns.
  for (size_t i = 1; i < scan->size(); ++i) CHECK((*scan)[i - 1].inode < (*scan)[i].inode);

  auto it = std::find_if(scan->begin(), scan->end(), [&](const NetnsInfo& e) {
    return std::find(e.ips.begin(), e.ips.end(), *IpAddr::parse("10.99.0.1")) != e.ips.end();
  });
  REQUIRE(it != scan->end());
  CHECK(it->inode == *want);
  CHECK(it->pid == ns.pid);  // the only process in it
  INFO(ips_text(it->ips));
  CHECK(it->ips == std::vector<IpAddr>{*IpAddr::parse("10.99.0.1"), *IpAddr::parse("fd00:99::1")});
}

TEST_CASE("open_netns and netns_addresses on a named netns", "[cni][netns][root]") {
  if (geteuid() != 0) std::_Exit(77);  // root only: ctest reports it skipped
  TestNetns ns;
  auto fd = open_netns("/var/run/netns/" + ns.name);
  REQUIRE(fd.ok());
  auto ips = netns_addresses(*fd);
  close(*fd);
  REQUIRE(ips.ok());
  CHECK(ips_text(*ips) == "10.99.0.1 fd00:99::1 ");

  auto bad = open_netns("/proc/self/ns/mnt");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().message.find("not a network namespace") != std::string::npos);
  CHECK_FALSE(open_netns("/nonexistent/netns").ok());
}
