// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Warren's per-pod capture (DESIGN.md §5):
//  - cgroup/connect4,6: TCP connects from enrolled pod netns → the proxy's
//    15001 listener in that netns; original destination kept per socket;
//  - sockops: at TCP_CONNECT_CB, the original destination is copied into an
//    LRU map keyed {netns cookie, local port} for the proxy to read after
//    accept(); fast path flows are recorded and counted;
//  - cgroup/getpeername4,6: the application sees its original destination;
//  - sk_lookup (per pod netns): inbound TCP → 15006, or 15008 for HBONE.
#include "vmlinux.h"

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "warren_bpf.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define SOCK_STREAM 1
#define TCP_CLOSE 7

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 4096);
  __type(key, __u64);
  __type(value, struct warren_pod);
} enrolled_netns SEC(".maps");

struct excluded_key {
  __u64 netns_cookie;
  __u32 port;
  __u32 pad;
};

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 16384);
  __type(key, struct excluded_key);
  __type(value, __u8);
} excluded_ports SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_SK_STORAGE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, int);
  __type(value, struct warren_sk_state);
} sk_state SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, struct warren_conn_key);
  __type(value, struct warren_addr);
} conn_orig SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 65536);
  __type(key, struct warren_verdict_key);
  __type(value, __u32);
} verdicts SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, struct warren_flow_key);
  __type(value, struct warren_flow);
} direct_flows SEC(".maps");

// The proxy's own deliveries to applications (transparent, from the client's
// address to the pod's): 4-tuples sk_lookup must leave alone. Written by the
// proxy between bind() and connect().
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, struct warren_flow_key);
  __type(value, __u8);
} deliveries SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_SOCKHASH);
  __uint(max_entries, 8192);
  __type(key, struct warren_listener_key);
  __type(value, __u64);
} listeners SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, WARREN_STAT_MAX);
  __type(key, __u32);
  __type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 slot) {
  __u64* v = bpf_map_lookup_elem(&stats, &slot);
  if (v) *v += 1;
}

static __always_inline int is_excluded(__u64 cookie, __u16 port) {
  struct excluded_key k = {.netns_cookie = cookie, .port = port};
  return bpf_map_lookup_elem(&excluded_ports, &k) != 0;
}

// Common part of connect4/6 once the address is known not to be local.
// Returns 1 when the connect should be redirected to 15001.
static __always_inline int decide(struct bpf_sock_addr* ctx, __u64 cookie,
                                  const struct warren_pod* pod,
                                  struct warren_addr* dst) {
  if (is_excluded(cookie, dst->port)) {
    count(WARREN_STAT_CONNECT_SKIP_EXCLUDED);
    return 0;
  }
  struct warren_sk_state* st =
      bpf_sk_storage_get(&sk_state, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
  if (!st) return 1;  // no storage: still capture, the proxy then refuses
  // Field by field: clang 14 dropped the first word of a struct copy here.
  st->orig.ip[0] = dst->ip[0];
  st->orig.ip[1] = dst->ip[1];
  st->orig.ip[2] = dst->ip[2];
  st->orig.ip[3] = dst->ip[3];
  st->orig.port = dst->port;
  st->orig.family = dst->family;
  st->netns_cookie = cookie;
  st->direct = 0;
  if (pod->flags & WARREN_POD_FAST_PATH) {
    struct warren_verdict_key vk = {.netns_cookie = cookie};
    vk.dst = *dst;
    __u32* v = bpf_map_lookup_elem(&verdicts, &vk);
    if (v && *v == WARREN_VERDICT_ALLOW) {
      st->direct = 1;
      count(WARREN_STAT_CONNECT_DIRECT);
      return 0;
    }
  }
  count(WARREN_STAT_CONNECT_CAPTURED);
  return 1;
}

SEC("cgroup/connect4")
int warren_connect4(struct bpf_sock_addr* ctx) {
  if (ctx->protocol != IPPROTO_TCP || ctx->type != SOCK_STREAM) return 1;
  __u64 cookie = bpf_get_netns_cookie(ctx);
  struct warren_pod* pod = bpf_map_lookup_elem(&enrolled_netns, &cookie);
  if (!pod) {
    count(WARREN_STAT_CONNECT_NOT_ENROLLED);
    return 1;
  }
  struct bpf_sock* sk = ctx->sk;
  if (!sk) return 1;
  if (sk->mark == WARREN_MESH_MARK) {
    count(WARREN_STAT_CONNECT_SKIP_MARK);
    return 1;
  }
  __u32 ip = ctx->user_ip4;
  if ((bpf_ntohl(ip) >> 24) == 127 || ip == pod->ip4 || ip == 0) {
    count(WARREN_STAT_CONNECT_SKIP_LOCAL);
    return 1;
  }
  struct warren_addr dst = {.family = AF_INET};
  dst.ip[0] = ip;
  dst.port = bpf_ntohs((__u16)ctx->user_port);
  if (!decide(ctx, cookie, pod, &dst)) return 1;
  ctx->user_ip4 = bpf_htonl(0x7f000001);
  ctx->user_port = bpf_htons(WARREN_PORT_OUTBOUND);
  return 1;
}

static __always_inline int v6_is_loopback(const __u32* a) {
  return a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == bpf_htonl(1);
}

static __always_inline int v6_is_v4mapped(const __u32* a) {
  return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
}

SEC("cgroup/connect6")
int warren_connect6(struct bpf_sock_addr* ctx) {
  if (ctx->protocol != IPPROTO_TCP || ctx->type != SOCK_STREAM) return 1;
  __u64 cookie = bpf_get_netns_cookie(ctx);
  struct warren_pod* pod = bpf_map_lookup_elem(&enrolled_netns, &cookie);
  if (!pod) return 1;
  struct bpf_sock* sk = ctx->sk;
  if (!sk) return 1;
  if (sk->mark == WARREN_MESH_MARK) {
    count(WARREN_STAT_CONNECT_SKIP_MARK);
    return 1;
  }
  __u32 a[4];
  a[0] = ctx->user_ip6[0];
  a[1] = ctx->user_ip6[1];
  a[2] = ctx->user_ip6[2];
  a[3] = ctx->user_ip6[3];
  struct warren_addr dst = {};
  dst.port = bpf_ntohs((__u16)ctx->user_port);
  int mapped = v6_is_v4mapped(a);
  if (mapped) {
    // A dual-stack socket connecting to an IPv4 address.
    if ((bpf_ntohl(a[3]) >> 24) == 127 || a[3] == pod->ip4 || a[3] == 0) {
      count(WARREN_STAT_CONNECT_SKIP_LOCAL);
      return 1;
    }
    dst.family = AF_INET;
    dst.ip[0] = a[3];
  } else {
    if (v6_is_loopback(a) || (a[0] | a[1] | a[2] | a[3]) == 0 ||
        (a[0] == pod->ip6[0] && a[1] == pod->ip6[1] && a[2] == pod->ip6[2] &&
         a[3] == pod->ip6[3])) {
      count(WARREN_STAT_CONNECT_SKIP_LOCAL);
      return 1;
    }
    dst.family = AF_INET6;
    dst.ip[0] = a[0];
    dst.ip[1] = a[1];
    dst.ip[2] = a[2];
    dst.ip[3] = a[3];
  }
  if (!decide(ctx, cookie, pod, &dst)) return 1;
  if (mapped) {
    ctx->user_ip6[3] = bpf_htonl(0x7f000001);
  } else {
    ctx->user_ip6[0] = 0;
    ctx->user_ip6[1] = 0;
    ctx->user_ip6[2] = 0;
    ctx->user_ip6[3] = bpf_htonl(1);
  }
  ctx->user_port = bpf_htons(WARREN_PORT_OUTBOUND);
  return 1;
}

SEC("cgroup/getpeername4")
int warren_getpeername4(struct bpf_sock_addr* ctx) {
  struct bpf_sock* sk = ctx->sk;
  if (!sk) return 1;
  struct warren_sk_state* st = bpf_sk_storage_get(&sk_state, sk, 0, 0);
  if (!st || st->direct || st->orig.family != AF_INET) return 1;
  ctx->user_ip4 = st->orig.ip[0];
  ctx->user_port = bpf_htons(st->orig.port);
  count(WARREN_STAT_GETPEERNAME);
  return 1;
}

SEC("cgroup/getpeername6")
int warren_getpeername6(struct bpf_sock_addr* ctx) {
  struct bpf_sock* sk = ctx->sk;
  if (!sk) return 1;
  struct warren_sk_state* st = bpf_sk_storage_get(&sk_state, sk, 0, 0);
  if (!st || st->direct) return 1;
  if (st->orig.family == AF_INET) {
    ctx->user_ip6[0] = 0;
    ctx->user_ip6[1] = 0;
    ctx->user_ip6[2] = bpf_htonl(0xffff);
    ctx->user_ip6[3] = st->orig.ip[0];
  } else {
    ctx->user_ip6[0] = st->orig.ip[0];
    ctx->user_ip6[1] = st->orig.ip[1];
    ctx->user_ip6[2] = st->orig.ip[2];
    ctx->user_ip6[3] = st->orig.ip[3];
  }
  ctx->user_port = bpf_htons(st->orig.port);
  count(WARREN_STAT_GETPEERNAME);
  return 1;
}

// A captured socket is really bound to 127.0.0.1 (it connected to the proxy's
// 15001); the application is told its pod address, as without the mesh.
SEC("cgroup/getsockname4")
int warren_getsockname4(struct bpf_sock_addr* ctx) {
  struct bpf_sock* sk = ctx->sk;
  if (!sk) return 1;
  struct warren_sk_state* st = bpf_sk_storage_get(&sk_state, sk, 0, 0);
  if (!st || st->direct || st->orig.family != AF_INET) return 1;
  __u64 cookie = st->netns_cookie;
  struct warren_pod* pod = bpf_map_lookup_elem(&enrolled_netns, &cookie);
  if (!pod || !pod->ip4) return 1;
  ctx->user_ip4 = pod->ip4;
  return 1;
}

static __always_inline void flow_key_from_ops(struct bpf_sock_ops* skops,
                                              struct warren_flow_key* k) {
  k->family = skops->family;
  if (skops->family == AF_INET) {
    k->saddr[0] = skops->local_ip4;
    k->daddr[0] = skops->remote_ip4;
  } else {
    k->saddr[0] = skops->local_ip6[0];
    k->saddr[1] = skops->local_ip6[1];
    k->saddr[2] = skops->local_ip6[2];
    k->saddr[3] = skops->local_ip6[3];
    k->daddr[0] = skops->remote_ip6[0];
    k->daddr[1] = skops->remote_ip6[1];
    k->daddr[2] = skops->remote_ip6[2];
    k->daddr[3] = skops->remote_ip6[3];
  }
  k->sport = (__u16)skops->local_port;
  k->dport = (__u16)bpf_ntohl(skops->remote_port);
}

SEC("sockops")
int warren_sockops(struct bpf_sock_ops* skops) {
  struct bpf_sock* sk = skops->sk;
  if (!sk) return 1;
  if (skops->op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
    struct warren_sk_state* st = bpf_sk_storage_get(&sk_state, sk, 0, 0);
    if (!st) return 1;
    if (st->direct) {
      struct warren_flow_key k = {};
      flow_key_from_ops(skops, &k);
      struct warren_flow f = {.netns_cookie = st->netns_cookie,
                              .opened_ns = bpf_ktime_get_ns(),
                              .sock_cookie = bpf_get_socket_cookie(skops)};
      bpf_map_update_elem(&direct_flows, &k, &f, BPF_ANY);
      bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
      return 1;
    }
    struct warren_conn_key ck = {.netns_cookie = st->netns_cookie,
                                 .port = (__u16)skops->local_port,
                                 .family = (__u16)skops->family};
    bpf_map_update_elem(&conn_orig, &ck, &st->orig, BPF_ANY);
    count(WARREN_STAT_ORIG_RECORDED);
  } else if (skops->op == BPF_SOCK_OPS_STATE_CB) {
    if (skops->args[1] != TCP_CLOSE) return 1;
    struct warren_flow_key k = {};
    flow_key_from_ops(skops, &k);
    struct warren_flow* f = bpf_map_lookup_elem(&direct_flows, &k);
    if (!f) return 1;
    // The kernel's counters include the SYN (sent) and each FIN: a graceful
    // close (coming from a FIN state) has our FIN acked and the peer's FIN
    // received; a reset has neither.
    __u32 old = skops->args[0];
    int graceful = old == 4 /* FIN_WAIT1 */ || old == 5 /* FIN_WAIT2 */ ||
                   old == 6 /* TIME_WAIT */ || old == 9 /* LAST_ACK */ || old == 11 /* CLOSING */;
    __u64 acked = skops->bytes_acked, rcvd = skops->bytes_received;
    __u64 sent_extra = graceful ? 2 : 1, rcvd_extra = graceful ? 1 : 0;
    f->bytes_sent = acked > sent_extra ? acked - sent_extra : 0;
    f->bytes_received = rcvd > rcvd_extra ? rcvd - rcvd_extra : 0;
    f->closed = 1;
    count(WARREN_STAT_FLOW_CLOSED);
  }
  return 1;
}

SEC("sk_lookup")
int warren_sk_lookup(struct bpf_sk_lookup* ctx) {
  if (ctx->protocol != IPPROTO_TCP) return SK_PASS;
  if (ctx->ingress_ifindex == 1) {  // loopback
    count(WARREN_STAT_LOOKUP_LOCAL);
    return SK_PASS;
  }
  struct warren_listener_key lk = {.family = ctx->family};
  struct warren_flow_key fk = {.family = (__u16)ctx->family};
  if (ctx->family == AF_INET) {
    lk.ip[0] = ctx->local_ip4;
    fk.saddr[0] = ctx->remote_ip4;
    fk.daddr[0] = ctx->local_ip4;
  } else {
    lk.ip[0] = ctx->local_ip6[0];
    lk.ip[1] = ctx->local_ip6[1];
    lk.ip[2] = ctx->local_ip6[2];
    lk.ip[3] = ctx->local_ip6[3];
    fk.saddr[0] = ctx->remote_ip6[0];
    fk.saddr[1] = ctx->remote_ip6[1];
    fk.saddr[2] = ctx->remote_ip6[2];
    fk.saddr[3] = ctx->remote_ip6[3];
    fk.daddr[0] = lk.ip[0];
    fk.daddr[1] = lk.ip[1];
    fk.daddr[2] = lk.ip[2];
    fk.daddr[3] = lk.ip[3];
  }
  fk.sport = bpf_ntohs(ctx->remote_port);
  fk.dport = (__u16)ctx->local_port;
  // The pod talking to itself, or the proxy delivering to the application
  // (its transparent socket arrives with the client's address).
  if ((ctx->family == AF_INET && ctx->remote_ip4 == ctx->local_ip4) ||
      bpf_map_lookup_elem(&deliveries, &fk)) {
    count(WARREN_STAT_LOOKUP_LOCAL);
    return SK_PASS;
  }
  if (ctx->local_port != WARREN_PORT_HBONE) {
    struct warren_flow* f = bpf_map_lookup_elem(&direct_flows, &fk);
    if (f && !f->closed) {  // a same-node flow the proxy allowed
      count(WARREN_STAT_LOOKUP_DIRECT);
      return SK_PASS;
    }
  }
  lk.slot = ctx->local_port == WARREN_PORT_HBONE ? WARREN_SLOT_HBONE : WARREN_SLOT_PLAIN;
  struct bpf_sock* sk = bpf_map_lookup_elem(&listeners, &lk);
  if (!sk) {
    count(WARREN_STAT_LOOKUP_DROP);
    return SK_DROP;  // enrolled but no proxy: fail closed
  }
  long err = bpf_sk_assign(ctx, sk, 0);
  bpf_sk_release(sk);
  if (err) {
    count(WARREN_STAT_LOOKUP_DROP);
    return SK_DROP;
  }
  count(lk.slot == WARREN_SLOT_HBONE ? WARREN_STAT_LOOKUP_HBONE : WARREN_STAT_LOOKUP_PLAIN);
  return SK_PASS;
}
