#include "netns_scan.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/nsfs.h>
#include <linux/rtnetlink.h>
#include <sched.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <optional>
#include <thread>

namespace warren::cni {

namespace {

struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

bool keep(const IpAddr& ip) {
  const auto& b = ip.bytes();
  if (ip.is_v4()) return b[0] != 127;
  static const std::array<uint8_t, 16> kLoop6{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  if (b == kLoop6) return false;
  return !(b[0] == 0xfe && (b[1] & 0xc0) == 0x80);  // fe80::/10
}

std::optional<IpAddr> addr_of(const ifaddrmsg* ifa, const rtattr* rta, size_t len) {
  const void* local = nullptr;
  const void* address = nullptr;
  for (; RTA_OK(rta, len); rta = RTA_NEXT(rta, len)) {
    if (rta->rta_type == IFA_LOCAL) local = RTA_DATA(rta);
    if (rta->rta_type == IFA_ADDRESS) address = RTA_DATA(rta);
  }
  // IPv4 puts the local address in IFA_LOCAL (IFA_ADDRESS is the peer on
  // point-to-point links); IPv6 only sends IFA_ADDRESS.
  const void* p = local ? local : address;
  if (!p) return std::nullopt;
  sockaddr_storage ss{};
  if (ifa->ifa_family == AF_INET) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    std::memcpy(&sin->sin_addr, p, 4);
  } else if (ifa->ifa_family == AF_INET6) {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    std::memcpy(&sin6->sin6_addr, p, 16);
  } else {
    return std::nullopt;
  }
  return IpAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
}

// RTM_GETADDR dump in the calling thread's netns.
Result<std::vector<IpAddr>> dump_addresses() {
  Fd s{socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE)};
  if (s.fd < 0) return Error::sys("netlink socket");
  timeval tv{2, 0};
  setsockopt(s.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct {
    nlmsghdr nh;
    ifaddrmsg ifa;
  } req{};
  req.nh.nlmsg_len = sizeof req;
  req.nh.nlmsg_type = RTM_GETADDR;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.nh.nlmsg_seq = 1;
  req.ifa.ifa_family = AF_UNSPEC;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(s.fd, &req, sizeof req, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0) {
    return Error::sys("netlink send RTM_GETADDR");
  }
  std::vector<IpAddr> out;
  alignas(nlmsghdr) char buf[32 * 1024];
  while (true) {
    ssize_t n = recv(s.fd, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::sys("netlink recv");
    }
    size_t len = static_cast<size_t>(n);
    for (auto* nh = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(nh, len); nh = NLMSG_NEXT(nh, len)) {
      if (nh->nlmsg_seq != 1) continue;
      if (nh->nlmsg_type == NLMSG_DONE) {
        std::sort(out.begin(), out.end());
        out.erase(std::unique(out.begin(), out.end()), out.end());
        return out;
      }
      if (nh->nlmsg_type == NLMSG_ERROR) {
        auto* e = static_cast<nlmsgerr*>(NLMSG_DATA(nh));
        return Error::sys("netlink RTM_GETADDR", -e->error);
      }
      if (nh->nlmsg_type != RTM_NEWADDR) continue;
      auto* ifa = static_cast<ifaddrmsg*>(NLMSG_DATA(nh));
      size_t alen = nh->nlmsg_len - NLMSG_LENGTH(sizeof *ifa);
      auto ip = addr_of(ifa, IFA_RTA(ifa), alen);
      if (ip && keep(*ip)) out.push_back(*ip);
    }
  }
}

bool gone(int e) {
  return e == ENOENT || e == ESRCH;
}

}  // namespace

Result<int> open_netns(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error::sys("open " + path);
  int type = ioctl(fd, NS_GET_NSTYPE);
  if (type != CLONE_NEWNET) {
    ::close(fd);
    return make_error(Errc::kInvalidArgument, path + " is not a network namespace");
  }
  return fd;
}

Result<uint64_t> netns_inode(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return Error::sys("stat " + path);
  return static_cast<uint64_t>(st.st_ino);
}

Result<std::vector<IpAddr>> netns_addresses(int netns_fd) {
  Result<std::vector<IpAddr>> res = make_error(Errc::kInternal, "netns thread did not run");
  std::thread t([&] {
    // Only this thread moves; it exits right after, so it never has to
    // move back.
    if (setns(netns_fd, CLONE_NEWNET) != 0) {
      res = Error::sys("setns");
      return;
    }
    res = dump_addresses();
  });
  t.join();
  return res;
}

Result<std::vector<NetnsInfo>> scan_netns() {
  auto self = netns_inode("/proc/self/ns/net");
  if (!self) return self.error();

  DIR* dir = opendir("/proc");
  if (!dir) return Error::sys("opendir /proc");
  std::map<uint64_t, std::vector<pid_t>> by_ns;
  std::vector<pid_t> denied;
  size_t readable = 0;
  Result<void> failed;
  const pid_t me = getpid();
  // readdir is safe on a DIR* this thread alone uses.
  while (dirent* de = readdir(dir)) {  // NOLINT(concurrency-mt-unsafe)
    char* end = nullptr;
    long pid = std::strtol(de->d_name, &end, 10);
    if (*de->d_name == '\0' || *end != '\0' || pid <= 0) continue;
    std::string p = "/proc/" + std::string(de->d_name) + "/ns/net";
    struct stat st {};
    if (stat(p.c_str(), &st) != 0) {
      if (gone(errno)) continue;
      if (errno == EACCES || errno == EPERM) {
        denied.push_back(static_cast<pid_t>(pid));
        continue;
      }
      failed = Error::sys("stat " + p);
      break;
    }
    if (pid != me) ++readable;
    if (st.st_ino == *self) continue;
    by_ns[st.st_ino].push_back(static_cast<pid_t>(pid));
  }
  closedir(dir);
  if (!failed) return failed.error();
  if (!denied.empty() && readable == 0) {
    return Error::sys("stat /proc/" + std::to_string(denied.front()) + "/ns/net", EACCES)
        .wrap("no other process is visible (needs CAP_SYS_PTRACE)");
  }
  if (!denied.empty()) {
    spdlog::warn("netns scan: {} process(es) not inspectable (first: pid {}); skipped",
                 denied.size(), denied.front());
  }

  std::vector<NetnsInfo> out;
  for (auto& [ino, pids] : by_ns) {
    std::sort(pids.begin(), pids.end());
    for (pid_t pid : pids) {
      std::string p = "/proc/" + std::to_string(pid) + "/ns/net";
      auto fd = open_netns(p);
      if (!fd) {
        int e = fd.error().sys_errno;
        if (gone(e)) continue;
        if (e == EACCES || e == EPERM) {
          spdlog::warn("netns scan: {}; skipped", fd.error().message);
          break;
        }
        return fd.error();
      }
      Fd guard{*fd};
      struct stat st {};
      if (fstat(guard.fd, &st) != 0 || st.st_ino != ino) continue;  // pid reused
      auto ips = netns_addresses(guard.fd);
      if (!ips && ips.error().sys_errno == EPERM) {
        spdlog::warn("netns scan: entering the netns of pid {}: {}; skipped", pid,
                     ips.error().message);
        break;
      }
      if (!ips) return ips.error().wrap("netns of pid " + std::to_string(pid));
      out.push_back(NetnsInfo{ino, pid, std::move(*ips)});
      break;
    }
  }
  return out;
}

}  // namespace warren::cni
