// Backpressure, cleanup after clients go away, who may use the SOCKS entry,
// and which certificate new connections see after a rotation.
#include <sys/socket.h>

#include <catch2/catch.hpp>

#include "fixture.h"

using namespace warren::e2e;

TEST_CASE("a slow reader never makes the nodes buffer without limit", "[e2e][robust]") {
  StdMesh s;
  Firehose fire(s.echo1, 8080);
  s.start();
  long a0 = s.m.node('a').rss_kb(), b0 = s.m.node('b').rss_kb();
  auto r = s.m.socks(s.client, s.echo1, 8080);
  REQUIRE(r.reply == 0);
  // Shrink our receive buffer so what sits in the client's kernel is small.
  int small = 64 * 1024;
  setsockopt(r.fd.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  // The server writes until every buffer on the way is full, then stops.
  REQUIRE(wait_until([&] { return fire.written() > 0; }, 10s));
  bool stable = wait_stable([&] { return fire.written(); }, 1500ms, 60s);
  INFO("server wrote " << fire.written() << " bytes without the client reading");
  CHECK(stable);
  CHECK(fire.written() < 128ull << 20);
  long a1 = s.m.node('a').rss_kb(), b1 = s.m.node('b').rss_kb();
  INFO("VmRSS node-a " << a0 << " -> " << a1 << " kB, node-b " << b0 << " -> " << b1 << " kB");
  CHECK(a1 < a0 + 64 * 1024);
  CHECK(b1 < b0 + 64 * 1024);
  // Reading resumes the flow.
  uint64_t before = fire.written();
  std::string buf(4 << 20, '\0');
  REQUIRE(recv_exact(r.fd.get(), buf.data(), buf.size()));
  CHECK(buf.find_first_not_of('f') == std::string::npos);
  CHECK(wait_until([&] { return fire.written() > before; }, 10s));
}

TEST_CASE("a server that does not read stops the client, with bounded buffers", "[e2e][robust]") {
  StdMesh s;
  Fd sink = tcp_listen(s.echo1, 8080);
  s.start();
  long a0 = s.m.node('a').rss_kb(), b0 = s.m.node('b').rss_kb();
  auto r = s.m.socks(s.client, s.echo1, 8080);
  REQUIRE(r.reply == 0);
  // The app accepts but never reads.
  Fd app(::accept(sink.get(), nullptr, nullptr));
  REQUIRE(app);
  int small = 64 * 1024;
  setsockopt(app.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  set_recv_timeout(r.fd.get(), 2s);  // also the send timeout
  std::string chunk(65536, 'c');
  uint64_t sent = 0;
  while (sent < (512ull << 20)) {
    ssize_t n = ::send(r.fd.get(), chunk.data(), chunk.size(), MSG_NOSIGNAL);
    if (n <= 0) break;  // blocked for 2 s: backpressure reached the client
    sent += static_cast<uint64_t>(n);
  }
  INFO("client got " << sent << " bytes in before blocking");
  CHECK(sent < 128ull << 20);
  long a1 = s.m.node('a').rss_kb(), b1 = s.m.node('b').rss_kb();
  INFO("VmRSS node-a " << a0 << " -> " << a1 << " kB, node-b " << b0 << " -> " << b1 << " kB");
  CHECK(a1 < a0 + 64 * 1024);
  CHECK(b1 < b0 + 64 * 1024);
  // Once the app reads, everything sent arrives intact.
  set_recv_timeout(app.get(), 10s);
  uint64_t got = 0;
  std::string buf(1 << 20, '\0');
  while (got < sent) {
    ssize_t n = ::recv(app.get(), buf.data(), std::min<uint64_t>(buf.size(), sent - got), 0);
    if (n <= 0) break;
    CHECK(std::string_view(buf.data(), static_cast<size_t>(n)).find_first_not_of('c') ==
          std::string_view::npos);
    got += static_cast<uint64_t>(n);
  }
  CHECK(got == sent);
}

TEST_CASE("tunnels closed or reset by clients leave nothing behind", "[e2e][robust]") {
  StdMesh s;
  EchoServer echo(s.echo1, 8080);
  s.start();
  std::vector<Fd> fds;
  for (int i = 0; i < 40; i++) {
    auto r = s.m.socks(s.client, s.echo1, 8080);
    REQUIRE(r.reply == 0);
    REQUIRE(echo_roundtrip(r.fd.get(), "x"));
    fds.push_back(std::move(r.fd));
  }
  REQUIRE(wait_until([&] { return echo.open_connections() == 40; }, 10s));
  for (size_t i = 0; i < fds.size(); i++) {
    if (i % 2 == 0) {
      linger l{1, 0};  // abortive close: RST
      setsockopt(fds[i].get(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    fds[i].reset();
  }
  CHECK(wait_until([&] { return echo.open_connections() == 0; }, 15s));
  for (char n : {'a', 'b'}) {
    INFO("node-" << n);
    CHECK(wait_until(
        [&] { return metric_sum(s.m.metrics(n), "warren_tunnels_active") == 0; }, 15s));
    auto m = s.m.metrics(n);
    CHECK(metric_sum(m, "istio_tcp_connections_closed_total") == 40);
  }
  CHECK(metric_sum(s.m.metrics('a'), "warren_hbone_pool_streams") == 0);
  // The pool is still usable.
  auto r = s.m.socks(s.client, s.echo1, 8080);
  REQUIRE(r.reply == 0);
  CHECK(echo_roundtrip(r.fd.get(), "after"));
}

TEST_CASE("only local workloads may use the SOCKS entry", "[e2e][robust]") {
  StdMesh s;
  // A client workload that lives on node-b.
  s.m.add_workload({"remote-1", "remote", "default", "remote", "node-b", s.m.ip(12), "HBONE",
                    {{"app", "remote"}}});
  EchoServer echo(s.echo1, 8080);
  s.start();
  // An address that is no workload at all.
  CHECK(s.m.socks(s.m.ip(13), s.echo1, 8080).reply == 0x02);
  // A workload of another node.
  CHECK(s.m.socks(s.m.ip(12), s.echo1, 8080).reply == 0x02);
  // But it may use its own node's entry (same-node delivery via HBONE).
  auto own = s.m.socks(s.m.ip(12), s.echo1, 8080, 'b');
  REQUIRE(own.reply == 0);
  CHECK(echo_roundtrip(own.fd.get(), "same node"));
  CHECK(echo.accepted() == 1);
}

TEST_CASE("after a rotation new HBONE connections get the new certificate", "[e2e][robust]") {
  StdMesh s;
  EchoServer echo(s.echo1, 8080);
  s.start();
  TlsOpts o;
  o.cert = s.m.ca() + "/default/sleep/cert-chain.pem";
  o.key = s.m.ca() + "/default/sleep/key.pem";
  long before = TlsClient(s.client, s.echo1, 15008, o).peer_not_after();
  REQUIRE(before > 0);
  auto r = run({bin("/cli/warrenctl"), "dev-ca", "issue-config", "--ca", s.m.ca(), "--config",
                s.m.config_path('a'), "--hours", "72"});
  REQUIRE(r.exit_code == 0);
  long after = before;
  CHECK(wait_until(
      [&] {
        after = TlsClient(s.client, s.echo1, 15008, o).peer_not_after();
        return after > before + 3600;
      },
      15s, 200ms));
  INFO("notAfter before " << before << ", after " << after);
  for (char n : {'a', 'b'}) {
    INFO("node-" << n << " exit code " << s.m.node(n).exit_code().value_or(-1) << ", log:\n"
                 << s.m.node(n).log());
    CHECK(s.m.node(n).alive());
  }
  // The rotated client certificate works end to end too.
  auto t = s.m.socks(s.client, s.echo1, 8080);
  REQUIRE(t.reply == 0);
  CHECK(echo_roundtrip(t.fd.get(), "rotated"));
}
