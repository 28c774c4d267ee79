// warren-netns-waypoint STATE up|down <namespace> <gateway> <serviceAccount>
//
// The netns harness's side of warren-controller's --waypoint-launcher
// (controller/waypoint_launcher.h): waypoints run as pods of the cluster.
// STATE (JSON, written by Mesh, see MeshOptions::waypoint_slots) lists the
// pod netns reserved for waypoints ("slots") and where things are; this
// program records in it which waypoint runs where.
//
//   up    takes a free slot, adds a bootstrap token "<token> waypoint:<ns>/<gw>"
//         to the controller's tokens file, starts warren-waypoint --controller
//         in the slot's netns and cgroup (detached; its log goes to
//         <logDir>/waypoint-<ns>-<gw>.log), and writes the Pod manifest
//         waypoints/<ns>-<gw>.yaml (name <gw>-<slot>, label
//         gateway.networking.k8s.io/gateway-name, nodeName, podIP,
//         serviceAccountName). A waypoint already up is left alone.
//   down  stops it (SIGTERM), removes the manifest and the token.
// Exit 0 on success, 1 with a message on stderr otherwise. The cluster's
// teardown kills whatever still runs in its pod cgroups.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "warren-netns-waypoint: %s\n", msg.c_str());
  std::exit(1);
}

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) die("cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Atomic, through a hidden temp file (the controller skips ".name" files).
void write_file(const std::string& path, const std::string& text, mode_t mode = 0644) {
  fs::path p(path);
  std::string tmp = (p.parent_path() / ("." + p.filename().string() + ".tmp")).string();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) die("cannot write " + tmp + ": " + std::strerror(errno));
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  if (!ok) die("cannot write " + tmp);
  fs::rename(tmp, path);
}

std::string random_hex(size_t bytes) {
  std::ifstream r("/dev/urandom", std::ios::binary);
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < bytes; i++) {
    unsigned char c = static_cast<unsigned char>(r.get());
    s += hex[c >> 4];
    s += hex[c & 15];
  }
  return s;
}

// The tokens file without the lines of `principal`, plus `add` when not empty.
void edit_tokens(const std::string& path, const std::string& principal, const std::string& add) {
  std::istringstream in(read_file(path));
  std::string out, line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string token, who;
    ls >> token >> who;
    if (who == principal) continue;
    out += line + "\n";
  }
  out += add;
  write_file(path, out, 0600);
}

// A process started by an earlier "up" that is still warren-waypoint.
bool waypoint_running(pid_t pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  std::ifstream f("/proc/" + std::to_string(pid) + "/cmdline");
  std::string cmd((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return cmd.find("warren-waypoint") != std::string::npos || cmd.find("warren-nsexec") != std::string::npos;
}

pid_t spawn_detached(const std::vector<std::string>& argv, const std::string& log) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out < 0) die("cannot open " + log);
  pid_t pid = ::fork();  // single-threaded: the child may do anything
  if (pid < 0) die(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    ::setsid();
    int in = ::open("/dev/null", O_RDONLY);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(out, 2);
    ::execv(args[0], args.data());
    std::fprintf(stderr, "exec %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  ::close(out);
  return pid;
}

json pod_manifest(const json& slot, const std::string& ns, const std::string& gw, const std::string& sa,
                  const std::string& name, const std::string& uid) {
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata",
           {{"name", name},
            {"namespace", ns},
            {"uid", uid},
            {"labels", {{"gateway.networking.k8s.io/gateway-name", gw}}}}},
          {"spec",
           {{"nodeName", slot["node"]},
            {"serviceAccountName", sa},
            {"containers", json::array({{{"name", "waypoint"}, {"image", "warren-waypoint"}}})}}},
          {"status", {{"phase", "Running"}, {"podIP", slot["ip"]}}}};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6 || (std::string(argv[2]) != "up" && std::string(argv[2]) != "down"))
    die("usage: warren-netns-waypoint STATE up|down NAMESPACE GATEWAY SERVICE_ACCOUNT");
  std::string state_path = argv[1], action = argv[2], ns = argv[3], gw = argv[4], sa = argv[5];
  // One launcher at a time per state file.
  int lock = ::open((state_path + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock < 0 || ::flock(lock, LOCK_EX) != 0) die("cannot lock " + state_path + ".lock");
  json st = json::parse(read_file(state_path), nullptr, false);
  if (!st.is_object() || !st.contains("slots")) die(state_path + ": not a launcher state");
  if (!st.contains("running")) st["running"] = json::object();
  std::string key = ns + "/" + gw;
  std::string principal = "waypoint:" + key;
  std::string manifest = st["manifestsDir"].get<std::string>() + "/waypoints/" + ns + "-" + gw + ".yaml";
  json& running = st["running"];

  if (action == "down") {
    if (running.contains(key)) {
      pid_t pid = running[key].value("pid", 0);
      if (waypoint_running(pid)) ::kill(pid, SIGTERM);
      running.erase(key);
    }
    std::error_code ec;
    fs::remove(manifest, ec);
    edit_tokens(st["tokensFile"], principal, "");
    write_file(state_path, st.dump(2));
    std::printf("waypoint %s down\n", key.c_str());
    return 0;
  }

  if (running.contains(key) && waypoint_running(running[key].value("pid", 0)) &&
      running[key].value("serviceAccount", "") == sa) {
    std::printf("waypoint %s already up\n", key.c_str());
    return 0;
  }
  // A free slot (or the one this waypoint had).
  const json* slot = nullptr;
  for (const auto& s : st["slots"]) {
    bool taken = false;
    for (const auto& [k, r] : running.items())
      if (k != key && r.value("slot", "") == s.value("pod", "")) taken = true;
    if (!taken) {
      slot = &s;
      break;
    }
  }
  if (!slot) die("no free waypoint slot for " + key + " (MeshOptions::waypoint_slots)");
  std::string name = gw + "-" + slot->value("pod", "");
  std::string dir = st["dir"];
  std::string token = random_hex(16);
  std::string token_file = dir + "/token-" + ns + "-" + gw;
  write_file(token_file, token + "\n", 0600);
  edit_tokens(st["tokensFile"], principal, token + " " + principal + "\n");
  std::vector<std::string> cmd{st["nsexec"], "--cgroup", (*slot)["cgroup"], "--netns", (*slot)["netnsPath"], "--",
                               st["waypointBin"], "--controller", st["controller"], "--controller-token", token_file,
                               "--controller-ca", st["caFile"], "--waypoint", key, "--pod", name,
                               "--log-level", st.value("logLevel", "info")};
  pid_t pid = spawn_detached(cmd, st["logDir"].get<std::string>() + "/waypoint-" + ns + "-" + gw + ".log");
  fs::create_directories(fs::path(manifest).parent_path());
  write_file(manifest, pod_manifest(*slot, ns, gw, sa, name, st.value("tag", "t") + "-" + name).dump(2) + "\n");
  running[key] = {{"slot", slot->value("pod", "")}, {"pid", pid}, {"pod", name}, {"serviceAccount", sa},
                  {"netnsPath", (*slot)["netnsPath"]}, {"ip", (*slot)["ip"]}};
  write_file(state_path, st.dump(2));
  std::printf("waypoint %s up in %s (pid %d)\n", key.c_str(), slot->value("pod", "").c_str(), pid);
  return 0;
}
