// warren-node pair on loopback: tunnelled traffic, pooling, metrics, access
// log and the admin endpoints.
#include <arpa/inet.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include "fixture.h"

using namespace warren::e2e;

TEST_CASE("tunnel to a workload IP through the node pair", "[e2e]") {
  StdMesh s;
  EchoServer echo(s.echo1, 8080);
  s.start();
  auto r = s.m.socks(s.client, s.echo1, 8080);
  REQUIRE(r.reply == 0);
  CHECK(echo_roundtrip(r.fd.get(), "hello through HBONE\n"));
  CHECK(echo.accepted() == 1);
  // It really went over HBONE: node-a dialled a pooled connection, node-b
  // reported an inbound mTLS connection.
  auto ma = s.m.metrics('a');
  CHECK(metric_sum(ma, "warren_hbone_pool_connects_total") >= 1);
  auto mb = s.m.metrics('b');
  CHECK(metric_sum(mb, "istio_tcp_connections_opened_total",
                   {{"reporter", "destination"}, {"connection_security_policy", "mutual_tls"}}) ==
        1);
}

TEST_CASE("tunnel to a service VIP round-robins over its endpoints", "[e2e]") {
  StdMesh s;
  EchoServer e1(s.echo1, 8080), e2(s.echo2, 8080);
  s.start();
  for (int i = 0; i < 6; i++) {
    auto r = s.m.socks(s.client, s.vip, 80);
    REQUIRE(r.reply == 0);
    REQUIRE(echo_roundtrip(r.fd.get(), "ping " + std::to_string(i)));
  }
  CHECK(e1.accepted() == 3);
  CHECK(e2.accepted() == 3);
  // A service port that does not exist is refused by node-a.
  auto bad = s.m.socks(s.client, s.vip, 81);
  CHECK(bad.reply != 0);
  auto ma = s.m.metrics('a');
  CHECK(metric_sum(ma, "istio_tcp_connections_opened_total",
                   {{"reporter", "source"},
                    {"destination_service", "echo.default.svc.cluster.local"},
                    {"response_flags", "-"}}) == 6);
}

TEST_CASE("8 MiB both ways with half-close and a server that speaks first", "[e2e]") {
  StdMesh s;
  const std::string banner = "220 echo ready\r\n";
  EchoServer echo(s.echo1, 8080, banner);
  s.start();
  auto r = s.m.socks(s.client, s.echo1, 8080);
  REQUIRE(r.reply == 0);
  int fd = r.fd.get();
  // The server speaks first: its banner arrives before we send anything.
  std::string got(banner.size(), '\0');
  REQUIRE(recv_exact(fd, got.data(), got.size()));
  CHECK(got == banner);

  std::string data(8u << 20, '\0');
  std::mt19937_64 rng(42);
  for (size_t i = 0; i + 8 <= data.size(); i += 8) {
    uint64_t v = rng();
    std::memcpy(&data[i], &v, 8);
  }
  std::thread writer([&] {
    send_all(fd, data.data(), data.size());
    ::shutdown(fd, SHUT_WR);
  });
  auto back = recv_to_eof(fd, 60s);
  writer.join();
  REQUIRE(back.has_value());
  CHECK(back->size() == data.size());
  CHECK(*back == data);

  // Byte counters on both reporters once the connection is closed.
  r.fd.reset();
  Labels src = {{"reporter", "source"}, {"destination_workload", "echo-v1"}};
  REQUIRE(wait_until(
      [&] { return metric_sum(s.m.metrics('a'), "istio_tcp_connections_closed_total", src) == 1; },
      10s));
  auto ma = s.m.metrics('a');
  CHECK(metric_sum(ma, "istio_tcp_received_bytes_total", src) == double(data.size()));
  CHECK(metric_sum(ma, "istio_tcp_sent_bytes_total", src) == double(data.size() + banner.size()));
  Labels dst = {{"reporter", "destination"}, {"destination_workload", "echo-v1"}};
  REQUIRE(wait_until(
      [&] { return metric_sum(s.m.metrics('b'), "istio_tcp_connections_closed_total", dst) == 1; },
      10s));
  auto mb = s.m.metrics('b');
  CHECK(metric_sum(mb, "istio_tcp_received_bytes_total", dst) == double(data.size()));
  CHECK(metric_sum(mb, "istio_tcp_sent_bytes_total", dst) == double(data.size() + banner.size()));
}

TEST_CASE("destinations outside the mesh get plain TCP", "[e2e]") {
  StdMesh s;
  EchoServer legacy(s.legacy, 9000), outside(s.outside, 9001);
  s.start();
  for (auto [ip, port] : {std::pair{s.legacy, 9000}, std::pair{s.outside, 9001}}) {
    INFO("destination " << ip << ":" << port);
    auto r = s.m.socks(s.client, ip, static_cast<uint16_t>(port));
    REQUIRE(r.reply == 0);
    CHECK(echo_roundtrip(r.fd.get(), "plain"));
  }
  CHECK(legacy.accepted() == 1);
  CHECK(outside.accepted() == 1);
  // Nothing went through HBONE.
  CHECK(metric_sum(s.m.metrics('a'), "warren_hbone_pool_connects_total") == 0);
  CHECK(metric_sum(s.m.metrics('b'), "istio_tcp_connections_opened_total") == 0);
  auto ma = s.m.metrics('a');
  CHECK(metric_sum(ma, "istio_tcp_connections_opened_total",
                   {{"reporter", "source"}, {"connection_security_policy", "unknown"}}) == 2);
}

// Established TCP connections from anywhere to ip:port (IPv4, /proc/net/tcp).
static int established_to(const std::string& ip, uint16_t port) {
  in_addr a{};
  inet_pton(AF_INET, ip.c_str(), &a);
  char want[32];
  std::snprintf(want, sizeof want, "%08X:%04X", a.s_addr, port);
  std::ifstream f("/proc/net/tcp");
  std::string line;
  std::getline(f, line);
  int n = 0;
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string sl, local, remote, st;
    in >> sl >> local >> remote >> st;
    if (remote == want && st == "01") n++;
  }
  return n;
}

TEST_CASE("1000 concurrent tunnels between one pair of identities use at most 10 TLS connections",
          "[e2e]") {
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < 8192 && rl.rlim_max >= 8192) {
    rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, 65536);
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  REQUIRE(rl.rlim_cur >= 4096);
  StdMesh s;
  EchoServer echo(s.echo1, 8080);
  s.start();
  std::vector<Fd> fds;
  for (int i = 0; i < 1000; i++) {
    auto r = s.m.socks(s.client, s.echo1, 8080);
    INFO("connection " << i);
    REQUIRE(r.reply == 0);
    fds.push_back(std::move(r.fd));
  }
  // All 1000 are open at once and carry data.
  for (size_t i = 0; i < fds.size(); i += 97) REQUIRE(echo_roundtrip(fds[i].get(), "x"));
  REQUIRE(wait_until([&] { return echo.open_connections() == 1000; }, 20s));
  auto ma = s.m.metrics('a');
  CHECK(metric_sum(ma, "warren_hbone_pool_connects_total") <= 10);
  CHECK(metric_sum(ma, "warren_hbone_pool_connections") <= 10);
  CHECK(metric_sum(ma, "warren_hbone_pool_streams") == 1000);
  int tcp = established_to(s.echo1, 15008);
  CHECK(tcp >= 1);
  CHECK(tcp <= 10);
}

TEST_CASE("metrics carry Istio's labels and pass promtool", "[e2e]") {
  StdMesh s;
  EchoServer echo(s.echo1, 8080);
  s.start();
  {
    auto r = s.m.socks(s.client, s.vip, 80);
    REQUIRE(r.reply == 0);
    std::string up(1000, 'u');
    REQUIRE(send_all(r.fd.get(), up.data(), up.size()));
    std::string back(1000, '\0');
    REQUIRE(recv_exact(r.fd.get(), back.data(), back.size()));
  }
  Labels common = {{"source_workload", "sleep"},
                   {"source_workload_namespace", "default"},
                   {"source_principal", "spiffe://cluster.local/ns/default/sa/sleep"},
                   {"destination_principal", "spiffe://cluster.local/ns/default/sa/echo"},
                   {"connection_security_policy", "mutual_tls"},
                   {"response_flags", "-"},
                   {"source_app", "sleep"},
                   {"destination_app", "echo"},
                   {"request_protocol", "tcp"}};
  for (char n : {'a', 'b'}) {
    Labels l = common;
    l["reporter"] = n == 'a' ? "source" : "destination";
    INFO("node-" << n);
    REQUIRE(wait_until(
        [&] { return metric_sum(s.m.metrics(n), "istio_tcp_connections_closed_total", l) == 1; },
        10s));
    auto m = s.m.metrics(n);
    CHECK(metric_sum(m, "istio_tcp_connections_opened_total", l) == 1);
    CHECK(metric_sum(m, "istio_tcp_received_bytes_total", l) == 1000);
    CHECK(metric_sum(m, "istio_tcp_sent_bytes_total", l) == 1000);
    // Exactly one destination workload was picked and named.
    double v1 = metric_sum(m, "istio_tcp_connections_opened_total",
                           {{"destination_workload", "echo-v1"}});
    double v2 = metric_sum(m, "istio_tcp_connections_opened_total",
                           {{"destination_workload", "echo-v2"}});
    CHECK(v1 + v2 == 1);
  }
  // node-a (source reporter) knows the service it resolved.
  auto ma = s.m.metrics('a');
  CHECK(metric_sum(ma, "istio_tcp_connections_opened_total",
                   {{"reporter", "source"},
                    {"destination_service", "echo.default.svc.cluster.local"},
                    {"destination_service_name", "echo"},
                    {"destination_service_namespace", "default"}}) == 1);

  for (char n : {'a', 'b'}) {
    auto text = s.m.metrics_text(n);
    REQUIRE(!text.empty());
    auto r = run({"/usr/bin/promtool", "check", "metrics"}, text);
    INFO("promtool on node-" << n << ":\n" << r.output);
    CHECK(r.exit_code == 0);
  }
}

TEST_CASE("access log has one JSON object per closed connection", "[e2e]") {
  StdMesh s;
  EchoServer echo(s.echo1, 8080);
  s.start();
  {
    auto r = s.m.socks(s.client, s.echo1, 8080);
    REQUIRE(r.reply == 0);
    REQUIRE(echo_roundtrip(r.fd.get(), "0123456789"));
  }
  auto entries = [&](char n) {
    std::vector<nlohmann::json> out;
    std::istringstream in(read_file(s.m.access_log(n)));
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      auto j = nlohmann::json::parse(line, nullptr, false);
      INFO("line: " << line);
      CHECK(!j.is_discarded());
      if (!j.is_discarded()) out.push_back(j);
    }
    return out;
  };
  REQUIRE(wait_until([&] { return entries('a').size() == 1 && entries('b').size() == 1; }, 10s));
  auto a = entries('a')[0];
  INFO("node-a entry: " << a.dump());
  CHECK(a["reporter"] == "source");
  CHECK(a["src_identity"] == "spiffe://cluster.local/ns/default/sa/sleep");
  CHECK(a["dst_identity"] == "spiffe://cluster.local/ns/default/sa/echo");
  CHECK(a["dst"] == s.echo1 + ":8080");
  CHECK(a["src"].get<std::string>().rfind(s.client + ":", 0) == 0);
  CHECK(a["bytes_sent"] == 10);
  CHECK(a["bytes_received"] == 10);
  CHECK(a.contains("duration_ms"));
  CHECK(a.contains("error"));
  auto b = entries('b')[0];
  INFO("node-b entry: " << b.dump());
  CHECK(b["reporter"] == "destination");
  CHECK(b["src_identity"] == "spiffe://cluster.local/ns/default/sa/sleep");
  CHECK(b["dst_identity"] == "spiffe://cluster.local/ns/default/sa/echo");
  CHECK(b["dst"] == s.echo1 + ":8080");
  CHECK(b["bytes_sent"] == 10);
  CHECK(b["bytes_received"] == 10);
}

TEST_CASE("admin: config_dump, logging, quitquitquit", "[e2e]") {
  StdMesh s;
  s.start({.log_level = "info"}, {});
  auto ip = s.m.node_ip('a');
  auto dump = http_get(ip, 15000, "/config_dump");
  REQUIRE(dump.status == 200);
  auto j = nlohmann::json::parse(dump.body, nullptr, false);
  REQUIRE(!j.is_discarded());
  CHECK(j["config"]["node"]["name"] == "node-a");
  CHECK(j["config"]["workloads"].size() == 4);
  CHECK(j["config"]["services"].size() == 1);
  CHECK(j["version"].get<long>() >= 1);
  CHECK(j["certificates"].size() >= 1);

  CHECK(http_get(ip, 15000, "/healthz/ready").status == 200);
  CHECK(http_get(ip, 15021, "/healthz/ready").status == 200);

  auto lg = http_get(ip, 15000, "/logging");
  CHECK(lg.status == 200);
  CHECK(lg.body.find("info") != std::string::npos);
  auto set = http_request("POST", ip, 15000, "/logging?level=debug");
  CHECK(set.status == 200);
  CHECK(set.body.find("debug") != std::string::npos);
  CHECK(http_get(ip, 15000, "/logging").body.find("debug") != std::string::npos);
  CHECK(http_request("POST", ip, 15000, "/logging?level=loud").status == 400);
  CHECK(http_get(ip, 15000, "/logging").body.find("debug") != std::string::npos);

  auto q = http_request("POST", ip, 15000, "/quitquitquit");
  CHECK(q.status == 200);
  REQUIRE(s.m.node('a').wait_exit(10s));
  CHECK(s.m.node('a').exit_code() == 0);
  // node-b is unaffected.
  CHECK(s.m.node('b').alive());
  CHECK(http_get(s.m.node_ip('b'), 15021, "/healthz/ready").status == 200);
}
