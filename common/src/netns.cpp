#include "warren/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace warren::netns {

NsFd::~NsFd() {
  if (fd_ >= 0) ::close(fd_);
}

NsFd& NsFd::operator=(NsFd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(o.fd_, -1);
  }
  return *this;
}

Result<NsFd> open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error::sys("open netns " + path);
  return NsFd(fd);
}

Result<NsFd> current() { return open("/proc/thread-self/ns/net"); }

Result<uint64_t> inode(int ns_fd) {
  struct stat st {};
  if (::fstat(ns_fd, &st) != 0) return Error::sys("fstat netns");
  return static_cast<uint64_t>(st.st_ino);
}

namespace {
thread_local int saved_fd = -1;
}

Result<void> enter(int ns_fd) {
  if (saved_fd >= 0) return make_error(Errc::kInternal, "netns::enter is not reentrant");
  int self = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (self < 0) return Error::sys("open /proc/thread-self/ns/net");
  if (::setns(ns_fd, CLONE_NEWNET) != 0) {
    auto e = Error::sys("setns");
    ::close(self);
    return e;
  }
  saved_fd = self;
  return {};
}

void leave() {
  if (saved_fd < 0) return;
  if (::setns(saved_fd, CLONE_NEWNET) != 0) {
    std::perror("warren: cannot return to the original network namespace");
    std::abort();
  }
  ::close(saved_fd);
  saved_fd = -1;
}

Result<int> socket_in(int ns_fd, int family, int type, int proto) {
  auto r = run_in(ns_fd, [&] { return ::socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, proto); });
  if (!r) return r.error();
  if (*r < 0) return Error::sys("socket in netns");
  return *r;
}

Result<uint64_t> cookie(int ns_fd) {
  auto s = socket_in(ns_fd, AF_INET, SOCK_DGRAM);
  if (!s) return s.error();
  uint64_t c = 0;
  socklen_t len = sizeof c;
  int rc = ::getsockopt(*s, SOL_SOCKET, SO_NETNS_COOKIE, &c, &len);
  int e = errno;
  ::close(*s);
  if (rc != 0) return Error::sys("getsockopt SO_NETNS_COOKIE", e);
  return c;
}

}  // namespace warren::netns
