#include "pod_netns.h"

#include <fcntl.h>
#include <linux/fib_rules.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "warren_bpf.h"
#include "warren/netns.h"

namespace warren::node {

namespace {

// A netlink request builder: header, fixed body, then attributes.
struct NlMsg {
  alignas(NLMSG_ALIGNTO) char buf[512]{};
  nlmsghdr* hdr() { return reinterpret_cast<nlmsghdr*>(buf); }
  template <typename T>
  T* body() {
    return reinterpret_cast<T*>(NLMSG_DATA(hdr()));
  }
  void start(uint16_t type, uint16_t flags, size_t body_len) {
    hdr()->nlmsg_len = NLMSG_LENGTH(body_len);
    hdr()->nlmsg_type = type;
    hdr()->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    hdr()->nlmsg_seq = 1;
  }
  void attr(uint16_t type, const void* data, size_t len) {
    auto* a = reinterpret_cast<rtattr*>(buf + NLMSG_ALIGN(hdr()->nlmsg_len));
    a->rta_type = type;
    a->rta_len = RTA_LENGTH(len);
    std::memcpy(RTA_DATA(a), data, len);
    hdr()->nlmsg_len = NLMSG_ALIGN(hdr()->nlmsg_len) + RTA_ALIGN(a->rta_len);
  }
  void u32(uint16_t type, uint32_t v) { attr(type, &v, sizeof v); }
};

// Sends one request on a fresh socket of `proto` and waits for the ack.
// Returns the kernel's errno (0 on success).
int transact(int proto, NlMsg& m) {
  int fd = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, proto);
  if (fd < 0) return errno;
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  int err = 0;
  if (::sendto(fd, m.buf, m.hdr()->nlmsg_len, 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
    err = errno;
  } else {
    alignas(NLMSG_ALIGNTO) char rbuf[4096];
    ssize_t n = ::recv(fd, rbuf, sizeof rbuf, 0);
    if (n < 0) {
      err = errno;
    } else {
      for (auto* h = reinterpret_cast<nlmsghdr*>(rbuf); NLMSG_OK(h, static_cast<unsigned>(n));
           h = NLMSG_NEXT(h, n)) {
        if (h->nlmsg_type == NLMSG_ERROR) {
          err = -reinterpret_cast<nlmsgerr*>(NLMSG_DATA(h))->error;
          break;
        }
      }
    }
  }
  ::close(fd);
  return err;
}

int write_sysctl(const char* path, const char* value) {
  int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  int err = ::write(fd, value, std::strlen(value)) < 0 ? errno : 0;
  ::close(fd);
  return err;
}

int rule(uint16_t type, uint16_t flags) {
  NlMsg m;
  m.start(type, flags, sizeof(fib_rule_hdr));
  auto* r = m.body<fib_rule_hdr>();
  r->family = AF_INET;
  r->action = FR_ACT_TO_TBL;
  r->table = kDeliverRouteTable;
  m.u32(FRA_FWMARK, WARREN_DELIVER_MARK);
  m.u32(FRA_FWMASK, 0xfff);
  m.u32(FRA_TABLE, kDeliverRouteTable);
  m.u32(FRA_PRIORITY, kDeliverRulePriority);
  return transact(NETLINK_ROUTE, m);
}

int local_route(uint16_t type, uint16_t flags) {
  NlMsg m;
  m.start(type, flags, sizeof(rtmsg));
  auto* r = m.body<rtmsg>();
  r->rtm_family = AF_INET;
  r->rtm_dst_len = 0;
  r->rtm_table = kDeliverRouteTable;
  r->rtm_protocol = RTPROT_STATIC;
  r->rtm_scope = RT_SCOPE_HOST;
  r->rtm_type = RTN_LOCAL;
  m.u32(RTA_TABLE, kDeliverRouteTable);
  m.u32(RTA_OIF, 1);  // lo
  return transact(NETLINK_ROUTE, m);
}

}  // namespace

Result<void> prepare_pod_netns(int netns_fd) {
  std::string what;
  int err = 0;
  auto r = netns::run_in(netns_fd, [&] {
    if ((err = write_sysctl("/proc/sys/net/ipv4/tcp_fwmark_accept", "1"))) {
      what = "sysctl net.ipv4.tcp_fwmark_accept";
      return;
    }
    if ((err = rule(RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL)) && err != EEXIST) {
      what = "ip rule fwmark 0x111 lookup 100";
      return;
    }
    if ((err = local_route(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL)) && err != EEXIST) {
      what = "ip route add local default dev lo table 100";
      return;
    }
    err = 0;
  });
  if (!r) return r.error();
  if (err) return Error::sys("pod netns: " + what, err);
  return {};
}

void unprepare_pod_netns(int netns_fd) {
  (void)netns::run_in(netns_fd, [&] {
    rule(RTM_DELRULE, 0);
    local_route(RTM_DELROUTE, 0);
  });
}

Result<void> destroy_socket(int netns_fd, const SockAddr& local, const SockAddr& remote,
                            uint64_t sock_cookie) {
  if (sock_cookie == 0) return make_error(Errc::kInvalidArgument, "no socket cookie");
  NlMsg m;
  m.start(SOCK_DESTROY, 0, sizeof(inet_diag_req_v2));
  auto* req = m.body<inet_diag_req_v2>();
  bool v4 = local.ip.is_v4();
  req->sdiag_family = v4 ? AF_INET : AF_INET6;
  req->sdiag_protocol = IPPROTO_TCP;
  req->idiag_states = ~0u;
  req->id.idiag_sport = htons(local.port);
  req->id.idiag_dport = htons(remote.port);
  std::memcpy(req->id.idiag_src, local.ip.bytes().data(), v4 ? 4 : 16);
  std::memcpy(req->id.idiag_dst, remote.ip.bytes().data(), v4 ? 4 : 16);
  req->id.idiag_cookie[0] = static_cast<uint32_t>(sock_cookie);
  req->id.idiag_cookie[1] = static_cast<uint32_t>(sock_cookie >> 32);
  int err = 0;
  auto r = netns::run_in(netns_fd, [&] { err = transact(NETLINK_SOCK_DIAG, m); });
  if (!r) return r.error();
  if (err) return Error::sys("SOCK_DESTROY " + local.to_string() + " -> " + remote.to_string(), err);
  return {};
}

}  // namespace warren::node
