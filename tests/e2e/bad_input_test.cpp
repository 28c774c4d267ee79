// Bad input on every edge of warren-node: a clear answer, nothing lost, no crash.
#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "fixture.h"
#include "waypoint_fixture.h"

using namespace warren::e2e;

namespace {

using H = std::vector<std::pair<std::string, std::string>>;

// The node still carries a fresh tunnel end to end.
void check_still_serving(StdMesh& s, const std::string& dst_ip = "") {
  auto r = s.m.socks(s.client, dst_ip.empty() ? s.echo1 : dst_ip, 8080);
  REQUIRE(r.reply == 0);
  CHECK(echo_roundtrip(r.fd.get(), "still serving"));
}

// Reads frames until the server's first SETTINGS (so its limits apply).
bool wait_settings(H2Client& c) {
  for (int i = 0; i < 10; i++) {
    auto f = c.next(5s);
    if (!f) return false;
    if (f->type == kSettings && !(f->flags & kAck)) return true;
  }
  return false;
}

// Drains frames until the connection closes or `timeout`; true if it closed.
bool drained_to_close(H2Client& c, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline)
    if (!c.next(1s) && !c.tls().read(200ms)) return true;
  return false;
}

std::string rst(uint32_t code) {
  std::string p(4, '\0');
  p[0] = static_cast<char>(code >> 24);
  p[1] = static_cast<char>(code >> 16);
  p[2] = static_cast<char>(code >> 8);
  p[3] = static_cast<char>(code);
  return p;
}

}  // namespace

TEST_CASE("raw HBONE client with a mesh certificate gets 200 (harness check)", "[e2e][bad]") {
  StdMesh s;
  EchoServer echo(s.echo1, 8080);
  s.start();
  auto c = hbone_client(s.m, s.client, s.echo1, "default", "sleep");
  REQUIRE(c->ok());
  REQUIRE(c->handshake());
  REQUIRE(c->send_headers(1, {{":method", "CONNECT"}, {":authority", s.echo1 + ":8080"}}));
  CHECK(c->response_status(1) == 200);
  // Data on the stream reaches the app and comes back.
  REQUIRE(c->send(frame(kData, 0, 1, "abc")));
  std::string got;
  for (int i = 0; i < 20 && got.size() < 3; i++) {
    auto f = c->next(5s);
    if (!f) break;
    if (f->type == kData && f->sid == 1) got += f->payload;
  }
  CHECK(got == "abc");
}

TEST_CASE("plaintext and TLS 1.2 clients on 15008 are refused", "[e2e][bad]") {
  StdMesh s;
  EchoServer echo(s.echo1, 8080);
  s.start();
  {
    Fd fd = tcp_connect(s.client, s.echo1, 15008);
    REQUIRE(fd);
    std::string req = "CONNECT " + s.echo1 + ":8080 HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(fd.get(), req.data(), req.size());
    CHECK(wait_closed(fd.get(), 10s));
  }
  {
    // HTTP/2 prior knowledge in clear text.
    Fd fd = tcp_connect(s.client, s.echo1, 15008);
    REQUIRE(fd);
    std::string pri = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(kSettings, 0, 0, "");
    send_all(fd.get(), pri.data(), pri.size());
    CHECK(wait_closed(fd.get(), 10s));
  }
  {
    TlsOpts o;
    o.cert = s.m.ca() + "/default/sleep/cert-chain.pem";
    o.key = s.m.ca() + "/default/sleep/key.pem";
    o.tls12_only = true;
    TlsClient t(s.client, s.echo1, 15008, o);
    INFO("TLS 1.2 client: " << t.error());
    CHECK(!t.ok());
  }
  {
    // TLS 1.3 without ALPN h2.
    TlsOpts o;
    o.cert = s.m.ca() + "/default/sleep/cert-chain.pem";
    o.key = s.m.ca() + "/default/sleep/key.pem";
    o.alpn = "http/1.1";
    auto c = std::make_unique<H2Client>(std::make_unique<TlsClient>(s.client, s.echo1, 15008, o));
    if (c->ok()) {
      c->handshake();
      c->send_headers(1, {{":method", "CONNECT"}, {":authority", s.echo1 + ":8080"}});
      CHECK(c->response_status(1) == -1);
    }
  }
  {
    // TLS 1.3 without a client certificate.
    TlsOpts o;
    auto c = std::make_unique<H2Client>(std::make_unique<TlsClient>(s.client, s.echo1, 15008, o));
    if (c->ok()) {
      c->handshake();
      c->send_headers(1, {{":method", "CONNECT"}, {":authority", s.echo1 + ":8080"}});
      CHECK(c->response_status(1) == -1);
    }
  }
  CHECK(s.m.node('b').alive());
  check_still_serving(s);
  CHECK(echo.accepted() == 1);  // only the final good tunnel reached the app
}

TEST_CASE("peers that reset right after the TLS handshake do not crash the node", "[e2e][bad]") {
  StdMesh s;
  EchoServer echo(s.echo1, 8080);
  s.start();
  TlsOpts o;
  o.cert = s.m.ca() + "/default/sleep/cert-chain.pem";
  o.key = s.m.ca() + "/default/sleep/key.pem";
  for (int i = 0; i < 50; i++) {
    TlsClient t(s.client, s.echo1, 15008, o);
    REQUIRE(t.ok());
    t.reset_connection();
  }
  for (int i = 0; i < 50; i++) {
    // Also after the preface and a CONNECT, so the server has frames to write.
    auto c = hbone_client(s.m, s.client, s.echo1, "default", "sleep");
    REQUIRE(c->ok());
    c->handshake();
    c->send_headers(1, {{":method", "CONNECT"}, {":authority", s.echo1 + ":8080"}});
    c->tls().reset_connection();
  }
  INFO(s.m.node('b').log());
  REQUIRE(s.m.node('b').alive());
  {
    // The app itself is fine (direct connection).
    Fd direct = tcp_connect("", s.echo1, 8080);
    REQUIRE(echo_roundtrip(direct.get(), "direct"));
  }
  uint64_t accepted = echo.accepted();
  check_still_serving(s);
  CHECK(echo.accepted() == accepted + 1);
  CHECK(s.m.node('b').alive());
}

TEST_CASE("client certificates from another CA, expired, or with a wrong SPIFFE id are refused",
          "[e2e][bad]") {
  StdMesh s;
  EchoServer echo(s.echo1, 8080);
  s.start();
  const auto& dir = s.m.dir();
  std::string foreign = dir / "foreign-ca";
  dev_ca_init(foreign);
  dev_ca_issue(foreign, "default", "sleep", dir / "foreign");
  dev_ca_issue(s.m.ca(), "default", "sleep", dir / "expired",
               {"--not-before", "1600000000", "--not-after", "1600003600"});
  dev_ca_issue(s.m.ca(), "default", "sleep", dir / "wrong-td",
               {"--spiffe-id", "spiffe://evil.example/ns/default/sa/sleep"});
  dev_ca_issue(s.m.ca(), "default", "sleep", dir / "not-workload",
               {"--spiffe-id", "spiffe://cluster.local/something/else"});
  for (std::string kind : {"foreign", "expired", "wrong-td", "not-workload"}) {
    INFO("certificate: " << kind);
    TlsOpts o;
    o.cert = dir / (kind + "/default/sleep/cert-chain.pem");
    o.key = dir / (kind + "/default/sleep/key.pem");
    REQUIRE(std::filesystem::exists(o.cert));
    auto c = std::make_unique<H2Client>(std::make_unique<TlsClient>(s.client, s.echo1, 15008, o));
    // With TLS 1.3 the client may finish its handshake before the server
    // checks the certificate; either way no stream may open.
    if (c->ok()) {
      c->handshake();
      c->send_headers(1, {{":method", "CONNECT"}, {":authority", s.echo1 + ":8080"}});
      CHECK(c->response_status(1) == -1);
    }
  }
  CHECK(echo.accepted() == 0);
  CHECK(s.m.node('b').alive());
  check_still_serving(s);
}

TEST_CASE("CONNECT with a missing or malformed :authority, or another method, gets 400",
          "[e2e][bad]") {
  StdMesh s;
  EchoServer echo(s.echo1, 8080);
  s.start();
  auto c = hbone_client(s.m, s.client, s.echo1, "default", "sleep");
  REQUIRE(c->ok());
  REQUIRE(c->handshake());
  uint32_t sid = 1;
  auto status = [&](const H& h) {
    uint32_t id = sid;
    sid += 2;
    REQUIRE(c->send_headers(id, h));
    return c->response_status(id);
  };
  // nghttp2 itself may reset a stream whose pseudo headers are malformed
  // (PROTOCOL_ERROR = -1001); both are a refusal on the stream only.
  auto refused_400 = [](int st) { return st == 400 || st == -1001; };
  CHECK(refused_400(status({{":method", "CONNECT"}})));
  for (std::string a : std::vector<std::string>{"echo:8080", s.echo1, s.echo1 + ":", s.echo1 + ":99999",
                        s.echo1 + ":0", s.echo1 + ":80a", "[" + s.echo1 + "]:8080",
                        s.echo2 + ":8080", s.m.ip(50) + ":8080", s.echo1 + ":15008"}) {
    INFO(":authority " << a);
    CHECK(refused_400(status({{":method", "CONNECT"}, {":authority", a}})));
  }
  CHECK(refused_400(status(
      {{":method", "GET"}, {":scheme", "https"}, {":authority", s.echo1 + ":8080"}, {":path", "/"}})));
  CHECK(refused_400(status(
      {{":method", "POST"}, {":scheme", "https"}, {":authority", s.echo1 + ":8080"}, {":path", "/"}})));
  // The connection survives all of that: a good CONNECT on it still works.
  CHECK(status({{":method", "CONNECT"}, {":authority", s.echo1 + ":8080"}}) == 200);
  // The app's accept runs on its own thread: wait for it.
  CHECK(wait_until([&] { return echo.accepted() == 1; }, 5s));
  CHECK(metric_sum(s.m.metrics('b'), "warren_connections_rejected_total",
                   {{"direction", "inbound"}, {"reason", "bad_request"}}) >= 10);
}

TEST_CASE("HTTP/2 rapid reset: the node stays up with bounded memory", "[e2e][bad]") {
  StdMesh s;
  EchoServer echo(s.echo1, 8080);
  s.start();
  long rss0 = s.m.node('b').rss_kb();
  REQUIRE(rss0 > 0);
  auto c = hbone_client(s.m, s.client, s.echo1, "default", "sleep");
  REQUIRE(c->ok());
  REQUIRE(c->handshake());
  REQUIRE(wait_settings(*c));
  // The same CONNECT each time; HPACK's dynamic table makes it a few bytes.
  H connect = {{":method", "CONNECT"}, {":authority", s.echo1 + ":8081"}};
  bool write_failed = false;
  uint32_t sid = 1;
  for (int batch = 0; batch < 100 && !write_failed; batch++) {
    std::string out;
    for (int i = 0; i < 200; i++, sid += 2) {
      out += frame(kHeaders, kEndHeaders, sid, c->encode(connect));
      out += frame(kRstStream, 0, sid, rst(8));  // CANCEL
    }
    write_failed = !c->send(out);
  }
  // 20000 resets far exceed nghttp2's rate limit: the server must answer
  // with GOAWAY and close (or have stopped reading).
  bool closed = write_failed || drained_to_close(*c, 20s);
  INFO("write failed " << write_failed << ", goaway " << c->saw_goaway());
  CHECK((closed || c->saw_goaway()));
  REQUIRE(s.m.node('b').alive());
  long rss1 = s.m.node('b').rss_kb();
  INFO("VmRSS before " << rss0 << " kB, after " << rss1 << " kB");
  CHECK(rss1 < rss0 + 64 * 1024);
  WARN("rapid reset: goaway " << c->saw_goaway() << ", write failed " << write_failed
                              << ", VmRSS " << rss0 << " -> " << rss1 << " kB");
  check_still_serving(s);
}

TEST_CASE("HTTP/2 CONTINUATION flood: the connection is closed, memory bounded", "[e2e][bad]") {
  StdMesh s;
  EchoServer echo(s.echo1, 8080);
  s.start();
  long rss0 = s.m.node('b').rss_kb();
  auto c = hbone_client(s.m, s.client, s.echo1, "default", "sleep");
  REQUIRE(c->ok());
  REQUIRE(c->handshake());
  REQUIRE(wait_settings(*c));
  H h = {{":method", "CONNECT"}, {":authority", s.echo1 + ":8080"}};
  for (int i = 0; i < 2000; i++) h.emplace_back("x-flood-" + std::to_string(i), "v");
  std::string block = c->encode(h);
  // A small HEADERS without END_HEADERS, then endless tiny CONTINUATIONs
  // (the block repeated: a peer that never ends its header block).
  bool write_failed = !c->send(frame(kHeaders, 0, 1, block.substr(0, 16)));
  size_t off = 16;
  for (int n = 0; n < 50000 && !write_failed; n += 500) {
    std::string out;
    for (int i = 0; i < 500; i++) {
      if (off + 16 > block.size()) off = 16;
      out += frame(kContinuation, 0, 1, block.substr(off, 16));
      off += 16;
    }
    write_failed = !c->send(out);
  }
  bool closed = write_failed || drained_to_close(*c, 20s);
  CHECK((closed || c->saw_goaway()));
  REQUIRE(s.m.node('b').alive());
  long rss1 = s.m.node('b').rss_kb();
  INFO("VmRSS before " << rss0 << " kB, after " << rss1 << " kB");
  CHECK(rss1 < rss0 + 64 * 1024);
  CHECK(echo.accepted() == 0);
  check_still_serving(s);
}

TEST_CASE("an oversized header list is refused, memory bounded", "[e2e][bad]") {
  StdMesh s;
  EchoServer echo(s.echo1, 8080);
  s.start();
  long rss0 = s.m.node('b').rss_kb();
  auto c = hbone_client(s.m, s.client, s.echo1, "default", "sleep");
  REQUIRE(c->ok());
  REQUIRE(c->handshake());
  REQUIRE(wait_settings(*c));
  // 256 KiB of header values in one HEADERS frame (the server allows 1 MiB
  // frames but at most 64 KiB of header list).
  H h = {{":method", "CONNECT"}, {":authority", s.echo1 + ":8080"}};
  for (int i = 0; i < 64; i++) h.emplace_back("x-big-" + std::to_string(i), std::string(4096, 'a' + i % 26));
  REQUIRE(c->send(frame(kHeaders, kEndHeaders, 1, c->encode(h))));
  int st = c->response_status(1, 10s);
  INFO("status " << st);
  // Refused: 431, a stream reset, or the connection closed.
  CHECK((st == 431 || st == -1 || st <= -1000));
  REQUIRE(s.m.node('b').alive());
  CHECK(s.m.node('b').rss_kb() < rss0 + 64 * 1024);
  CHECK(echo.accepted() == 0);
  check_still_serving(s);
}

TEST_CASE("SOCKS5 garbage is refused at once and a stalled client is closed after the timeout",
          "[e2e][bad]") {
  StdMesh s;
  EchoServer echo(s.echo1, 8080);
  s.start();
  auto proxy = s.m.node_ip('a');
  {
    Fd fd = tcp_connect(s.client, proxy, 15080);
    REQUIRE(fd);
    std::string junk = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(fd.get(), junk.data(), junk.size());
    CHECK(wait_closed(fd.get(), 5s));
  }
  {
    // Only username/password offered: 0xFF, then closed.
    Fd fd = tcp_connect(s.client, proxy, 15080);
    const uint8_t hello[] = {5, 1, 2};
    send_all(fd.get(), hello, 3);
    uint8_t ans[2] = {0, 0};
    if (recv_exact(fd.get(), ans, 2)) CHECK(ans[1] == 0xFF);
    CHECK(wait_closed(fd.get(), 5s));
  }
  {
    // BIND and UDP ASSOCIATE are not supported: reply 0x07.
    Fd fd = tcp_connect(s.client, proxy, 15080);
    const uint8_t hello[] = {5, 1, 0};
    uint8_t ans[2];
    REQUIRE(send_all(fd.get(), hello, 3));
    REQUIRE(recv_exact(fd.get(), ans, 2));
    const uint8_t bind_req[] = {5, 2, 0, 1, 127, 0, 0, 1, 0, 80};
    send_all(fd.get(), bind_req, sizeof bind_req);
    uint8_t rep[4] = {0, 0, 0, 0};
    if (recv_exact(fd.get(), rep, 4)) CHECK(rep[1] == 0x07);
    CHECK(wait_closed(fd.get(), 5s));
  }
  // Stalled: one says nothing, one stops half way through the request.
  Fd silent = tcp_connect(s.client, proxy, 15080);
  Fd half = tcp_connect(s.client, proxy, 15080);
  REQUIRE(silent);
  REQUIRE(half);
  const uint8_t partial[] = {5, 1, 0, 5, 1, 0, 1, 127};
  send_all(half.get(), partial, sizeof partial);
  // Meanwhile the node serves others.
  check_still_serving(s);
  CHECK(wait_closed(silent.get(), 25s));
  CHECK(wait_closed(half.get(), 25s));
  CHECK(metric_sum(s.m.metrics('a'), "warren_connections_rejected_total",
                   {{"direction", "outbound"}, {"reason", "timeout"}}) >= 2);
  CHECK(s.m.node('a').alive());
  check_still_serving(s);
}

TEST_CASE("a destination that refuses gets SOCKS 0x05", "[e2e][bad]") {
  StdMesh s;
  EchoServer echo(s.echo1, 8080);
  s.start();
  // Mesh destination: node-b answers 503, node-a replies 0x05.
  CHECK(s.m.socks(s.client, s.echo2, 8080).reply == 0x05);
  CHECK(metric_sum(s.m.metrics('b'), "warren_connections_rejected_total",
                   {{"direction", "inbound"}, {"reason", "upstream"}}) == 1);
  // Outside the mesh: plain TCP refused.
  CHECK(s.m.socks(s.client, s.outside, 9999).reply == 0x05);
  check_still_serving(s);
}

namespace {
// A listening socket whose accept queue is full, so new SYNs go unanswered.
struct Blackhole {
  Fd listener;
  std::vector<Fd> fillers;
  Blackhole(const std::string& ip, uint16_t port) : listener(tcp_listen(ip, port, 0)) {
    for (int i = 0; i < 16; i++) {
      Fd f(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(port);
      inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
      ::connect(f.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
      pollfd p{f.get(), POLLOUT, 0};
      bool connected = ::poll(&p, 1, 300) == 1;
      fillers.push_back(std::move(f));
      if (!connected) return;  // the queue is full
    }
    throw std::runtime_error("could not fill the accept queue");
  }
};
}  // namespace

TEST_CASE("a destination that never answers times out with SOCKS 0x05", "[e2e][bad]") {
  StdMesh s;
  Blackhole hole(s.echo1, 8080);
  EchoServer echo2(s.echo2, 8080);
  s.start({.connect_timeout_ms = 500}, {.connect_timeout_ms = 500});
  // Mesh: node-b's connect to the app times out, 503 back to node-a.
  auto r = s.m.socks(s.client, s.echo1, 8080);
  CHECK(r.reply == 0x05);
  // Outside the mesh: node-a's own plain connect times out.
  Blackhole hole2(s.outside, 9000);
  auto p = s.m.socks(s.client, s.outside, 9000);
  // --connect-timeout-ms applies to plain upstream connects too: the same
  // 0x05 as the mesh path, not the SOCKS handshake timeout's 0x01.
  CHECK(p.reply == 0x05);
  CHECK(s.m.node('a').alive());
  CHECK(s.m.node('b').alive());
  check_still_serving(s, s.echo2);
}

TEST_CASE("waypoint: malformed CONNECTs get 400 and a rapid reset flood leaves it serving", "[e2e][bad][waypoint]") {
  WaypointMesh w;
  HttpBackend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  long rss0 = w.wp->rss_kb();
  auto c = hbone_client(w.s.m, w.s.client, w.waypoint_ip, "default", "sleep");
  REQUIRE(c->ok());
  REQUIRE(c->handshake());
  REQUIRE(wait_settings(*c));
  // :path on CONNECT, a target the waypoint does not front, a service port that does not exist.
  CHECK(c->send_headers(1, {{":method", "CONNECT"}, {":authority", w.s.vip + ":80"}, {":path", "/"}}));
  CHECK(c->response_status(1) == -1001);  // nghttp2 itself resets it: PROTOCOL_ERROR
  CHECK(c->send_headers(3, {{":method", "CONNECT"}, {":authority", w.s.legacy + ":80"}}));
  CHECK(c->response_status(3) == 400);
  CHECK(c->send_headers(5, {{":method", "CONNECT"}, {":authority", w.s.vip + ":81"}}));
  CHECK(c->response_status(5) == 400);
  H connect = {{":method", "CONNECT"}, {":authority", w.s.vip + ":80"}};
  bool write_failed = false;
  uint32_t sid = 7;
  for (int batch = 0; batch < 100 && !write_failed; batch++) {
    std::string out;
    for (int i = 0; i < 200; i++, sid += 2) {
      out += frame(kHeaders, kEndHeaders, sid, c->encode(connect));
      out += frame(kRstStream, 0, sid, rst(8));
    }
    write_failed = !c->send(out);
  }
  bool closed = write_failed || drained_to_close(*c, 20s);
  CHECK((closed || c->saw_goaway()));
  REQUIRE(w.wp->alive());
  long rss1 = w.wp->rss_kb();
  INFO("VmRSS before " << rss0 << " kB, after " << rss1 << " kB");
  CHECK(rss1 < rss0 + 64 * 1024);
  auto h = w.connect();
  CHECK(h.request("GET", "/still").status == 200);
}
