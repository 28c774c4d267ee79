// Tags, owners and teardown: everything that must also work for a cluster
// whose owner crashed.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

#include "harness.h"

namespace warren::netns {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

std::string owner_file(const std::string& tag) {
  return std::string(kStateDir) + "/" + tag + ".owner";
}
std::string cgroup_dir(const std::string& tag) {
  return std::string(kCgroupRoot) + "/" + kCgroupPrefix + tag;
}
std::string netns_prefix(const std::string& tag) {
  return kNetnsPrefix + tag + "-";
}

// Field 22 of /proc/<pid>/stat (start time in clock ticks), empty if gone.
std::string start_time(pid_t pid) {
  std::string s = e2e::read_file("/proc/" + std::to_string(pid) + "/stat");
  auto close = s.rfind(')');
  if (close == std::string::npos) return "";
  std::istringstream in(s.substr(close + 2));
  std::string f;
  for (int i = 3; i <= 22 && in >> f; i++) {
  }
  return f;
}

std::vector<std::string> tag_netns(const std::string& tag) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto& e : fs::directory_iterator("/var/run/netns", ec)) {
    std::string n = e.path().filename().string();
    if (n.rfind(netns_prefix(tag), 0) == 0) out.push_back(n);
  }
  return out;
}

// Every cgroup directory under `dir`, children before parents.
void post_order(const std::string& dir, std::vector<std::string>& out) {
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory(ec)) post_order(e.path().string(), out);
  out.push_back(dir);
}

bool populated(const std::string& cg) {
  std::string ev = e2e::read_file(cg + "/cgroup.events");
  return ev.find("populated 1") != std::string::npos;
}

void kill_cgroup(const std::string& cg) {
  if (!fs::exists(cg)) return;
  if (fs::exists(cg + "/cgroup.kill")) {
    std::ofstream(cg + "/cgroup.kill") << "1";
  } else {
    std::vector<std::string> dirs;
    post_order(cg, dirs);
    for (auto& d : dirs) {
      std::istringstream procs(e2e::read_file(d + "/cgroup.procs"));
      for (pid_t pid; procs >> pid;) ::kill(pid, SIGKILL);
    }
  }
  e2e::wait_until([&] { return !populated(cg); }, 5s, 20ms);
}

// SIGKILLs every process whose netns is one of `paths` (ip netns pids, for all).
void kill_netns_users(const std::vector<std::string>& paths) {
  std::set<std::pair<dev_t, ino_t>> ids;
  for (auto& p : paths) {
    struct stat st {};
    if (::stat(p.c_str(), &st) == 0) ids.insert({st.st_dev, st.st_ino});
  }
  if (ids.empty()) return;
  for (int round = 0; round < 50; round++) {
    bool any = false;
    std::error_code ec;
    for (auto& e : fs::directory_iterator("/proc", ec)) {
      std::string n = e.path().filename().string();
      if (n.empty() || !std::all_of(n.begin(), n.end(), ::isdigit)) continue;
      pid_t pid = std::stoi(n);
      if (pid == getpid()) continue;
      struct stat st {};
      if (::stat(("/proc/" + n + "/ns/net").c_str(), &st) != 0) continue;
      if (!ids.count({st.st_dev, st.st_ino})) continue;
      // A zombie keeps its /proc entry but no netns; skip those we cannot kill.
      if (::kill(pid, SIGKILL) == 0) any = true;
    }
    if (!any) return;
    std::this_thread::sleep_for(20ms);
  }
}

}  // namespace

bool owner_alive(const std::string& tag) {
  std::istringstream in(e2e::read_file(owner_file(tag)));
  pid_t pid = 0;
  std::string start;
  if (!(in >> pid >> start) || pid <= 0) return false;
  return ::kill(pid, 0) == 0 && start_time(pid) == start;
}

bool claim_tag(const std::string& tag, const std::string& dir) {
  std::error_code ec;
  fs::create_directories(kStateDir, ec);
  // Written aside and linked into place, so a concurrent sweep never reads a
  // half-written owner file; link() fails if the tag is taken.
  std::string tmp = owner_file(tag) + "." + std::to_string(getpid()) + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << getpid() << " " << start_time(getpid()) << " " << dir << "\n";
    if (!f.flush()) return false;
  }
  bool ok = ::link(tmp.c_str(), owner_file(tag).c_str()) == 0;
  ::unlink(tmp.c_str());
  return ok;
}

std::vector<std::string> list_tags() {
  std::set<std::string> tags;
  std::error_code ec;
  for (auto& e : fs::directory_iterator("/var/run/netns", ec)) {
    std::string n = e.path().filename().string();
    if (n.rfind(kNetnsPrefix, 0) != 0) continue;
    n = n.substr(std::string(kNetnsPrefix).size());
    if (auto dash = n.find('-'); dash != std::string::npos) tags.insert(n.substr(0, dash));
  }
  for (auto& e : fs::directory_iterator(kCgroupRoot, ec)) {
    std::string n = e.path().filename().string();
    if (n.rfind(kCgroupPrefix, 0) == 0) tags.insert(n.substr(std::string(kCgroupPrefix).size()));
  }
  for (auto& e : fs::directory_iterator(kStateDir, ec)) {
    if (e.path().extension() == ".owner") tags.insert(e.path().stem().string());
  }
  return {tags.begin(), tags.end()};
}

std::string teardown_tag(const std::string& tag) {
  if (tag.empty()) throw std::invalid_argument("empty tag");
  std::string cg = cgroup_dir(tag);
  auto names = tag_netns(tag);
  std::vector<std::string> paths;
  for (auto& n : names) paths.push_back("/var/run/netns/" + n);

  kill_cgroup(cg);
  kill_netns_users(paths);
  std::string left;
  for (auto& n : names) {
    auto r = e2e::run({"/usr/sbin/ip", "netns", "del", n});
    if (r.exit_code != 0) left += "netns " + n + ": " + r.output;
  }
  if (fs::exists(cg)) {
    kill_cgroup(cg);
    std::vector<std::string> dirs;
    post_order(cg, dirs);
    for (auto& d : dirs) {
      bool gone =
          e2e::wait_until([&] { return ::rmdir(d.c_str()) == 0 || errno == ENOENT; }, 5s, 20ms);
      if (!gone) left += "cgroup " + d + ": " + std::strerror(errno) + "\n";
    }
  }
  // BPF pins of the cluster's node proxies (tests/netns/mesh.cpp names them
  // /sys/fs/bpf/warren/t-<tag>-n<N>); unlinking the pins releases the
  // programs and maps (their cgroups are gone already).
  {
    std::error_code pec;
    for (auto& e : fs::directory_iterator("/sys/fs/bpf/warren", pec)) {
      std::string n = e.path().filename();
      if (n.rfind("t-" + tag + "-", 0) != 0) continue;
      fs::remove_all(e.path(), pec);
      if (pec) left += "bpf pins " + e.path().string() + ": " + pec.message() + "\n";
    }
  }
  // The temp dir of a crashed owner (a live owner's TempDir removes its own).
  std::istringstream owner(e2e::read_file(owner_file(tag)));
  std::string pid, start, dir;
  owner >> pid >> start >> dir;
  const char* keep = std::getenv("WARREN_E2E_KEEP");
  std::error_code ec;
  if (!dir.empty() && !(keep && *keep == '1') &&
      dir.rfind((fs::temp_directory_path() / "warren-e2e-").string(), 0) == 0)
    fs::remove_all(dir, ec);
  fs::remove(owner_file(tag), ec);
  return left;
}

std::vector<std::string> sweep_stale(bool all) {
  std::vector<std::string> swept;
  for (auto& tag : list_tags()) {
    if (!all && owner_alive(tag)) continue;
    // An owner file with a live owner is being built or used; a missing owner
    // file with netns or cgroups left means a crashed run.
    teardown_tag(tag);
    swept.push_back(tag);
  }
  return swept;
}

void ip_batch(const std::string& netns, const std::vector<std::string>& cmds) {
  if (netns.empty()) throw std::invalid_argument("ip_batch: refusing the host netns");
  std::string input;
  for (auto& c : cmds) input += c + "\n";
  // A file, not stdin: e2e::run feeds stdin with send(), which fails on a pipe.
  std::string file = (fs::temp_directory_path() / "warren-netns-batch-XXXXXX").string();
  int fd = ::mkstemp(file.data());
  if (fd < 0) throw std::runtime_error("mkstemp: " + std::string(std::strerror(errno)));
  bool written = ::write(fd, input.data(), input.size()) == static_cast<ssize_t>(input.size());
  ::close(fd);
  auto r = written ? e2e::run({"/usr/sbin/ip", "-n", netns, "-batch", file})
                   : e2e::CmdResult{1, "write failed"};
  ::unlink(file.c_str());
  if (r.exit_code != 0)
    throw std::runtime_error("ip -n " + netns + " -batch failed (" + std::to_string(r.exit_code) +
                             "): " + r.output + "\ncommands:\n" + input);
}

}  // namespace warren::netns
