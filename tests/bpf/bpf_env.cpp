#include "bpf_env.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "warren/netns.h"

namespace wbt {

std::string unique(const std::string& prefix) {
  static int n = 0;
  return prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
}

void sh(const std::string& cmd) {
  int rc = std::system(cmd.c_str());
  if (rc != 0) throw std::runtime_error("command failed (" + std::to_string(rc) + "): " + cmd);
}

SockAddr sa(const std::string& s) {
  auto a = SockAddr::parse(s);
  if (!a) throw std::runtime_error("bad address " + s);
  return *a;
}

IpAddr ip(const std::string& s) {
  auto a = IpAddr::parse(s);
  if (!a) throw std::runtime_error("bad ip " + s);
  return *a;
}

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    reset();
    fd_ = o.release();
  }
  return *this;
}
int Fd::release() { return std::exchange(fd_, -1); }
void Fd::reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

NetNs::NetNs() : name_(unique("wbt")) {
  sh("ip netns add " + name_);
  try {
    ip("link set lo up");
    auto f = warren::netns::open("/var/run/netns/" + name_);
    if (!f) throw std::runtime_error(f.error().message);
    fd_ = Fd(::dup(f->get()));
    auto c = warren::netns::cookie(fd_.get());
    auto i = warren::netns::inode(fd_.get());
    if (!c || !i) throw std::runtime_error("netns cookie/inode of " + name_);
    cookie_ = *c;
    inode_ = *i;
  } catch (...) {
    std::system(("ip netns del " + name_).c_str());
    throw;
  }
}

NetNs::~NetNs() {
  fd_.reset();
  std::system(("ip netns del " + name_ + " 2>/dev/null").c_str());
}

void NetNs::ip(const std::string& args) const { sh("ip -n " + name_ + " " + args); }

Cgroup::Cgroup() : path_("/sys/fs/cgroup/unified/" + unique("warren-bpftest")) {
  if (::mkdir(path_.c_str(), 0755) != 0) throw std::runtime_error("mkdir " + path_ + ": " + std::strerror(errno));
}

Cgroup::~Cgroup() {
  for (int i = 0; i < 100; ++i) {
    std::ifstream procs(path_ + "/cgroup.procs");
    pid_t pid;
    bool any = false;
    while (procs >> pid) {
      any = true;
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, WNOHANG);
    }
    if (!any && ::rmdir(path_.c_str()) == 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

Env::Env() : pin("/sys/fs/bpf/warren/" + unique("bpftest")) {
  auto c = Capture::open({pin, cg.path()});
  if (!c) {
    (void)Capture::uninstall(pin);
    throw std::runtime_error("Capture::open: " + c.error().message);
  }
  cap = std::move(*c);
}

Env::~Env() {
  cap.reset();
  (void)Capture::uninstall(pin);
}

Topo::Topo() {
  pod.ip("link add vp type veth peer name vc netns " + client.name());
  pod.ip("addr add 10.77.0.2/24 dev vp");
  pod.ip("link set vp up");
  pod.ip("addr add 10.77.0.9/32 dev lo");
  client.ip("addr add 10.77.0.1/24 dev vc");
  client.ip("link set vc up");
  client.ip("addr add 10.77.0.9/32 dev lo");
}

namespace {
[[noreturn]] void child_fail(int code) { ::_exit(code); }
}  // namespace

Fd socket_from(const std::string& cgroup, int ns_fd, int type, int family) {
  int sp[2];
  if (::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sp) != 0) throw std::runtime_error("socketpair");
  // Only async-signal-safe calls in the child (no allocation): the path is
  // made before fork().
  std::string procs = cgroup.empty() ? std::string() : cgroup + "/cgroup.procs";
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork");
  if (pid == 0) {
    if (!procs.empty()) {
      int cf = ::open(procs.c_str(), O_WRONLY);
      if (cf < 0 || ::write(cf, "0", 1) != 1) child_fail(2);
      ::close(cf);
    }
    if (::setns(ns_fd, CLONE_NEWNET) != 0) child_fail(3);
    int s = ::socket(family, type | SOCK_CLOEXEC, 0);
    if (s < 0) child_fail(4);
    char c = 0;
    iovec iov{&c, 1};
    alignas(cmsghdr) char buf[CMSG_SPACE(sizeof(int))] = {};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = buf;
    m.msg_controllen = sizeof buf;
    cmsghdr* cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cm), &s, sizeof s);
    ::_exit(::sendmsg(sp[1], &m, 0) == 1 ? 0 : 5);
  }
  ::close(sp[1]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  Fd rx(sp[0]);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("socket child failed: " + std::to_string(status));
  char c;
  iovec iov{&c, 1};
  alignas(cmsghdr) char buf[CMSG_SPACE(sizeof(int))] = {};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = buf;
  m.msg_controllen = sizeof buf;
  if (::recvmsg(rx.get(), &m, MSG_CMSG_CLOEXEC) != 1) throw std::runtime_error("recvmsg fd");
  cmsghdr* cm = CMSG_FIRSTHDR(&m);
  if (!cm || cm->cmsg_type != SCM_RIGHTS) throw std::runtime_error("no fd received");
  int fd;
  std::memcpy(&fd, CMSG_DATA(cm), sizeof fd);
  return Fd(fd);
}

Fd listen_in(int ns_fd, const SockAddr& a, int type) {
  auto s = warren::netns::socket_in(ns_fd, a.ip.is_v4() ? AF_INET : AF_INET6, type);
  if (!s) throw std::runtime_error("socket_in: " + s.error().message);
  Fd fd(*s);
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_storage ss{};
  socklen_t len = a.to_sockaddr(&ss);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0)
    throw std::runtime_error("bind " + a.to_string() + ": " + std::strerror(errno));
  if (type == SOCK_STREAM && ::listen(fd.get(), 64) != 0) throw std::runtime_error("listen");
  return fd;
}

int connect_wait(int fd, const SockAddr& dst, int timeout_ms) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  sockaddr_storage ss{};
  socklen_t len = dst.to_sockaddr(&ss);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0) return 0;
  if (errno != EINPROGRESS) return errno;
  pollfd p{fd, POLLOUT, 0};
  if (::poll(&p, 1, timeout_ms) != 1) return ETIMEDOUT;
  int err = 0;
  socklen_t el = sizeof err;
  ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
  return err;
}

bool readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1;
}

Fd accept_wait(int lfd, int timeout_ms) {
  if (!readable(lfd, timeout_ms)) return Fd();
  return Fd(::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
}

SockAddr local_of(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
  return SockAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
}

SockAddr peer_of(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
  return SockAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
}

uint64_t sock_cookie(int fd) {
  uint64_t c = 0;
  socklen_t len = sizeof c;
  if (::getsockopt(fd, SOL_SOCKET, SO_COOKIE, &c, &len) != 0) return 0;
  return c;
}

bool send_all(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += n;
    } else if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, 3000) != 1) return false;
    } else {
      return false;
    }
  }
  return true;
}

std::string recv_n(int fd, size_t n, int timeout_ms) {
  std::string out;
  char buf[4096];
  while (out.size() < n && readable(fd, timeout_ms)) {
    ssize_t r = ::recv(fd, buf, std::min(sizeof buf, n - out.size()), 0);
    if (r <= 0) break;
    out.append(buf, r);
  }
  return out;
}

bool wait_until(const std::function<bool()>& pred, int timeout_ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

}  // namespace wbt
