// WaypointLauncher: "CMD up|down <ns> <gateway> <sa>" as Gateways come, change
// and go, one at a time, with retries of failed commands.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "waypoint_launcher.h"

using namespace warren::controller;

namespace {

struct LauncherFixture {
  uv_loop_t loop;
  std::string dir;
  std::vector<std::string> done;  // "up shop/wp 0"
  std::unique_ptr<WaypointLauncher> l;
  LauncherFixture() {
    uv_loop_init(&loop);
    dir = std::filesystem::temp_directory_path() / ("warren-launcher-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    // Records its arguments; exits with the status in the file "status".
    std::ofstream(dir + "/cmd") << "#!/bin/sh\necho \"$@\" >> " << dir << "/calls\nexit $(cat " << dir
                                << "/status)\n";
    ::chmod((dir + "/cmd").c_str(), 0755);
    set_status(0);
    l = std::make_unique<WaypointLauncher>(&loop, dir + "/cmd --state " + dir, std::chrono::milliseconds(50));
    l->on_done = [this](const std::string& action, const WaypointGateway& g, int status) {
      done.push_back(action + " " + g.ns + "/" + g.name + " " + std::to_string(status));
    };
  }
  ~LauncherFixture() {
    l.reset();
    for (int i = 0; i < 50; ++i) uv_run(&loop, UV_RUN_NOWAIT);
    uv_loop_close(&loop);
    std::filesystem::remove_all(dir);
  }
  void set_status(int s) { std::ofstream(dir + "/status") << s << "\n"; }
  std::vector<std::string> calls() const {
    std::ifstream f(dir + "/calls");
    std::vector<std::string> out;
    for (std::string line; std::getline(f, line);) out.push_back(line);
    return out;
  }
  bool run_until(const std::function<bool()>& cond) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!cond()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      uv_run(&loop, UV_RUN_NOWAIT);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return true;
  }
};

WaypointGateway gw(const std::string& name, const std::string& sa = "") {
  return {"shop", name, sa.empty() ? name : sa, "", "uid-" + name};
}

}  // namespace

TEST_CASE("launcher: up when a waypoint Gateway appears and down when it goes", "[controller][waypoint]") {
  LauncherFixture f;
  f.l->sync({{"shop/a", gw("a")}, {"shop/b", gw("b", "b-sa")}});
  REQUIRE(f.run_until([&] { return f.done.size() == 2; }));
  CHECK(f.calls() == std::vector<std::string>{"--state " + f.dir + " up shop a a", "--state " + f.dir + " up shop b b-sa"});
  CHECK(f.l->up().size() == 2);
  // The same set again: nothing runs.
  f.l->sync({{"shop/a", gw("a")}, {"shop/b", gw("b", "b-sa")}});
  for (int i = 0; i < 20; ++i) uv_run(&f.loop, UV_RUN_NOWAIT);
  CHECK(f.done.size() == 2);
  // b goes; a changes its service account: down b, down a, up a.
  f.l->sync({{"shop/a", gw("a", "other")}});
  REQUIRE(f.run_until([&] { return f.done.size() == 5; }));
  auto c = f.calls();
  CHECK(std::vector<std::string>(c.begin() + 2, c.end()) ==
        std::vector<std::string>{"--state " + f.dir + " down shop a a", "--state " + f.dir + " down shop b b-sa",
                                 "--state " + f.dir + " up shop a other"});
  CHECK(f.l->up().at("shop/a").service_account == "other");
}

TEST_CASE("launcher: a failed command is retried until it succeeds", "[controller][waypoint]") {
  LauncherFixture f;
  f.set_status(3);
  f.l->sync({{"shop/a", gw("a")}});
  REQUIRE(f.run_until([&] { return f.done.size() >= 2; }));
  CHECK(f.done[0] == "up shop/a 3");
  CHECK(f.l->up().empty());
  f.set_status(0);
  REQUIRE(f.run_until([&] { return !f.l->up().empty(); }));
  CHECK(f.done.back() == "up shop/a 0");
}

TEST_CASE("launcher: a command that cannot be started is reported and retried", "[controller][waypoint]") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    WaypointLauncher l(&loop, "/nonexistent/warren-launcher", std::chrono::milliseconds(20));
    int failures = 0;
    l.on_done = [&](const std::string&, const WaypointGateway&, int status) { failures += status != 0; };
    l.sync({{"shop/a", gw("a")}});
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (failures < 2 && std::chrono::steady_clock::now() < deadline) {
      uv_run(&loop, UV_RUN_NOWAIT);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    CHECK(failures >= 2);
    CHECK(l.up().empty());
  }
  for (int i = 0; i < 50; ++i) uv_run(&loop, UV_RUN_NOWAIT);
  uv_loop_close(&loop);
}
