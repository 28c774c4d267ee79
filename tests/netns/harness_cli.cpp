// warren-netns: build and remove netns clusters by hand (demos, debugging).
//
//   warren-netns up [--nodes 2] [--pods 2] [--tag T] [--detach]
//       builds a cluster, prints it, keeps it until Ctrl-C, SIGTERM or
//       `warren-netns down --tag T` (with --detach: in the background)
//   warren-netns down --tag T     stops the owner and removes the cluster
//   warren-netns list             tags present and whether their owner runs
//   warren-netns cleanup [--all]  removes clusters whose owner is gone (--all: every one)
//   warren-netns exec --tag T (--node N | --pod N/K) -- PROGRAM ARGS...
//       runs a program in that node's netns, or in the pod's netns and cgroup
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <iostream>
#include <map>

#include "harness.h"

using namespace warren::netns;

namespace {

int usage() {
  std::cerr << "usage: warren-netns up [--nodes N] [--pods M] [--tag T] [--detach]\n"
               "       warren-netns down --tag T\n"
               "       warren-netns list\n"
               "       warren-netns cleanup [--all]\n"
               "       warren-netns exec --tag T (--node N | --pod N/K) -- PROGRAM ARGS...\n";
  return 2;
}

int up(const Topology& t, bool detach) {
  int pfd[2] = {-1, -1};
  if (detach) {
    if (pipe2(pfd, O_CLOEXEC) != 0) return 1;
    pid_t pid = fork();
    if (pid > 0) {
      close(pfd[1]);
      std::string out;
      char buf[4096];
      for (ssize_t n; (n = read(pfd[0], buf, sizeof buf)) > 0;) out.append(buf, n);
      std::cout << out;
      return out.rfind("cluster ", 0) == 0 ? 0 : 1;
    }
    close(pfd[0]);
    setsid();
  }
  std::unique_ptr<Cluster> c;
  try {
    c = Cluster::create(t);
  } catch (const std::exception& e) {
    std::string msg = std::string("warren-netns up: ") + e.what() + "\n";
    if (detach) (void)!write(pfd[1], msg.data(), msg.size());
    std::cerr << msg;
    return 1;
  }
  std::string d = c->describe() + "down: " + cli_path() + " down --tag " + c->tag() + "\n";
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, s);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  if (detach) {
    (void)!write(pfd[1], d.data(), d.size());
    close(pfd[1]);
    int devnull = open("/dev/null", O_RDWR);
    for (int fd : {0, 1, 2}) dup2(devnull, fd);
  } else {
    std::cout << d << "Ctrl-C to tear down" << std::endl;
  }
  int sig = 0;
  sigwait(&set, &sig);
  c.reset();
  if (!detach) std::cout << "cluster removed" << std::endl;
  return 0;
}

int down(const std::string& tag) {
  std::string owner = warren::e2e::read_file(std::string(kStateDir) + "/" + tag + ".owner");
  if (owner_alive(tag)) {
    pid_t pid = std::stoi(owner);
    ::kill(pid, SIGTERM);
    warren::e2e::wait_until([&] { return ::kill(pid, 0) != 0; }, std::chrono::seconds(20));
  }
  std::string left = teardown_tag(tag);
  if (!left.empty()) {
    std::cerr << "left behind:\n" << left;
    return 1;
  }
  std::cout << "cluster " << tag << " removed" << std::endl;
  return 0;
}

int exec_in(const std::map<std::string, std::string>& o, char** rest) {
  if (!o.count("tag") || !*rest || (o.count("node") == o.count("pod"))) return usage();
  std::string tag = o.at("tag"), cg, ns = std::string("/var/run/netns/") + kNetnsPrefix + tag;
  if (o.count("node")) {
    ns += "-n" + o.at("node");
  } else {
    std::string p = o.at("pod");
    auto slash = p.find('/');
    if (slash == std::string::npos) return usage();
    std::string n = p.substr(0, slash), k = p.substr(slash + 1);
    ns += "-n" + n + "-p" + k;
    cg =
        std::string(kCgroupRoot) + "/" + kCgroupPrefix + tag + "/node-" + n + "/pod-" + n + "-" + k;
  }
  std::vector<std::string> argv{nsexec_path()};
  if (!cg.empty()) argv.insert(argv.end(), {"--cgroup", cg});
  argv.insert(argv.end(), {"--netns", ns, "--"});
  for (; *rest; rest++) argv.push_back(*rest);
  std::vector<char*> v;
  for (auto& a : argv) v.push_back(a.data());
  v.push_back(nullptr);
  execv(v[0], v.data());
  std::cerr << "exec " << v[0] << ": " << std::strerror(errno) << "\n";
  return 127;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  std::string cmd = argv[1];
  std::map<std::string, std::string> o;
  int i = 2;
  for (; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--") {
      i++;
      break;
    }
    if (a.rfind("--", 0) != 0) return usage();
    bool flag = a == "--detach" || a == "--all";
    if (!flag && i + 1 >= argc) return usage();
    o[a.substr(2)] = flag ? "1" : argv[++i];
  }
  if (!have_root()) {
    std::cerr << "warren-netns: needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)\n";
    return kSkipReturnCode;
  }
  try {
    if (cmd == "up") {
      Topology t;
      if (o.count("nodes")) t.nodes = std::stoi(o["nodes"]);
      if (o.count("pods")) t.pods_per_node = std::stoi(o["pods"]);
      if (o.count("tag")) t.tag = o["tag"];
      return up(t, o.count("detach") != 0);
    }
    if (cmd == "down") return o.count("tag") ? down(o["tag"]) : usage();
    if (cmd == "list") {
      for (auto& t : list_tags())
        std::cout << t << (owner_alive(t) ? "  owner running" : "  stale") << "\n";
      return 0;
    }
    if (cmd == "cleanup") {
      for (auto& t : sweep_stale(o.count("all") != 0)) std::cout << "removed " << t << "\n";
      return 0;
    }
    if (cmd == "exec") return exec_in(o, argv + i);
  } catch (const std::exception& e) {
    std::cerr << "warren-netns " << cmd << ": " << e.what() << "\n";
    return 1;
  }
  return usage();
}
