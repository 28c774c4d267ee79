// Runs the real warrenctl binary in a temporary directory and checks that what
// it writes loads with IdentityStore and verifies against the root.
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "warren/certs.h"

using namespace warren;
using namespace warren::certs;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using Clock = std::chrono::system_clock;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "warren-devca-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

struct Run {
  int status = -1;
  std::string output;  // stdout and stderr
};

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

Run warrenctl(const std::vector<std::string>& args) {
  std::string cmd = quote(WARREN_BIN_DIR "/cli/warrenctl");
  for (const auto& a : args) cmd += " " + quote(a);
  cmd += " 2>&1";
  Run r;
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

unsigned mode_of(const fs::path& p) {
  struct stat st {};
  REQUIRE(stat(p.c_str(), &st) == 0);
  return st.st_mode & 0777;
}

std::vector<X509*> ptrs(const std::vector<X509Ptr>& v) {
  std::vector<X509*> out;
  for (const auto& c : v) out.push_back(c.get());
  return out;
}

X509Ptr leaf_of(const fs::path& dir) {
  auto certs = read_certs_file((dir / "cert-chain.pem").string());
  REQUIRE(certs.ok());
  return std::move(certs->front());
}

}  // namespace

TEST_CASE("warrenctl --help explains the commands", "[cli]") {
  Run r = warrenctl({"--help"});
  CHECK(r.status == 0);
  CHECK_THAT(r.output, Catch::Contains("dev-ca"));
  Run i = warrenctl({"dev-ca", "issue", "--help"});
  CHECK(i.status == 0);
  CHECK_THAT(i.output, Catch::Contains("--service-account") && Catch::Contains("--not-after") &&
                           Catch::Contains("--spiffe-id"));
  CHECK(warrenctl({}).status != 0);
  CHECK(warrenctl({"dev-ca", "bogus"}).status != 0);
}

TEST_CASE("dev-ca init writes a root and refuses to overwrite it", "[cli]") {
  TempDir tmp;
  fs::path ca = tmp.path / "ca";
  Run r = warrenctl({"dev-ca", "init", "--out", ca.string(), "--days", "30"});
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK(mode_of(ca / "root-key.pem") == 0600);
  auto loaded = Ca::load((ca / "root-cert.pem").string(), (ca / "root-key.pem").string());
  REQUIRE(loaded.ok());
  CHECK(X509_check_ca(loaded->cert.get()) == 1);
  auto na = not_after_of(loaded->cert.get());
  CHECK(na > Clock::now() + 24h * 29);
  CHECK(na < Clock::now() + 24h * 31);
  std::string before = to_pem(loaded->cert.get());

  Run again = warrenctl({"dev-ca", "init", "--out", ca.string()});
  CHECK(again.status != 0);
  CHECK_THAT(again.output, Catch::Contains("root-cert.pem") && Catch::Contains("--force"));
  auto still = read_certs_file((ca / "root-cert.pem").string());
  REQUIRE(still.ok());
  CHECK(to_pem(still->front().get()) == before);

  Run forced = warrenctl({"dev-ca", "init", "--out", ca.string(), "--force"});
  CHECK(forced.status == 0);
  auto replaced = read_certs_file((ca / "root-cert.pem").string());
  REQUIRE(replaced.ok());
  CHECK(to_pem(replaced->front().get()) != before);

  CHECK(warrenctl(
            {"dev-ca", "init", "--out", (tmp.path / "x").string(), "--trust-domain", "Bad Domain"})
            .status != 0);
}

TEST_CASE("dev-ca issue writes identities that IdentityStore loads and the root verifies",
          "[cli]") {
  TempDir tmp;
  fs::path ca = tmp.path / "ca", out = tmp.path / "certs";
  REQUIRE(
      warrenctl({"dev-ca", "init", "--out", ca.string(), "--trust-domain", "example.org"}).status ==
      0);
  // Trust domain defaults to the CA's; out defaults to the CA dir.
  Run a = warrenctl(
      {"dev-ca", "issue", "--ca", ca.string(), "--namespace", "shop", "--service-account", "web"});
  INFO(a.output);
  REQUIRE(a.status == 0);
  CHECK_THAT(a.output, Catch::Contains("spiffe://example.org/ns/shop/sa/web"));
  CHECK(fs::exists(ca / "shop" / "web" / "cert-chain.pem"));
  CHECK(mode_of(ca / "shop" / "web" / "key.pem") == 0600);

  Run b = warrenctl({"dev-ca", "issue", "--ca", ca.string(), "-n", "shop", "-s", "db", "--out",
                     out.string(), "--hours", "2", "--trust-domain", "cluster.local"});
  INFO(b.output);
  REQUIRE(b.status == 0);

  IdentityStore store;
  auto r = store.load(out.string(), (ca / "root-cert.pem").string());
  INFO((r.ok() ? "" : r.error().message));
  REQUIRE(r.ok());
  auto id = store.get("spiffe://cluster.local/ns/shop/sa/db");
  REQUIRE(id);
  CHECK(id->not_after > Clock::now() + 1h);
  CHECK(id->not_after < Clock::now() + 3h);
  CHECK(verify_chain(id->leaf.get(), {}, store.root_ptrs(), Clock::now()).ok());
}

TEST_CASE("dev-ca issue mints expired, future, foreign and mislabelled certificates", "[cli]") {
  TempDir tmp;
  fs::path ca = tmp.path / "ca", other = tmp.path / "other", out = tmp.path / "certs";
  REQUIRE(warrenctl({"dev-ca", "init", "--out", ca.string()}).status == 0);
  REQUIRE(warrenctl({"dev-ca", "init", "--out", other.string()}).status == 0);
  auto roots = read_certs_file((ca / "root-cert.pem").string());
  REQUIRE(roots.ok());

  auto issue = [&](std::vector<std::string> extra, const std::string& ca_dir,
                   const std::string& sa) {
    std::vector<std::string> args{"dev-ca", "issue", "--ca", ca_dir,  "-n",
                                  "bad",    "-s",    sa,     "--out", out.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    Run r = warrenctl(args);
    INFO(r.output);
    REQUIRE(r.status == 0);
    return leaf_of(out / "bad" / sa);
  };

  SECTION("expired: RFC 3339 with an offset") {
    X509Ptr c =
        issue({"--not-before", "2020-01-01T00:00:00Z", "--not-after", "2020-01-02T02:00:00+02:00"},
              ca.string(), "expired");
    CHECK(Clock::to_time_t(not_before_of(c.get())) == 1577836800);
    CHECK(Clock::to_time_t(not_after_of(c.get())) == 1577836800 + 86400);
    auto v = verify_chain(c.get(), {}, ptrs(*roots), Clock::now());
    REQUIRE_FALSE(v.ok());
    CHECK_THAT(v.error().message, Catch::Contains("expired"));
  }
  SECTION("not yet valid: unix seconds") {
    auto start = Clock::to_time_t(Clock::now() + 240h);
    X509Ptr c = issue({"--not-before", std::to_string(start)}, ca.string(), "future");
    CHECK(Clock::to_time_t(not_before_of(c.get())) == start);
    CHECK(Clock::to_time_t(not_after_of(c.get())) == start + 24 * 3600);
    CHECK_FALSE(verify_chain(c.get(), {}, ptrs(*roots), Clock::now()).ok());
  }
  SECTION("from another CA") {
    X509Ptr c = issue({}, other.string(), "foreign");
    CHECK_FALSE(verify_chain(c.get(), {}, ptrs(*roots), Clock::now()).ok());
  }
  SECTION("with an overridden SPIFFE id") {
    X509Ptr c = issue({"--spiffe-id", "spiffe://evil.example/ns/kube-system/sa/admin"}, ca.string(),
                      "liar");
    CHECK(spiffe_uri_of(c.get()) == "spiffe://evil.example/ns/kube-system/sa/admin");
    CHECK(verify_chain(c.get(), {}, ptrs(*roots), Clock::now()).ok());
    IdentityStore store;
    REQUIRE(store.load(out.string(), (ca / "root-cert.pem").string()).ok());
    CHECK(store.get("spiffe://evil.example/ns/kube-system/sa/admin"));
  }
}

TEST_CASE("dev-ca issue errors name the file and reason", "[cli]") {
  TempDir tmp;
  fs::path ca = tmp.path / "ca";
  Run missing = warrenctl({"dev-ca", "issue", "--ca", ca.string(), "-n", "a", "-s", "b"});
  CHECK(missing.status != 0);
  CHECK_THAT(missing.output,
             Catch::Contains((ca / "root-cert.pem").string()) && Catch::Contains("No such file"));
  REQUIRE(warrenctl({"dev-ca", "init", "--out", ca.string()}).status == 0);
  CHECK(warrenctl({"dev-ca", "issue", "--ca", ca.string(), "-n", "a/b", "-s", "c"}).status != 0);
  Run bad_time = warrenctl(
      {"dev-ca", "issue", "--ca", ca.string(), "-n", "a", "-s", "b", "--not-after", "yesterday"});
  CHECK(bad_time.status != 0);
  CHECK_THAT(bad_time.output, Catch::Contains("--not-after") && Catch::Contains("yesterday"));
  Run inverted =
      warrenctl({"dev-ca", "issue", "--ca", ca.string(), "-n", "a", "-s", "b", "--not-before",
                 "2030-01-01T00:00:00Z", "--not-after", "2029-01-01T00:00:00Z"});
  CHECK(inverted.status != 0);
  // A damaged CA key.
  std::ofstream((ca / "root-key.pem").string(), std::ios::trunc) << "not a key";
  Run damaged = warrenctl({"dev-ca", "issue", "--ca", ca.string(), "-n", "a", "-s", "b"});
  CHECK(damaged.status != 0);
  CHECK_THAT(damaged.output, Catch::Contains((ca / "root-key.pem").string()));
}

TEST_CASE("dev-ca issue-config issues one identity per HBONE service account", "[cli]") {
  TempDir tmp;
  fs::path ca = tmp.path / "ca", out = tmp.path / "certs", cfg = tmp.path / "node.json";
  REQUIRE(warrenctl({"dev-ca", "init", "--out", ca.string()}).status == 0);
  std::ofstream(cfg.string()) << R"({
    "trustDomain": "mesh.test",
    "workloads": [
      {"uid": "1", "name": "web-1", "namespace": "shop", "serviceAccount": "web"},
      {"uid": "2", "name": "web-2", "namespace": "shop", "serviceAccount": "web", "protocol": "HBONE"},
      {"uid": "3", "name": "db", "namespace": "shop"},
      {"uid": "4", "name": "legacy", "namespace": "old", "serviceAccount": "legacy", "protocol": "NONE"},
      {"uid": "5", "name": "api", "namespace": "api", "serviceAccount": "api"}
    ]
  })";
  Run r = warrenctl({"dev-ca", "issue-config", "--ca", ca.string(), "--config", cfg.string(),
                     "--out", out.string()});
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 3);
  IdentityStore store;
  REQUIRE(store.load(out.string(), (ca / "root-cert.pem").string()).ok());
  CHECK(store.ids() == std::vector<std::string>{"spiffe://mesh.test/ns/api/sa/api",
                                                "spiffe://mesh.test/ns/shop/sa/default",
                                                "spiffe://mesh.test/ns/shop/sa/web"});
  for (const auto& id : store.ids())
    CHECK(verify_chain(store.get(id)->leaf.get(), {}, store.root_ptrs(), Clock::now()).ok());
  CHECK_FALSE(fs::exists(out / "old"));

  SECTION("errors name the file and the JSON path") {
    std::ofstream(cfg.string(), std::ios::trunc) << R"({"workloads": [{"name": "x"}]})";
    Run e = warrenctl({"dev-ca", "issue-config", "--ca", ca.string(), "--config", cfg.string()});
    CHECK(e.status != 0);
    CHECK_THAT(e.output, Catch::Contains(cfg.string() + ": /workloads/0/namespace: is required"));
    std::ofstream(cfg.string(), std::ios::trunc) << "{ not json";
    Run j = warrenctl({"dev-ca", "issue-config", "--ca", ca.string(), "--config", cfg.string()});
    CHECK(j.status != 0);
    CHECK_THAT(j.output, Catch::Contains(cfg.string() + ": not valid JSON"));
    Run m = warrenctl({"dev-ca", "issue-config", "--ca", ca.string(), "--config",
                       (tmp.path / "nope.json").string()});
    CHECK(m.status != 0);
    CHECK_THAT(m.output, Catch::Contains("nope.json"));
  }
}
