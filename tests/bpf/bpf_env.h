// Root-only fixtures for the BPF tests: a pin dir + test cgroup + Capture,
// network namespaces, and sockets created by a process inside the cgroup.
// Everything is named <prefix>-<pid>-<n> and removed by destructors.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <sys/socket.h>

#include "loader.h"
#include "warren/ip.h"

namespace wbt {

using warren::IpAddr;
using warren::SockAddr;
using warren::bpf::Capture;

std::string unique(const std::string& prefix);  // prefix-<pid>-<n>
void sh(const std::string& cmd);                // throws on a non-zero exit
SockAddr sa(const std::string& s);              // "ip:port", throws when malformed
IpAddr ip(const std::string& s);

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release();
  void reset();

 private:
  int fd_ = -1;
};

// `ip netns add wbt-<pid>-<n>` with lo up; `ip netns del` on destruction.
class NetNs {
 public:
  NetNs();
  ~NetNs();
  NetNs(const NetNs&) = delete;
  NetNs& operator=(const NetNs&) = delete;
  void ip(const std::string& args) const;  // ip -n <name> <args>
  const std::string& name() const { return name_; }
  int fd() const { return fd_.get(); }
  uint64_t cookie() const { return cookie_; }
  uint64_t inode() const { return inode_; }

 private:
  std::string name_;
  Fd fd_;
  uint64_t cookie_ = 0, inode_ = 0;
};

// A cgroup v2 directory; its processes are killed and it is removed on destruction.
class Cgroup {
 public:
  Cgroup();
  ~Cgroup();
  Cgroup(const Cgroup&) = delete;
  Cgroup& operator=(const Cgroup&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A Capture on its own pin dir and cgroup; uninstalled on destruction.
struct Env {
  Env();
  ~Env();
  std::string pin;
  Cgroup cg;
  std::unique_ptr<Capture> cap;
  uint64_t stat(int i) const { return cap->stats().at(i); }
};

// Pod netns "pod" (10.77.0.2/24 on veth vp) and "client" (10.77.0.1/24 on vc)
// joined by a veth pair; both hold 10.77.0.9/32 on lo, a "remote" that is in
// fact local, so an uncaptured connect to it reaches a real listener there.
struct Topo {
  Topo();
  NetNs pod, client;
};

// A socket made by a child process that joined `cgroup` (empty: stays in
// ours) and entered netns `ns_fd`, handed back over SCM_RIGHTS. BPF cgroup
// programs follow the socket's cgroup, fixed at creation.
Fd socket_from(const std::string& cgroup, int ns_fd, int type, int family = AF_INET);
// socket + SO_REUSEADDR + bind + listen (TCP) inside a netns, non-blocking;
// the family is the address's.
Fd listen_in(int ns_fd, const SockAddr& a, int type = SOCK_STREAM);
// Non-blocking connect waited for up to timeout: 0 or the errno.
int connect_wait(int fd, const SockAddr& dst, int timeout_ms = 3000);
// accept() within timeout_ms; an invalid Fd when nothing came.
Fd accept_wait(int lfd, int timeout_ms = 3000);
bool readable(int fd, int timeout_ms);
SockAddr local_of(int fd);
SockAddr peer_of(int fd);
uint64_t sock_cookie(int fd);
bool send_all(int fd, const std::string& data);
std::string recv_n(int fd, size_t n, int timeout_ms = 3000);
bool wait_until(const std::function<bool()>& pred, int timeout_ms = 3000);

}  // namespace wbt
