// Shared between the BPF programs (bpf/*.bpf.c) and warren-node's loader:
// map keys and values, stat slots, marks and ports. Plain C, fixed-width
// fields, explicit padding so both sides agree on the layout.
#ifndef WARREN_BPF_H
#define WARREN_BPF_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

// Sockets carrying this mark belong to the proxy and are never captured.
#define WARREN_MESH_MARK 0x539
// Inbound deliveries (proxy → application inside the pod, keeping the
// client's source address) carry this mark; the pod netns routes replies of
// marked connections back over loopback to the proxy (ip rule fwmark).
#define WARREN_DELIVER_MARK 0x111

#define WARREN_PORT_OUTBOUND 15001
#define WARREN_PORT_INBOUND 15006
#define WARREN_PORT_HBONE 15008

// enrolled_netns value: one per enrolled pod, keyed by netns cookie.
struct warren_pod {
  __u32 ip4;       // the pod's IPv4 address, network order (0: none)
  __u32 ip6[4];    // the pod's IPv6 address, network order (all 0: none)
  __u32 flags;     // WARREN_POD_*
  __u32 pod_id;    // the loader's index, for user space only
};
#define WARREN_POD_FAST_PATH 1u  // same-node direct path allowed for this pod

// An address and port as the application asked for them.
struct warren_addr {
  __u32 ip[4];     // IPv4 in ip[0], network order
  __u16 port;      // host order
  __u16 family;    // AF_INET (2) or AF_INET6 (10)
};

// Per-socket storage set by connect4/6 on a captured socket.
struct warren_sk_state {
  struct warren_addr orig;  // original destination
  __u32 direct;             // 1: fast path, the connect was not redirected
  __u32 pad;
  __u64 netns_cookie;       // the client's netns
};

// conn_orig key: the client socket's netns and local port, which the proxy
// sees as the peer port of the connection it accepted on 15001.
struct warren_conn_key {
  __u64 netns_cookie;
  __u16 port;    // host order
  __u16 family;
  __u32 pad;
};

// Same-node fast path verdict cache: {source pod netns, destination, port}.
struct warren_verdict_key {
  __u64 netns_cookie;
  struct warren_addr dst;
};
#define WARREN_VERDICT_ALLOW 1u

// A direct (fast path) flow's 4-tuple as the client sees it.
struct warren_flow_key {
  __u32 saddr[4];
  __u32 daddr[4];
  __u16 sport;   // host order
  __u16 dport;   // host order
  __u16 family;
  __u16 pad;
};
struct warren_flow {
  __u64 netns_cookie;   // client netns
  __u64 bytes_sent;     // client → server, updated at close
  __u64 bytes_received; // server → client, updated at close
  __u64 opened_ns;
  __u64 sock_cookie;    // the client socket (SOCK_DESTROY targets exactly it)
  __u32 closed;
  __u32 pad;
};

// Listener sockhash key: a pod address and which listener.
struct warren_listener_key {
  __u32 ip[4];
  __u32 family;
  __u32 slot;  // WARREN_SLOT_*
};
#define WARREN_SLOT_PLAIN 0u  // 15006: plaintext inbound
#define WARREN_SLOT_HBONE 1u  // 15008

// Per-CPU counters (stats map index).
enum warren_stat {
  WARREN_STAT_CONNECT_CAPTURED = 0,   // connect rewritten to 15001
  WARREN_STAT_CONNECT_SKIP_MARK,      // proxy's own socket
  WARREN_STAT_CONNECT_SKIP_LOCAL,     // loopback or the pod itself
  WARREN_STAT_CONNECT_SKIP_EXCLUDED,  // excluded port
  WARREN_STAT_CONNECT_DIRECT,         // fast path: verdict cache hit
  WARREN_STAT_CONNECT_NOT_ENROLLED,   // netns not enrolled
  WARREN_STAT_ORIG_RECORDED,          // sockops recorded the original dst
  WARREN_STAT_GETPEERNAME,            // getpeername rewritten
  WARREN_STAT_LOOKUP_PLAIN,           // sk_lookup → 15006
  WARREN_STAT_LOOKUP_HBONE,           // sk_lookup → 15008
  WARREN_STAT_LOOKUP_LOCAL,           // loopback delivery left alone
  WARREN_STAT_LOOKUP_DIRECT,          // fast path flow let through
  WARREN_STAT_LOOKUP_DROP,            // no listener: fail closed
  WARREN_STAT_FLOW_CLOSED,            // fast path flow closed, bytes counted
  WARREN_STAT_MAX
};

#endif
