// bpf/capture.bpf.c through its loader, on real cgroups, netns and sockets
// (DESIGN.md §5). Root only; see bpf_env.h for the fixtures. A connect that
// is not captured reaches a real listener (10.77.0.9 is local in both netns),
// so "not captured" is asserted by where the connection lands.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <filesystem>
#include <set>

#include "bpf_checks.h"
#include "warren/netns.h"

using namespace wbt;
namespace fs = std::filesystem;

namespace {
// How many programs are attached to `fd` for `type` and the first one's id.
std::pair<uint32_t, uint32_t> attached(int fd, bpf_attach_type type) {
  __u32 ids[8] = {}, cnt = 8, flags = 0;
  if (bpf_prog_query(fd, type, 0, &flags, ids, &cnt) != 0) return {~0u, 0};
  return {cnt, ids[0]};
}
}  // namespace

TEST_CASE("capture: load pin reuse and uninstall") {
  Env env;
  NetNs ns;
  Fd cg(::open(env.cg.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  REQUIRE(cg.get() >= 0);
  for (auto* m : {"enrolled_netns", "excluded_ports", "sk_state", "conn_orig", "verdicts",
                  "direct_flows", "deliveries", "listeners", "stats"})
    CHECK(fs::exists(env.pin + "/maps/" + m));
  for (auto* l : {"connect4", "connect6", "getpeername4", "getpeername6", "getsockname4", "sockops"})
    CHECK(fs::exists(env.pin + "/links/" + l));
  const bpf_attach_type kTypes[] = {BPF_CGROUP_INET4_CONNECT, BPF_CGROUP_INET6_CONNECT,
                                    BPF_CGROUP_INET4_GETPEERNAME, BPF_CGROUP_INET6_GETPEERNAME,
                                    BPF_CGROUP_INET4_GETSOCKNAME, BPF_CGROUP_SOCK_OPS};
  std::vector<uint32_t> first;
  for (auto t : kTypes) {
    auto [n, id] = attached(cg.get(), t);
    CHECK(n == 1);
    first.push_back(id);
  }
  REQUIRE(env.cap->attach_netns(ns.fd(), ns.inode()));
  CHECK(fs::exists(env.pin + "/links/sk_lookup-" + std::to_string(ns.inode())));
  CHECK(env.cap->attached_netns() == std::vector<uint64_t>{ns.inode()});
  auto [nl, lookup_id] = attached(ns.fd(), BPF_SK_LOOKUP);
  CHECK(nl == 1);

  // A restart: the second process swaps its programs into the pinned links
  // (still one per hook, a new program id) and shares the pinned maps.
  auto second = Capture::open({env.pin, env.cg.path()});
  REQUIRE(second);
  for (size_t i = 0; i < std::size(kTypes); ++i) {
    auto [n, id] = attached(cg.get(), kTypes[i]);
    CHECK(n == 1);
    CHECK(id != first[i]);
  }
  REQUIRE(env.cap->enroll(pod_entry(ns.cookie(), "10.77.0.2")));
  CHECK((*second)->enrolled() == std::vector<uint64_t>{ns.cookie()});
  REQUIRE((*second)->unenroll(ns.cookie()));
  CHECK(env.cap->enrolled().empty());
  REQUIRE((*second)->attach_netns(ns.fd(), ns.inode()));
  auto [nl2, lookup_id2] = attached(ns.fd(), BPF_SK_LOOKUP);
  CHECK(nl2 == 1);
  CHECK(lookup_id2 != lookup_id);
  CHECK((*second)->sk_lookup_prog_fd() >= 0);

  // Uninstall detaches although both processes still hold link fds.
  REQUIRE(Capture::uninstall(env.pin));
  CHECK_FALSE(fs::exists(env.pin));
  for (auto t : kTypes) CHECK(attached(cg.get(), t).first == 0);
  CHECK(attached(ns.fd(), BPF_SK_LOOKUP).first == 0);
  CHECK(Capture::uninstall(env.pin));  // idempotent
}

TEST_CASE("capture: connect4 and connect6 redirect to 15001 and getpeername restores") {
  Env env;
  Topo t;
  REQUIRE(env.cap->enroll(pod_entry(t.pod.cookie(), "10.77.0.2")));
  Fd l1 = listen_in(t.pod.fd(), sa("127.0.0.1:15001"));
  Fd app = listen_in(t.pod.fd(), sa("10.77.0.9:80"));
  auto before = env.cap->stats();

  Fd c = socket_from(env.cg.path(), t.pod.fd(), SOCK_STREAM);
  Fd a = lands_on(c, "10.77.0.9:80", l1, app);
  SockAddr local = local_of(c.get());
  CHECK(local.ip == ip("10.77.0.2"));  // getsockname4: the pod's address, not 127.0.0.1
  auto orig = env.cap->take_orig_dst(t.pod.cookie(), local.port, false);
  REQUIRE(orig);
  CHECK(*orig == sa("10.77.0.9:80"));
  CHECK_FALSE(env.cap->take_orig_dst(t.pod.cookie(), local.port, false));  // taken
  CHECK(peer_of(c.get()) == sa("10.77.0.9:80"));  // the application's view
  CHECK(diff(before, env.cap->stats()) ==
        only({WARREN_STAT_CONNECT_CAPTURED, WARREN_STAT_ORIG_RECORDED, WARREN_STAT_GETPEERNAME}));
  REQUIRE(send_all(c.get(), "ping"));
  CHECK(recv_n(a.get(), 4) == "ping");

  // connect6 on a dual-stack socket to a v4-mapped address, and native IPv6.
  t.pod.ip("addr add fd77::9/128 dev lo nodad");
  Fd l1v6 = listen_in(t.pod.fd(), sa("[::1]:15001"));
  Fd appv6 = listen_in(t.pod.fd(), sa("[fd77::9]:80"));
  struct V6 {
    const char* dst;
    const Fd& lfd;
    const char* orig;  // as the proxy reads it
  };
  for (V6 v : {V6{"[::ffff:10.77.0.9]:80", l1, "10.77.0.9:80"},
               V6{"[fd77::9]:80", l1v6, "[fd77::9]:80"}}) {
    INFO(v.dst);
    auto s1 = env.cap->stats();
    Fd c6 = socket_from(env.cg.path(), t.pod.fd(), SOCK_STREAM, AF_INET6);
    REQUIRE(connect_wait(c6.get(), sa(v.dst)) == 0);
    Fd a6 = accept_wait(v.lfd.get());
    REQUIRE(a6.get() >= 0);
    CHECK(peer_of(a6.get()).port == local_of(c6.get()).port);
    CHECK_FALSE(readable(app.get(), 0));
    CHECK_FALSE(readable(appv6.get(), 0));
    auto o6 = env.cap->take_orig_dst(t.pod.cookie(), local_of(c6.get()).port, true);
    REQUIRE(o6);
    CHECK(*o6 == sa(v.orig));
    CHECK(peer_of(c6.get()) == sa(v.dst));
    CHECK(diff(s1, env.cap->stats()) ==
          only({WARREN_STAT_CONNECT_CAPTURED, WARREN_STAT_ORIG_RECORDED, WARREN_STAT_GETPEERNAME}));
  }
}

TEST_CASE("capture: connects that must not be captured") {
  Env env;
  Topo t;
  const std::string& cg = env.cg.path();
  REQUIRE(env.cap->enroll(pod_entry(t.pod.cookie(), "10.77.0.2", false, {8080})));
  Fd l1 = listen_in(t.pod.fd(), sa("127.0.0.1:15001"));
  Fd app = listen_in(t.pod.fd(), sa("0.0.0.0:80"));
  Fd app8080 = listen_in(t.pod.fd(), sa("0.0.0.0:8080"));
  auto s0 = env.cap->stats();

  // (a) loopback, (b) the pod's own address
  lands_on(socket_from(cg, t.pod.fd(), SOCK_STREAM), "127.0.0.1:80", app, l1);
  lands_on(socket_from(cg, t.pod.fd(), SOCK_STREAM), "10.77.0.2:80", app, l1);
  auto s1 = env.cap->stats();
  Stats two_local(WARREN_STAT_MAX, 0);
  two_local[WARREN_STAT_CONNECT_SKIP_LOCAL] = 2;
  CHECK(diff(s0, s1) == two_local);

  // (c) the mesh mark
  {
    Fd s = socket_from(cg, t.pod.fd(), SOCK_STREAM);
    int mark = WARREN_MESH_MARK;
    REQUIRE(::setsockopt(s.get(), SOL_SOCKET, SO_MARK, &mark, sizeof mark) == 0);
    lands_on(s, "10.77.0.9:80", app, l1);
    auto s2 = env.cap->stats();
    CHECK(diff(s1, s2) == only({WARREN_STAT_CONNECT_SKIP_MARK}));
    s1 = s2;
  }
  // (d) an excluded port
  lands_on(socket_from(cg, t.pod.fd(), SOCK_STREAM), "10.77.0.9:8080", app8080, l1);
  auto s3 = env.cap->stats();
  CHECK(diff(s1, s3) == only({WARREN_STAT_CONNECT_SKIP_EXCLUDED}));

  // (e) UDP: connect + send reach the real 10.77.0.9:53, no program counts it
  {
    Fd dns = listen_in(t.pod.fd(), sa("10.77.0.9:53"), SOCK_DGRAM);
    Fd u = socket_from(cg, t.pod.fd(), SOCK_DGRAM);
    REQUIRE(connect_wait(u.get(), sa("10.77.0.9:53")) == 0);
    CHECK(peer_of(u.get()) == sa("10.77.0.9:53"));
    REQUIRE(::send(u.get(), "q", 1, 0) == 1);
    CHECK(recv_n(dns.get(), 1) == "q");
  }
  // (f) a socket made outside the cgroup
  lands_on(socket_from("", t.pod.fd(), SOCK_STREAM), "10.77.0.9:80", app, l1);
  // (g) a netns that is not enrolled
  {
    Fd capp = listen_in(t.client.fd(), sa("10.77.0.9:80"));
    Fd cl1 = listen_in(t.client.fd(), sa("127.0.0.1:15001"));
    lands_on(socket_from(cg, t.client.fd(), SOCK_STREAM), "10.77.0.9:80", capp, cl1);
  }
  // Only (g) is counted, as a connect from a netns that is not enrolled.
  Stats not_enrolled(WARREN_STAT_MAX, 0);
  not_enrolled[WARREN_STAT_CONNECT_NOT_ENROLLED] = 1;
  CHECK(diff(s3, env.cap->stats()) == not_enrolled);

  // Control: the same connect from the cgroup in the pod is captured.
  lands_on(socket_from(cg, t.pod.fd(), SOCK_STREAM), "10.77.0.9:80", l1, app);
  CHECK(diff(s3, env.cap->stats())[WARREN_STAT_CONNECT_CAPTURED] == 1);
}

TEST_CASE("capture: sk_lookup decisions under BPF_PROG_TEST_RUN") {
  Env env;
  Topo t;
  int prog = env.cap->sk_lookup_prog_fd();
  REQUIRE(prog >= 0);
  Fd l6 = listen_in(t.pod.fd(), sa("127.0.0.1:15006"));
  Fd l8 = listen_in(t.pod.fd(), sa("10.77.0.2:15008"));
  REQUIRE(env.cap->set_listener(ip("10.77.0.2"), WARREN_SLOT_PLAIN, l6.get()));
  REQUIRE(env.cap->set_listener(ip("10.77.0.2"), WARREN_SLOT_HBONE, l8.get()));

  struct Out {
    int rc = -1;
    uint32_t retval = 99;
    uint64_t cookie = 0;
  };
  auto run = [&](int proto, const std::string& remote, const std::string& local) {
    SockAddr r = sa(remote), l = sa(local);
    bpf_sk_lookup in{}, out{};
    in.family = AF_INET;
    in.protocol = proto;
    std::memcpy(&in.remote_ip4, r.ip.bytes().data(), 4);
    in.remote_port = htons(r.port);
    std::memcpy(&in.local_ip4, l.ip.bytes().data(), 4);
    in.local_port = l.port;
    LIBBPF_OPTS(bpf_test_run_opts, o, .ctx_in = &in, .ctx_out = &out, .ctx_size_in = sizeof in,
                .ctx_size_out = sizeof out);
    Out res;
    auto done = warren::netns::run_in(t.pod.fd(), [&] { res.rc = bpf_prog_test_run_opts(prog, &o); });
    if (!done) res.rc = -1000;
    res.retval = o.retval;
    res.cookie = out.cookie;
    return res;
  };
  auto s0 = env.cap->stats();
  auto plain = run(IPPROTO_TCP, "10.77.0.1:40000", "10.77.0.2:80");
  REQUIRE(plain.rc == 0);
  CHECK(plain.retval == SK_PASS);
  CHECK(plain.cookie == sock_cookie(l6.get()));
  auto hbone = run(IPPROTO_TCP, "10.77.0.1:40000", "10.77.0.2:15008");
  CHECK(hbone.retval == SK_PASS);
  CHECK(hbone.cookie == sock_cookie(l8.get()));
  auto none = run(IPPROTO_TCP, "10.77.0.1:40000", "10.77.0.5:80");
  CHECK(none.retval == SK_DROP);
  CHECK(none.cookie == 0);
  CHECK(diff(s0, env.cap->stats()) ==
        only({WARREN_STAT_LOOKUP_PLAIN, WARREN_STAT_LOOKUP_HBONE, WARREN_STAT_LOOKUP_DROP}));

  auto udp = run(IPPROTO_UDP, "10.77.0.1:40000", "10.77.0.2:53");
  CHECK(udp.retval == SK_PASS);
  CHECK(udp.cookie == 0);
  // The proxy's transparent delivery (client address → pod) is left alone.
  REQUIRE(env.cap->add_delivery(sa("10.77.0.1:40001"), sa("10.77.0.2:80")));
  auto deliv = run(IPPROTO_TCP, "10.77.0.1:40001", "10.77.0.2:80");
  CHECK(deliv.retval == SK_PASS);
  CHECK(deliv.cookie == 0);
  env.cap->remove_delivery(sa("10.77.0.1:40001"), sa("10.77.0.2:80"));
  CHECK(run(IPPROTO_TCP, "10.77.0.1:40001", "10.77.0.2:80").cookie == sock_cookie(l6.get()));
  auto self = run(IPPROTO_TCP, "10.77.0.2:5555", "10.77.0.2:80");
  CHECK(self.retval == SK_PASS);
  CHECK(self.cookie == 0);
  // After the listener is closed its sockhash entry is gone: fail closed.
  l6.reset();
  CHECK(run(IPPROTO_TCP, "10.77.0.1:40000", "10.77.0.2:80").retval == SK_DROP);
}

TEST_CASE("capture: inbound steering through a veth and fail closed") {
  Env env;
  Topo t;
  REQUIRE(env.cap->enroll(pod_entry(t.pod.cookie(), "10.77.0.2")));
  REQUIRE(env.cap->attach_netns(t.pod.fd(), t.pod.inode()));
  Fd l6 = listen_in(t.pod.fd(), sa("127.0.0.1:15006"));
  Fd l8 = listen_in(t.pod.fd(), sa("10.77.0.2:15008"));
  REQUIRE(env.cap->set_listener(ip("10.77.0.2"), WARREN_SLOT_PLAIN, l6.get()));
  REQUIRE(env.cap->set_listener(ip("10.77.0.2"), WARREN_SLOT_HBONE, l8.get()));
  auto s0 = env.cap->stats();
  auto client_sock = [&] { return socket_from("", t.client.fd(), SOCK_STREAM); };

  {  // nothing listens on :80, the 15006 listener gets it with the original address
    Fd c = client_sock();
    Fd a = lands_on(c, "10.77.0.2:80", l6, l8);
    CHECK(local_of(a.get()) == sa("10.77.0.2:80"));
    CHECK(local_of(c.get()).ip == ip("10.77.0.1"));
    REQUIRE(send_all(c.get(), "hello"));
    CHECK(recv_n(a.get(), 5) == "hello");
  }
  {
    Fd c = client_sock();
    Fd a = lands_on(c, "10.77.0.2:15008", l8, l6);
    CHECK(local_of(a.get()) == sa("10.77.0.2:15008"));
  }
  CHECK(diff(s0, env.cap->stats()) == only({WARREN_STAT_LOOKUP_PLAIN, WARREN_STAT_LOOKUP_HBONE}));

  // Inside the pod (over lo) nothing is steered: the application gets it.
  Fd app = listen_in(t.pod.fd(), sa("10.77.0.2:80"));
  auto s1 = env.cap->stats();
  lands_on(socket_from("", t.pod.fd(), SOCK_STREAM), "10.77.0.2:80", app, l6);
  CHECK(diff(s1, env.cap->stats()) == only({WARREN_STAT_LOOKUP_LOCAL}));

  // No proxy listener: the SYN is dropped, the application never sees it.
  l6.reset();
  l8.reset();
  auto s2 = env.cap->stats();
  Fd c = client_sock();
  int rc = connect_wait(c.get(), sa("10.77.0.2:80"), 0);
  CHECK(rc != 0);
  CHECK(wait_until([&] { return env.stat(WARREN_STAT_LOOKUP_DROP) > s2[WARREN_STAT_LOOKUP_DROP]; }));
  CHECK(peer_of(c.get()).port == 0);  // not connected
  CHECK_FALSE(readable(app.get(), 0));
  CHECK(diff(s2, env.cap->stats())[WARREN_STAT_LOOKUP_PLAIN] == 0);
}

TEST_CASE("capture: enroll and unenroll maps") {
  Env env;
  auto excluded = [&] {
    std::set<std::pair<uint64_t, uint32_t>> out;
    Fd m(bpf_obj_get((env.pin + "/maps/excluded_ports").c_str()));
    REQUIRE(m.get() >= 0);
    struct K {
      uint64_t cookie;
      uint32_t port, pad;
    } cur{}, next{};
    void* prev = nullptr;
    while (bpf_map_get_next_key(m.get(), prev, &next) == 0) {
      out.insert({next.cookie, next.port});
      cur = next;
      prev = &cur;
    }
    return out;
  };
  auto enrolled = [&] {
    auto v = env.cap->enrolled();
    return std::set<uint64_t>(v.begin(), v.end());
  };
  using Ex = std::set<std::pair<uint64_t, uint32_t>>;
  auto a = pod_entry(1001, "10.77.0.2", false, {8080, 9090});
  auto b = pod_entry(1002, "10.77.0.3", false, {8080});
  REQUIRE(env.cap->enroll(a));
  REQUIRE(env.cap->enroll(a));  // idempotent
  REQUIRE(env.cap->enroll(b));
  CHECK(env.cap->enrolled().size() == 2);
  CHECK(enrolled() == std::set<uint64_t>{1001, 1002});
  CHECK(excluded() == Ex{{1001, 8080}, {1001, 9090}, {1002, 8080}});

  REQUIRE(env.cap->unenroll(1001));
  CHECK(enrolled() == std::set<uint64_t>{1002});
  CHECK(excluded() == Ex{{1002, 8080}});
  REQUIRE(env.cap->unenroll(1001));  // idempotent
  REQUIRE(env.cap->unenroll(4242));  // never enrolled
  CHECK(enrolled() == std::set<uint64_t>{1002});
  CHECK(excluded() == Ex{{1002, 8080}});

  REQUIRE(env.cap->enroll(a));
  CHECK(enrolled() == std::set<uint64_t>{1001, 1002});
  CHECK(excluded() == Ex{{1001, 8080}, {1001, 9090}, {1002, 8080}});
  REQUIRE(env.cap->unenroll(1002));
  REQUIRE(env.cap->unenroll(1001));
  CHECK(enrolled().empty());
  CHECK(excluded().empty());
}
