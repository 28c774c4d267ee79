#include "warren/log.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <thread>
#include <vector>

using nlohmann::json;
using namespace std::chrono;

namespace {

std::string temp_dir() {
  char tmpl[] = "/tmp/warren-log-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  return tmpl;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<std::string> lines;
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  size_t start = 0;
  while (start < all.size()) {
    size_t nl = all.find('\n', start);
    REQUIRE(nl != std::string::npos);  // every line is newline-terminated
    lines.push_back(all.substr(start, nl - start));
    start = nl + 1;
  }
  return lines;
}

const system_clock::time_point kFixed{milliseconds{1714566896789}};

}  // namespace

TEST_CASE("log: levels", "[log]") {
  warren::log::init("debug");
  CHECK(warren::log::level() == "debug");
  for (const char* l : {"trace", "debug", "info", "warn", "error", "off"}) {
    CHECK(warren::log::set_level(l));
    CHECK(warren::log::level() == l);
  }
  CHECK(warren::log::set_level("warning"));
  CHECK(warren::log::level() == "warn");
  CHECK_FALSE(warren::log::set_level("verbose"));
  CHECK_FALSE(warren::log::set_level("INFO"));
  CHECK_FALSE(warren::log::set_level(""));
  CHECK(warren::log::level() == "warn");  // unchanged
  warren::log::init("nonsense");
  CHECK(warren::log::level() == "info");
  warren::log::set_level("off");
}

TEST_CASE("log: escape keeps peer text on one line", "[log]") {
  CHECK(warren::log::escape("plain.example.com") == "plain.example.com");
  CHECK(warren::log::escape("a\nb\r\tc") == "a\\nb\\r\\tc");
  CHECK(warren::log::escape(std::string("x\0y\x1b\x7f", 5)) == "x\\x00y\\x1b\\x7f");
  CHECK(warren::log::escape("q\"b\\") == "q\\\"b\\\\");
}

TEST_CASE("log: rfc3339 with milliseconds in UTC", "[log]") {
  CHECK(warren::log::rfc3339_millis(kFixed) == "2024-05-01T12:34:56.789Z");
  CHECK(warren::log::rfc3339_millis(system_clock::time_point{}) == "1970-01-01T00:00:00.000Z");
  CHECK(warren::log::rfc3339_millis(system_clock::time_point{milliseconds{-1}}) ==
        "1969-12-31T23:59:59.999Z");
}

TEST_CASE("log: access log writes one valid JSON object per line", "[log]") {
  std::string dir = temp_dir();
  std::string path = dir + "/access.log";
  {
    warren::log::AccessLog log(path, [] { return kFixed; });
    REQUIRE(log.enabled());
    REQUIRE_FALSE(log.last_error());
    log.write({{"src", "10.0.0.1:1234"}, {"bytes", 42}});
    // Values crafted to break a line-oriented format.
    log.write({{"sni", "evil\n{\"forged\":true}\n"}, {"path", "/a\"b\\c\r\x01"}});
    log.write({{"bad_utf8", std::string("\xff\xfe ok")}});        // would throw in plain dump()
    log.write({{"time", "2000-01-01T00:00:00.000Z"}, {"x", 1}});  // kept as given
    log.write(json::object());
    log.write(json::array({1, 2}));
    log.write(json("just a string\nwith newline"));
    CHECK(log.dropped() == 0);
  }
  auto lines = read_lines(path);
  REQUIRE(lines.size() == 7);
  std::vector<json> objs;
  for (const auto& l : lines) {
    INFO(l);
    REQUIRE(json::accept(l));
    objs.push_back(json::parse(l));
    CHECK(objs.back().is_object());
    CHECK(l.find('\r') == std::string::npos);
  }
  CHECK(lines[0] == R"({"time":"2024-05-01T12:34:56.789Z","bytes":42,"src":"10.0.0.1:1234"})");
  CHECK(objs[1]["sni"] == "evil\n{\"forged\":true}\n");
  CHECK(objs[1]["path"] == "/a\"b\\c\r\x01");
  CHECK(objs[2]["bad_utf8"].get<std::string>().find(" ok") != std::string::npos);
  CHECK(objs[3]["time"] == "2000-01-01T00:00:00.000Z");
  CHECK(lines[4] == R"({"time":"2024-05-01T12:34:56.789Z"})");
  CHECK(objs[5]["entry"] == json::array({1, 2}));
  CHECK(objs[6]["entry"] == "just a string\nwith newline");
  std::remove(path.c_str());
  rmdir(dir.c_str());
}

TEST_CASE("log: access log time defaults to now", "[log]") {
  std::string dir = temp_dir();
  std::string path = dir + "/a.log";
  {
    warren::log::AccessLog log(path);
    log.write({{"k", "v"}});
  }
  auto lines = read_lines(path);
  REQUIRE(lines.size() == 1);
  auto j = json::parse(lines[0]);
  std::regex rfc3339(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z)");
  CHECK(std::regex_match(j["time"].get<std::string>(), rfc3339));
  std::remove(path.c_str());
  rmdir(dir.c_str());
}

TEST_CASE("log: access log reopen after rotation", "[log]") {
  std::string dir = temp_dir();
  std::string path = dir + "/access.log", rotated = dir + "/access.log.1";
  warren::log::AccessLog log(path, [] { return kFixed; });
  log.write({{"n", 1}});
  REQUIRE(std::rename(path.c_str(), rotated.c_str()) == 0);
  log.write({{"n", 2}});  // still goes to the rotated file
  REQUIRE(log.reopen().ok());
  log.write({{"n", 3}});
  auto old_lines = read_lines(rotated), new_lines = read_lines(path);
  REQUIRE(old_lines.size() == 2);
  REQUIRE(new_lines.size() == 1);
  CHECK(json::parse(new_lines[0])["n"] == 3);
  std::remove(path.c_str());
  std::remove(rotated.c_str());
  rmdir(dir.c_str());
}

TEST_CASE("log: access log disabled and failing paths never throw", "[log]") {
  warren::log::AccessLog off("");
  CHECK_FALSE(off.enabled());
  CHECK_NOTHROW(off.write({{"x", 1}}));
  CHECK(off.reopen().ok());

  warren::log::AccessLog bad("/nonexistent-dir-warren/access.log");
  REQUIRE(bad.last_error().has_value());
  CHECK(bad.last_error()->code == warren::Errc::kSystem);
  CHECK_NOTHROW(bad.write({{"x", 1}}));
  CHECK(bad.dropped() == 1);
  CHECK_FALSE(bad.reopen().ok());
}

TEST_CASE("log: concurrent access log writers do not interleave lines", "[log]") {
  std::string dir = temp_dir();
  std::string path = dir + "/c.log";
  constexpr int kThreads = 4, kLines = 500;
  {
    warren::log::AccessLog log(path);
    std::vector<std::thread> ts;
    for (int t = 0; t < kThreads; ++t) {
      ts.emplace_back([&, t] {
        for (int i = 0; i < kLines; ++i) {
          log.write({{"t", t}, {"i", i}, {"pad", std::string(200 + i, 'x')}});
        }
      });
    }
    for (auto& t : ts) t.join();
  }
  auto lines = read_lines(path);
  REQUIRE(lines.size() == kThreads * kLines);
  int bad = 0;
  for (const auto& l : lines) bad += json::accept(l) ? 0 : 1;
  CHECK(bad == 0);
  std::remove(path.c_str());
  rmdir(dir.c_str());
}
