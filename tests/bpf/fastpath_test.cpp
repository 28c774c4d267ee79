// Same-node fast path (DESIGN.md §5, design (b)): verdict cache hits are not
// redirected, the destination pod's sk_lookup lets exactly the recorded
// 4-tuple through, sockops counts the flow's bytes at close.
#include <optional>

#include "bpf_checks.h"

using namespace wbt;
using warren::bpf::DirectFlow;

namespace {

// The pod (fast path on, 15001 listener, an app on its local 10.77.0.9:80)
// and the client netns as a destination pod: enrolled, sk_lookup attached,
// its 15006 listener registered, an app on 10.77.0.1:7000.
struct FastPath {
  Env env;
  Topo t;
  uint64_t pod = t.pod.cookie();
  Fd l1 = listen_in(t.pod.fd(), sa("127.0.0.1:15001"));
  Fd papp = listen_in(t.pod.fd(), sa("10.77.0.9:80"));
  Fd cl6 = listen_in(t.client.fd(), sa("127.0.0.1:15006"));
  Fd srv = listen_in(t.client.fd(), sa("10.77.0.1:7000"));

  FastPath() {
    REQUIRE(env.cap->enroll(pod_entry(pod, "10.77.0.2", true)));
    REQUIRE(env.cap->enroll(pod_entry(t.client.cookie(), "10.77.0.1", true)));
    REQUIRE(env.cap->attach_netns(t.client.fd(), t.client.inode()));
    REQUIRE(env.cap->set_listener(ip("10.77.0.1"), WARREN_SLOT_PLAIN, cl6.get()));
  }
  Fd pod_socket() { return socket_from(env.cg.path(), t.pod.fd(), SOCK_STREAM); }
  std::optional<DirectFlow> flow(const SockAddr& client) const {
    for (auto& f : env.cap->direct_flows())
      if (f.client == client && f.server == sa("10.77.0.1:7000")) return f;
    return std::nullopt;
  }
  // A direct connection to the app on 10.77.0.1:7000: {client, accepted}.
  std::pair<Fd, Fd> direct() {
    Fd c = pod_socket();
    Fd a = lands_on(c, "10.77.0.1:7000", srv, cl6);
    return {std::move(c), std::move(a)};
  }
};

void exchange(const Fd& c, const Fd& a, const std::string& up, const std::string& down) {
  REQUIRE(send_all(c.get(), up));
  CHECK(recv_n(a.get(), up.size()) == up);
  REQUIRE(send_all(a.get(), down));
  CHECK(recv_n(c.get(), down.size()) == down);
}

// Closes `first`, lets `second` read the EOF, closes it.
void close_in_order(Fd& first, Fd& second) {
  first.reset();
  CHECK(recv_n(second.get(), 1).empty());
  second.reset();
}

}  // namespace

TEST_CASE("capture: fast path verdicts and direct flows") {
  FastPath fp;
  auto& cap = *fp.env.cap;
  REQUIRE(cap.set_verdict(fp.pod, sa("10.77.0.9:80")));
  auto s0 = cap.stats();
  {
    Fd c = fp.pod_socket();
    lands_on(c, "10.77.0.9:80", fp.papp, fp.l1);
    CHECK(peer_of(c.get()) == sa("10.77.0.9:80"));
    CHECK(diff(s0, cap.stats()) == only({WARREN_STAT_CONNECT_DIRECT}));
  }

  // Across netns: not redirected at the source, not steered at the destination.
  REQUIRE(cap.set_verdict(fp.pod, sa("10.77.0.1:7000")));
  auto s1 = cap.stats();
  auto [c, a] = fp.direct();
  SockAddr client = local_of(c.get());
  CHECK(client.ip == ip("10.77.0.2"));
  CHECK(diff(s1, cap.stats()) == only({WARREN_STAT_CONNECT_DIRECT, WARREN_STAT_LOOKUP_DIRECT}));
  auto f = fp.flow(client);
  REQUIRE(f);
  CHECK(f->netns_cookie == fp.pod);
  CHECK_FALSE(f->closed);
  exchange(c, a, std::string(1000, 'u'), std::string(300, 'd'));
  close_in_order(c, a);
  REQUIRE(wait_until([&] { return fp.flow(client) && fp.flow(client)->closed; }));
  CHECK(cap.stats()[WARREN_STAT_FLOW_CLOSED] == s1[WARREN_STAT_FLOW_CLOSED] + 1);

  // Fast path switched off for the pod: the verdict is ignored.
  REQUIRE(cap.enroll(pod_entry(fp.pod, "10.77.0.2", false)));
  auto s2 = cap.stats();
  lands_on(fp.pod_socket(), "10.77.0.1:7000", fp.l1, fp.srv);
  CHECK(diff(s2, cap.stats())[WARREN_STAT_CONNECT_CAPTURED] == 1);

  // Verdicts flushed: captured again, original destination recorded.
  REQUIRE(cap.enroll(pod_entry(fp.pod, "10.77.0.2", true)));
  cap.clear_verdicts();
  auto s3 = cap.stats();
  Fd c3 = fp.pod_socket();
  lands_on(c3, "10.77.0.1:7000", fp.l1, fp.srv);
  CHECK(diff(s3, cap.stats()) == only({WARREN_STAT_CONNECT_CAPTURED, WARREN_STAT_ORIG_RECORDED}));
  auto orig = cap.take_orig_dst(fp.pod, local_of(c3.get()).port, false);
  REQUIRE(orig);
  CHECK(*orig == sa("10.77.0.1:7000"));
}

// bytes_sent / bytes_received of a closed direct flow are the payload bytes
// each way, whichever side closes first (no SYN or FIN sequence numbers).
TEST_CASE("capture: direct flow byte counts") {
  FastPath fp;
  REQUIRE(fp.env.cap->set_verdict(fp.pod, sa("10.77.0.1:7000")));
  struct Run {
    size_t up, down;
    bool client_closes_first;
  };
  for (Run r : {Run{1000, 300, true}, Run{1000, 300, false}, Run{0, 0, true}, Run{70000, 1, false}}) {
    INFO("up " << r.up << " down " << r.down << " client first " << r.client_closes_first);
    auto [c, a] = fp.direct();
    SockAddr client = local_of(c.get());
    exchange(c, a, std::string(r.up, 'u'), std::string(r.down, 'd'));
    if (r.client_closes_first)
      close_in_order(c, a);
    else
      close_in_order(a, c);
    REQUIRE(wait_until([&] { return fp.flow(client) && fp.flow(client)->closed; }));
    auto f = fp.flow(client);
    CHECK(f->bytes_sent == r.up);
    CHECK(f->bytes_received == r.down);
  }
}
