// What warren-node changes inside an enrolled pod's netns (and nowhere else),
// over netlink from the loop thread while it is in that netns:
//  - net.ipv4.tcp_fwmark_accept=1, `ip rule fwmark 0x111 lookup 100` and
//    `ip route add local default dev lo table 100`, so replies to inbound
//    deliveries that carry the client's address come back to the proxy;
//  - SOCK_DESTROY (sock_diag) to end a same-node direct flow that policy no
//    longer allows.
#pragma once

#include "warren/ip.h"
#include "warren/result.h"

namespace warren::node {

inline constexpr uint32_t kDeliverRouteTable = 100;
inline constexpr uint32_t kDeliverRulePriority = 32000;

// Idempotent: an existing rule/route is fine.
Result<void> prepare_pod_netns(int netns_fd);
// Removes what prepare_pod_netns added (best effort).
void unprepare_pod_netns(int netns_fd);
// Ends the TCP socket with this 4-tuple (as seen from inside the netns) and
// this socket cookie: the cookie keeps the kernel's lookup from falling back
// to a listener (sock_diag looks listeners up too, through sk_lookup).
Result<void> destroy_socket(int netns_fd, const SockAddr& local, const SockAddr& remote,
                            uint64_t sock_cookie);

}  // namespace warren::node
