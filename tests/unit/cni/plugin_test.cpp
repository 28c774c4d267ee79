// Runs the built warren-cni binary as a runtime would, against a test
// enrollment server.
#include "plugin.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "test_server.h"

using namespace warren;
using namespace warren::cni;
using namespace warren::cni::testing;
using nlohmann::json;

namespace {

struct Run {
  int status = -1;
  std::string out, err;
  json out_json() const {
    auto j = json::parse(out, nullptr, false);
    INFO("stdout: " << out << "\nstderr: " << err);
    REQUIRE_FALSE(j.is_discarded());
    return j;
  }
};

std::string slurp(const std::string& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Run run_cni(const TempDir& dir, const std::map<std::string, std::string>& env,
            const std::string& stdin_data) {
  std::string in = (dir.path / "stdin").string(), out = (dir.path / "stdout").string(),
              err = (dir.path / "stderr").string();
  std::ofstream(in) << stdin_data;
  std::vector<std::string> env_s;
  for (const auto& [k, v] : env) env_s.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& s : env_s) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string bin = WARREN_BIN_DIR "/cni/warren-cni";
  char* argv[] = {bin.data(), nullptr};
  int fin = open(in.c_str(), O_RDONLY | O_CLOEXEC);
  int fout = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int ferr = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE((fin >= 0 && fout >= 0 && ferr >= 0));
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(fin, 0);
    dup2(fout, 1);
    dup2(ferr, 2);
    execve(bin.c_str(), argv, envp.data());
    _exit(127);
  }
  close(fin);
  close(fout);
  close(ferr);
  int st = 0;
  waitpid(pid, &st, 0);
  Run r;
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

const json kPrevResult = json::parse(R"({
  "cniVersion": "1.0.0",
  "interfaces": [{"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff", "sandbox": "/var/run/netns/x"}],
  "ips": [{"address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 0},
          {"address": "fd00::2/64", "interface": 0}],
  "routes": [{"dst": "0.0.0.0/0"}],
  "dns": {"nameservers": ["10.96.0.10"]}
})");

json conf(const std::string& socket_path, const std::string& version = "1.0.0") {
  json prev = kPrevResult;
  prev["cniVersion"] = version;
  return {{"cniVersion", version},     {"name", "k8s-pod-network"}, {"type", "warren-cni"},
          {"socketPath", socket_path}, {"timeoutMs", 2000},         {"prevResult", prev}};
}

std::map<std::string, std::string> pod_env(const std::string& cmd) {
  return {{"CNI_COMMAND", cmd},
          {"CNI_CONTAINERID", "c0ffee"},
          {"CNI_NETNS", "/var/run/netns/cni-1"},
          {"CNI_IFNAME", "eth0"},
          {"CNI_PATH", "/opt/cni/bin"},
          {"CNI_ARGS",
           "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=sleep-1;"
           "K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=uid-1"}};
}

}  // namespace

TEST_CASE("warren-cni ADD enrolls the pod and passes prevResult through", "[cni][plugin]") {
  TempDir dir;
  std::string sock = (dir.path / "cni.sock").string();
  ServerThread srv(sock, nullptr);
  REQUIRE(srv.start_result().ok());

  for (std::string ver : {"1.0.0", "0.3.1"}) {
    auto r = run_cni(dir, pod_env("ADD"), conf(sock, ver).dump());
    INFO(r.err);
    REQUIRE(r.status == 0);
    json want = kPrevResult;
    want["cniVersion"] = ver;
    CHECK(r.out_json() == want);
  }
  auto seen = srv.seen();
  REQUIRE(seen.size() == 2);
  CHECK(seen[0].op == Op::kAdd);
  CHECK(seen[0].pod_namespace == "shop");
  CHECK(seen[0].name == "sleep-1");
  CHECK(seen[0].uid == "uid-1");
  CHECK(seen[0].netns == "/var/run/netns/cni-1");
  CHECK(seen[0].container_id == "c0ffee");
  REQUIRE(seen[0].ips.size() == 2);
  CHECK(seen[0].ips[0].to_string() == "10.1.0.2");
  CHECK(seen[0].ips[1].to_string() == "fd00::2");
}

TEST_CASE("warren-cni ADD with the node down is a try-again-later error", "[cni][plugin]") {
  TempDir dir;
  auto r = run_cni(dir, pod_env("ADD"), conf((dir.path / "none.sock").string()).dump());
  CHECK(r.status == 1);
  json j = r.out_json();
  CHECK(j["cniVersion"] == "1.0.0");
  CHECK(j["code"] == 11);
  CHECK(j["msg"] == "warren-node is not reachable");
  CHECK(j["details"].get<std::string>().find("none.sock") != std::string::npos);
}

TEST_CASE("warren-cni ADD refused by the node, CHECK asks the node", "[cni][plugin]") {
  TempDir dir;
  std::string sock = (dir.path / "cni.sock").string();
  ServerThread srv(sock, [](const EnrollRequest& r) -> Result<void> {
    if (r.op == Op::kCheck) return make_error(Errc::kNotFound, "pod shop/sleep-1 not enrolled");
    return make_error(Errc::kInvalidArgument, "no config for shop/sleep-1");
  });
  REQUIRE(srv.start_result().ok());
  auto r = run_cni(dir, pod_env("ADD"), conf(sock).dump());
  CHECK(r.status == 1);
  CHECK(r.out_json()["code"] == 100);
  CHECK(r.out_json()["details"] == "no config for shop/sleep-1");

  r = run_cni(dir, pod_env("CHECK"), conf(sock).dump());
  CHECK(r.status == 1);
  CHECK(r.out_json()["details"] == "pod shop/sleep-1 not enrolled");
  REQUIRE(srv.seen().size() == 2);
  CHECK(srv.seen()[1].op == Op::kCheck);
}

TEST_CASE("warren-cni DEL succeeds with the node down or the pod unknown", "[cni][plugin]") {
  TempDir dir;
  std::string sock = (dir.path / "cni.sock").string();
  auto env = pod_env("DEL");
  env["CNI_NETNS"] = "";  // the runtime may have removed it already
  auto r = run_cni(dir, env, conf(sock).dump());
  CHECK(r.status == 0);
  CHECK(r.out.empty());
  CHECK(r.err.find("DEL (ignored)") != std::string::npos);

  ServerThread srv(sock, [](const EnrollRequest&) -> Result<void> {
    return make_error(Errc::kNotFound, "unknown pod");
  });
  REQUIRE(srv.start_result().ok());
  r = run_cni(dir, env, conf(sock).dump());
  CHECK(r.status == 0);
  CHECK(r.out.empty());
  REQUIRE(srv.seen().size() == 1);
  CHECK(srv.seen()[0].op == Op::kDel);
  CHECK(srv.seen()[0].netns.empty());

  r = run_cni(dir, env, "garbage");
  CHECK(r.status == 0);
}

TEST_CASE("warren-cni VERSION and usage", "[cni][plugin]") {
  TempDir dir;
  auto r = run_cni(dir, {{"CNI_COMMAND", "VERSION"}}, R"({"cniVersion":"1.0.0"})");
  CHECK(r.status == 0);
  CHECK(r.out_json() ==
        json::parse(
            R"({"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]})"));

  r = run_cni(dir, {}, "");
  CHECK(r.status == 1);
  CHECK(r.out.empty());
  CHECK(r.err.find("CNI_COMMAND") != std::string::npos);
}

TEST_CASE("warren-cni rejects a bad network config naming the field", "[cni][plugin]") {
  TempDir dir;
  std::string sock = (dir.path / "cni.sock").string();
  auto err_of = [&](const json& c, const std::string& cmd = "ADD") {
    auto r = run_cni(dir, pod_env(cmd), c.dump());
    CHECK(r.status == 1);
    return r.out_json();
  };
  json c = conf(sock);
  c["socketPath"] = 5;
  json e = err_of(c);
  CHECK(e["code"] == 7);
  CHECK(e["msg"] == "invalid network config: socketPath: must be an absolute path");

  c = conf(sock);
  c["prevResult"]["ips"][1]["address"] = "fd00::2";
  e = err_of(c);
  CHECK(e["code"] == 7);
  CHECK(e["msg"].get<std::string>().find("prevResult.ips[1].address") != std::string::npos);

  c = conf(sock);
  c.erase("prevResult");
  CHECK(err_of(c)["msg"].get<std::string>().rfind("invalid network config: prevResult: missing",
                                                  0) == 0);

  c = conf(sock);
  c.erase("name");
  CHECK(err_of(c)["msg"] == "invalid network config: name: missing");

  c = conf(sock);
  c["cniVersion"] = "0.2.0";
  CHECK(err_of(c)["code"] == 1);

  c = conf(sock, "0.3.1");
  CHECK(err_of(c, "CHECK")["code"] == 1);

  auto r = run_cni(dir, pod_env("ADD"), "{\"cniVersion\":");
  CHECK(r.status == 1);
  CHECK(r.out_json()["code"] == 6);

  auto env = pod_env("ADD");
  env.erase("CNI_NETNS");
  r = run_cni(dir, env, conf(sock).dump());
  CHECK(r.out_json()["code"] == 4);
  CHECK(r.out_json()["msg"] == "CNI_NETNS is not set");

  env = pod_env("ADD");
  env["CNI_ARGS"] = "K8S_POD_NAMESPACE=Bad_NS;K8S_POD_NAME=x";
  r = run_cni(dir, env, conf(sock).dump());
  CHECK(r.out_json()["code"] == 4);
  CHECK(r.out_json()["details"].get<std::string>().rfind("namespace:", 0) == 0);
}

TEST_CASE("warren-cni passes non-Kubernetes containers through", "[cni][plugin]") {
  TempDir dir;
  auto env = pod_env("ADD");
  env["CNI_ARGS"] = "IgnoreUnknown=1";
  // No server at all: nothing is sent.
  auto r = run_cni(dir, env, conf((dir.path / "none.sock").string()).dump());
  CHECK(r.status == 0);
  CHECK(r.out_json() == kPrevResult);
}

TEST_CASE("run_plugin in process: the node's hang is bounded by timeoutMs", "[cni][plugin]") {
  TempDir dir;
  std::string sock = (dir.path / "cni.sock").string();
  int l = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  sock.copy(sa.sun_path, sizeof sa.sun_path - 1);
  REQUIRE(bind(l, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  REQUIRE(listen(l, 4) == 0);
  json c = conf(sock);
  c["timeoutMs"] = 200;
  PluginEnv env{"ADD",
                "c0ffee",
                "/var/run/netns/cni-1",
                "eth0",
                "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=sleep-1",
                ""};
  auto out = run_plugin(env, c.dump());
  CHECK(out.exit_code == 1);
  auto j = json::parse(out.out);
  CHECK(j["code"] == 11);
  CHECK(j["details"].get<std::string>().find("timed out") != std::string::npos);
  close(l);
}
