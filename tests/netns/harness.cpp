#include "harness.h"

#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <stdexcept>

namespace warren::netns {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr const char* kIp = "/usr/sbin/ip";

void must(const std::vector<std::string>& argv) {
  auto r = e2e::run(argv);
  if (r.exit_code != 0) {
    std::string cmd;
    for (auto& a : argv) cmd += a + " ";
    throw std::runtime_error(cmd + "failed (" + std::to_string(r.exit_code) + "): " + r.output);
  }
}

std::string random_tag() {
  static const char kChars[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::random_device rd;
  std::string t;
  for (int i = 0; i < 6; i++) t += kChars[rd() % 36];
  return t;
}

bool valid_tag(const std::string& t) {
  if (t.empty() || t.size() > 8) return false;
  for (char c : t)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return false;
  return true;
}

ino_t inode_of(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

std::vector<std::string> wrap(const std::string& cgroup, const std::string& netns_path,
                              std::vector<std::string> argv) {
  std::vector<std::string> v{nsexec_path()};
  if (!cgroup.empty()) v.insert(v.end(), {"--cgroup", cgroup});
  v.insert(v.end(), {"--netns", netns_path, "--"});
  v.insert(v.end(), std::make_move_iterator(argv.begin()), std::make_move_iterator(argv.end()));
  return v;
}

}  // namespace

bool have_root() {
  if (geteuid() != 0) return false;
  std::istringstream in(e2e::read_file("/proc/self/status"));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("CapEff:", 0) != 0) continue;
    unsigned long long caps = std::stoull(line.substr(7), nullptr, 16);
    constexpr unsigned long long kNetAdmin = 1ull << 12, kSysAdmin = 1ull << 21;
    return (caps & kNetAdmin) && (caps & kSysAdmin);
  }
  return false;
}

bool ensure_bpffs() {
  constexpr long kBpfFsMagic = 0xcafe4a11;
  struct statfs sf {};
  if (::statfs("/sys/fs/bpf", &sf) == 0 && static_cast<long>(sf.f_type) == kBpfFsMagic) return true;
  std::error_code ec;
  fs::create_directories("/sys/fs/bpf", ec);
  if (::mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") != 0) return false;
  return ::statfs("/sys/fs/bpf", &sf) == 0 && static_cast<long>(sf.f_type) == kBpfFsMagic;
}

std::string podtool_path() {
  return std::string(WARREN_NETNS_BIN_DIR) + "/warren-podtool";
}
std::string nsexec_path() {
  return std::string(WARREN_NETNS_BIN_DIR) + "/warren-nsexec";
}
std::string cli_path() {
  return std::string(WARREN_NETNS_BIN_DIR) + "/warren-netns";
}

std::unique_ptr<Cluster> Cluster::create(const Topology& t) {
  if (t.nodes < 1 || t.nodes > 200 || t.pods_per_node < 0 || t.pods_per_node > 200)
    throw std::invalid_argument("topology: 1..200 nodes, 0..200 pods per node");
  if (!t.tag.empty() && !valid_tag(t.tag))
    throw std::invalid_argument("tag must be [a-z0-9]{1,8}: " + t.tag);
  sweep_stale();
  std::unique_ptr<Cluster> c(new Cluster());
  try {
    c->build(t);
  } catch (...) {
    c->teardown();
    throw;
  }
  return c;
}

Cluster::~Cluster() {
  try {
    teardown();
  } catch (const std::exception& e) {
    std::cerr << "warren-netns: teardown of " << tag_ << " failed: " << e.what() << "\n";
  }
}

std::string Cluster::cgroup() const {
  return std::string(kCgroupRoot) + "/" + kCgroupPrefix + tag_;
}

void Cluster::build(const Topology& t) {
  for (int tries = 0; tag_.empty(); tries++) {
    if (tries == 20) throw std::runtime_error("no free cluster tag");
    std::string cand = t.tag.empty() ? random_tag() : t.tag;
    auto used = list_tags();
    bool taken = std::find(used.begin(), used.end(), cand) != used.end();
    if (!taken && claim_tag(cand, dir()))
      tag_ = cand;
    else if (!t.tag.empty())
      throw std::runtime_error("tag in use: " + t.tag);
  }
  const std::string pre = kNetnsPrefix + tag_;
  fs::create_directory(cgroup());
  must({kIp, "netns", "add", fabric_netns()});
  ip_batch(fabric_netns(), {"link set lo up", "link add name br0 type bridge", "link set br0 up"});

  for (int n = 1; n <= t.nodes; n++) {
    NodeInfo node;
    std::string ns = std::to_string(n);
    node.index = n;
    node.name = "node-" + ns;
    node.netns = pre + "-n" + ns;
    node.netns_path = "/var/run/netns/" + node.netns;
    node.ip = kNodeNetPrefix + ns;
    node.pod_cidr = "10." + ns + ".0.0/24";
    node.gateway = "10." + ns + ".0.1";
    node.cgroup = cgroup() + "/" + node.name;
    node.fabric_if = "fab-n" + ns;
    fs::create_directory(node.cgroup);
    must({kIp, "netns", "add", node.netns});
    ip_batch(fabric_netns(),
             {"link add name " + node.fabric_if + " type veth peer name eth0 netns " + node.netns,
              "link set " + node.fabric_if + " master br0", "link set " + node.fabric_if + " up"});
    std::vector<std::string> cmds{"link set lo up",
                                  "addr add " + node.ip + "/24 dev eth0",
                                  "link set eth0 up",
                                  "link add name cni0 type bridge",
                                  "addr add " + node.gateway + "/24 dev cni0",
                                  "link set cni0 up"};
    for (int m = 1; m <= t.nodes; m++) {
      if (m == n) continue;
      std::string ms = std::to_string(m);
      cmds.push_back("route add 10." + ms + ".0.0/24 via " + kNodeNetPrefix + ms);
    }
    ip_batch(node.netns, cmds);
    must({kIp, "netns", "exec", node.netns, "/usr/sbin/sysctl", "-qw", "net.ipv4.ip_forward=1"});
    nodes_.push_back(node);
  }

  for (auto& node : nodes_) {
    for (int k = 1; k <= t.pods_per_node; k++) {
      PodInfo p;
      std::string id = std::to_string(node.index) + "-" + std::to_string(k);
      p.node = node.index;
      p.index = k;
      p.name = "pod-" + id;
      p.k8s_namespace = "default";
      p.service_account = "sa-" + id;
      p.uid = tag_ + "-pod-" + id;
      p.netns = node.netns + "-p" + std::to_string(k);
      p.netns_path = "/var/run/netns/" + p.netns;
      p.ip = "10." + std::to_string(node.index) + ".0." + std::to_string(10 + k);
      p.cgroup = node.cgroup + "/" + p.name;
      p.node_if = "vp" + std::to_string(k);
      fs::create_directory(p.cgroup);
      must({kIp, "netns", "add", p.netns});
      ip_batch(node.netns,
               {"link add name " + p.node_if + " type veth peer name eth0 netns " + p.netns,
                "link set " + p.node_if + " master cni0", "link set " + p.node_if + " up"});
      ip_batch(p.netns, {"link set lo up", "addr add " + p.ip + "/24 dev eth0", "link set eth0 up",
                         "route add default via " + node.gateway});
      auto pause = spawn_in_pod(p, {"sleep", "infinity"}, "pause-" + p.name + ".log");
      ino_t want = inode_of(p.netns_path);
      std::string ns_link = "/proc/" + std::to_string(pause->pid()) + "/ns/net";
      if (!e2e::wait_until([&] { return inode_of(ns_link) == want; }, 5s, 5ms))
        throw std::runtime_error("pause process of " + p.name +
                                 " did not enter its netns: " + pause->log());
      p.pause_pid = pause->pid();
      pauses_.push_back(std::move(pause));
      node.pods.push_back(p);
    }
  }
}

void Cluster::teardown() {
  if (torn_down_) return;
  torn_down_ = true;
  for (auto& p : pauses_) p->signal(SIGKILL);
  pauses_.clear();  // reaps
  if (tag_.empty()) return;
  std::string left = teardown_tag(tag_);
  if (!left.empty()) std::cerr << "warren-netns: cluster " << tag_ << " left behind:\n" << left;
}

std::vector<PodInfo> Cluster::all_pods() const {
  std::vector<PodInfo> v;
  for (auto& n : nodes_) v.insert(v.end(), n.pods.begin(), n.pods.end());
  return v;
}

std::unique_ptr<e2e::Process> Cluster::spawn_in_pod(const PodInfo& p, std::vector<std::string> argv,
                                                    const std::string& log_name) {
  return std::make_unique<e2e::Process>(wrap(p.cgroup, p.netns_path, std::move(argv)),
                                        log_path(log_name));
}

std::unique_ptr<e2e::Process> Cluster::spawn_in_node(int n, std::vector<std::string> argv,
                                                     const std::string& log_name) {
  return std::make_unique<e2e::Process>(wrap("", node(n).netns_path, std::move(argv)),
                                        log_path(log_name));
}

e2e::CmdResult Cluster::exec_in_pod(const PodInfo& p, std::vector<std::string> argv) {
  return e2e::run(wrap(p.cgroup, p.netns_path, std::move(argv)));
}

e2e::CmdResult Cluster::exec_in_node(int n, std::vector<std::string> argv) {
  return e2e::run(wrap("", node(n).netns_path, std::move(argv)));
}

e2e::CmdResult Cluster::exec_in_fabric(std::vector<std::string> argv) {
  return e2e::run(wrap("", fabric_netns_path(), std::move(argv)));
}

std::string Cluster::describe() const {
  std::ostringstream o;
  o << "cluster " << tag_ << "  fabric netns " << fabric_netns() << " (bridge br0)\n"
    << "  cgroup " << cgroup() << "\n  dir    " << dir() << "\n";
  for (auto& n : nodes_) {
    o << n.name << "  ip " << n.ip << "  pods " << n.pod_cidr << "  netns " << n.netns
      << "  fabric_if " << n.fabric_if << "\n";
    for (auto& p : n.pods)
      o << "  " << p.name << "  ip " << p.ip << "  netns " << p.netns << "  pause_pid "
        << p.pause_pid << "  cgroup " << p.cgroup << "\n";
  }
  return o.str();
}

}  // namespace warren::netns
