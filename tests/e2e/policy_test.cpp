// L4 policy end to end, config reloads and certificate rotation.
#include <catch2/catch.hpp>
#include <csignal>

#include "fixture.h"

using namespace warren::e2e;

namespace {

nlohmann::json policy(const std::string& name, const std::string& action, nlohmann::json rules,
                      nlohmann::json match_labels = {{"app", "echo"}}) {
  nlohmann::json spec = {{"action", action}, {"rules", std::move(rules)}};
  if (!match_labels.is_null()) spec["selector"] = {{"matchLabels", std::move(match_labels)}};
  return {{"apiVersion", "security.istio.io/v1"},
          {"kind", "AuthorizationPolicy"},
          {"metadata", {{"name", name}, {"namespace", "default"}}},
          {"spec", spec}};
}

}  // namespace

TEST_CASE("a DENY policy on the destination refuses with SOCKS 0x02", "[e2e][policy]") {
  StdMesh s;
  EchoServer echo(s.echo1, 8080);
  s.m.add_policy(policy("deny-sleep", "DENY",
                        {{{"from", {{{"source", {{"principals", {"cluster.local/ns/default/sa/sleep"}}}}}}}}}));
  s.start();
  auto r = s.m.socks(s.client, s.echo1, 8080);
  INFO("node-a metrics:\n" << s.m.metrics_text('a'));
  CHECK(r.reply == 0x02);
  CHECK(echo.accepted() == 0);
  CHECK(metric_sum(s.m.metrics('b'), "istio_tcp_connections_opened_total",
                   {{"reporter", "destination"}, {"response_flags", "DENY"}}) == 1);
  CHECK(metric_sum(s.m.metrics('a'), "istio_tcp_connections_opened_total",
                   {{"reporter", "source"}, {"response_flags", "DENY"}}) == 1);
  CHECK(metric_sum(s.m.metrics('b'), "warren_connections_rejected_total",
                   {{"direction", "inbound"}, {"reason", "policy"}}) == 1);
}

TEST_CASE("an ALLOW policy with principals admits only those principals", "[e2e][policy]") {
  StdMesh s;
  // A second client identity on node-a.
  s.m.add_workload({"intruder-1", "intruder", "default", "intruder", "node-a", s.m.ip(11),
                    "HBONE", {{"app", "intruder"}}});
  EchoServer echo(s.echo1, 8080);
  s.m.add_policy(policy("allow-sleep", "ALLOW",
                        {{{"from", {{{"source", {{"principals", {"cluster.local/ns/default/sa/sleep"}}}}}}}}}));
  s.start();
  auto ok = s.m.socks(s.client, s.echo1, 8080);
  REQUIRE(ok.reply == 0);
  CHECK(echo_roundtrip(ok.fd.get(), "allowed"));
  auto no = s.m.socks(s.m.ip(11), s.echo1, 8080);
  CHECK(no.reply == 0x02);
  CHECK(echo.accepted() == 1);
}

TEST_CASE("a policy edit applies to new connections and closes open ones no longer allowed",
          "[e2e][policy]") {
  StdMesh s;
  EchoServer echo1(s.echo1, 8080), echo2(s.echo2, 8080);
  s.start();
  auto open1 = s.m.socks(s.client, s.echo1, 8080);
  auto open2 = s.m.socks(s.client, s.echo2, 8080);
  REQUIRE(open1.reply == 0);
  REQUIRE(open2.reply == 0);
  REQUIRE(echo_roundtrip(open1.fd.get(), "before"));
  REQUIRE(echo_roundtrip(open2.fd.get(), "before"));

  // Deny traffic to echo-v1 only.
  s.m.add_policy(policy("deny-v1", "DENY", {nlohmann::json::object()},
                        {{"app", "echo"}, {"version", "v1"}}));
  s.m.update_configs();

  // The open tunnel to v1 is closed; the one to v2 still works.
  CHECK(wait_closed(open1.fd.get(), 10s));
  CHECK(echo_roundtrip(open2.fd.get(), "after"));
  CHECK(s.m.socks(s.client, s.echo1, 8080).reply == 0x02);
  auto fresh2 = s.m.socks(s.client, s.echo2, 8080);
  REQUIRE(fresh2.reply == 0);
  CHECK(echo_roundtrip(fresh2.fd.get(), "new"));
  CHECK(metric_sum(s.m.metrics('b'), "warren_connections_rejected_total",
                   {{"reason", "policy_recheck"}}) == 1);

  // Removing the policy lets new connections through again.
  s.m.clear_policies();
  s.m.update_configs();
  auto again = s.m.socks(s.client, s.echo1, 8080);
  REQUIRE(again.reply == 0);
  CHECK(echo_roundtrip(again.fd.get(), "again"));
}

TEST_CASE("a bad config file is rejected with every error and the old one keeps serving",
          "[e2e][policy]") {
  StdMesh s;
  EchoServer echo(s.echo1, 8080);
  s.start();
  long va = s.m.config_version('a'), vb = s.m.config_version('b');
  REQUIRE(va >= 1);
  for (char n : {'a', 'b'}) {
    auto j = s.m.config_for(n);
    j["services"][0]["ports"][0]["port"] = "80a";
    j["workloads"][1]["ips"][0] = "10.0.0.x";
    j["policies"] = {policy("bad", "ALLOW", {{{"from", {{{"source", {{"principal", {"x"}}}}}}}}})};
    s.m.write_raw_config(n, j.dump(2));
  }
  for (char n : {'a', 'b'}) {
    INFO("node-" << n);
    REQUIRE(wait_until(
        [&] {
          return metric_sum(s.m.metrics(n), "warren_config_reloads_total",
                            {{"result", "failure"}}) >= 1;
        },
        10s));
    auto log = s.m.node(n).log();
    INFO(log);
    CHECK(log.find("/services/0/ports/0/port: ") != std::string::npos);
    CHECK(log.find("/workloads/1/ips/0: ") != std::string::npos);
    CHECK(log.find("/policies/0/spec/rules/0/from/0/source") != std::string::npos);
  }
  CHECK(s.m.config_version('a') == va);
  CHECK(s.m.config_version('b') == vb);
  auto r = s.m.socks(s.client, s.vip, 80);
  REQUIRE(r.reply == 0);
  CHECK(echo_roundtrip(r.fd.get(), "still serving"));

  // Garbage that is not even JSON is rejected as well.
  s.m.write_raw_config('a', "{ not json");
  REQUIRE(wait_until(
      [&] {
        return metric_sum(s.m.metrics('a'), "warren_config_reloads_total",
                          {{"result", "failure"}}) >= 2;
      },
      10s));
  CHECK(s.m.node('a').alive());
  auto r2 = s.m.socks(s.client, s.echo1, 8080);
  REQUIRE(r2.reply == 0);
  CHECK(echo_roundtrip(r2.fd.get(), "still"));

  // A good file is picked up again.
  s.m.update_configs();
}

TEST_CASE("SIGHUP reloads the config", "[e2e][policy]") {
  StdMesh s;
  EchoServer echo(s.echo1, 8080);
  s.start();
  long v = s.m.config_version('b');
  s.m.node('b').signal(SIGHUP);
  REQUIRE(wait_until([&] { return s.m.config_version('b') > v; }, 10s));
  auto r = s.m.socks(s.client, s.echo1, 8080);
  REQUIRE(r.reply == 0);
  CHECK(echo_roundtrip(r.fd.get(), "after hup"));
}

TEST_CASE("certificate rotation keeps open tunnels and new connections work", "[e2e][policy]") {
  StdMesh s;
  EchoServer echo(s.echo1, 8080);
  s.start();
  auto open = s.m.socks(s.client, s.echo1, 8080);
  REQUIRE(open.reply == 0);
  REQUIRE(echo_roundtrip(open.fd.get(), "before rotation"));
  auto not_after = [&](char n) {
    auto j = nlohmann::json::parse(http_get(s.m.node_ip(n), 15000, "/config_dump").body, nullptr,
                                   false);
    std::map<std::string, long> out;
    if (j.is_discarded()) return out;
    for (auto& c : j["certificates"]) out[c["identity"]] = c["notAfter"].get<long>();
    return out;
  };
  auto before_a = not_after('a'), before_b = not_after('b');
  REQUIRE(!before_a.empty());
  // Re-issue every certificate to the same files with a different lifetime
  // so that the new ones are visibly different.
  auto r = run({bin("/cli/warrenctl"), "dev-ca", "issue-config", "--ca", s.m.ca(), "--config",
                s.m.config_path('a'), "--hours", "48"});
  REQUIRE(r.exit_code == 0);
  for (char n : {'a', 'b'}) {
    INFO("node-" << n);
    auto before = n == 'a' ? before_a : before_b;
    CHECK(wait_until(
        [&] {
          auto now = not_after(n);
          const std::string sleep_id = "spiffe://cluster.local/ns/default/sa/sleep";
          return now.count(sleep_id) && now[sleep_id] > before[sleep_id];
        },
        15s, 200ms));
  }
  CHECK(echo_roundtrip(open.fd.get(), "after rotation"));
  auto fresh1 = s.m.socks(s.client, s.echo1, 8080);
  REQUIRE(fresh1.reply == 0);
  CHECK(echo_roundtrip(fresh1.fd.get(), "new after rotation"));
  CHECK(echo_roundtrip(open.fd.get(), "still open"));
  // The open tunnel survived: node-b closed nothing.
  CHECK(metric_sum(s.m.metrics('b'), "istio_tcp_connections_closed_total",
                   {{"destination_workload", "echo-v1"}}) == 0);
}
