// Network namespaces from a host-netns process (DESIGN.md §5): sockets for a
// pod are created inside the pod's netns and keep it for life, so the loop
// thread enters the netns just for the socket() call and returns at once
// (~9 µs for the pair of setns calls, measured; a helper thread per call was
// ~80 µs).
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

#include "warren/result.h"

namespace warren::netns {

// An owned namespace file descriptor.
class NsFd {
 public:
  NsFd() = default;
  explicit NsFd(int fd) : fd_(fd) {}
  ~NsFd();
  NsFd(NsFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  NsFd& operator=(NsFd&& o) noexcept;
  NsFd(const NsFd&) = delete;
  NsFd& operator=(const NsFd&) = delete;
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// Opens a netns file (/var/run/netns/x, /proc/<pid>/ns/net).
Result<NsFd> open(const std::string& path);
// The calling thread's current netns.
Result<NsFd> current();
// st_ino of a namespace fd: its identity on this host.
Result<uint64_t> inode(int ns_fd);
// The kernel's netns cookie (SO_NETNS_COOKIE), what BPF programs see.
Result<uint64_t> cookie(int ns_fd);

// Enters `ns_fd` on the calling thread, runs fn(), returns to the thread's
// previous netns. Aborts the process if it cannot return (the thread would
// otherwise keep working in a pod's namespace).
Result<void> enter(int ns_fd);
void leave();  // back to the netns saved by the last enter()

template <typename F>
auto run_in(int ns_fd, F&& fn) -> Result<decltype(fn())> {
  if (auto r = enter(ns_fd); !r) return r.error();
  if constexpr (std::is_void_v<decltype(fn())>) {
    fn();
    leave();
    return {};
  } else {
    auto v = fn();
    leave();
    return v;
  }
}

// A socket created inside a netns (SOCK_NONBLOCK | SOCK_CLOEXEC).
Result<int> socket_in(int ns_fd, int family, int type, int proto = 0);

}  // namespace warren::netns
