// The pure outbound and inbound decisions, without sockets (STYLE.md §6).
#include <catch2/catch.hpp>

#include "inbound.h"
#include "outbound_plan.h"

using namespace warren;
using namespace warren::node;
using Kind = OutboundPlan::Kind;

namespace {

config::SnapshotPtr snap(const std::string& extra_policies = "[]") {
  auto doc = nlohmann::json::parse(R"({
    "node": {"name": "node-a", "address": "127.0.0.2"},
    "certificates": {"rootCert": "root.pem", "dir": "certs"},
    "workloads": [
      {"uid": "c", "name": "client", "namespace": "shop", "serviceAccount": "sleep",
       "node": "node-a", "ips": ["127.0.10.1"]},
      {"uid": "r", "name": "remote-client", "namespace": "shop", "serviceAccount": "sleep",
       "node": "node-b", "ips": ["127.0.10.9"]},
      {"uid": "legacy", "name": "legacy", "namespace": "shop", "node": "node-a",
       "ips": ["127.0.10.2"], "protocol": "NONE"},
      {"uid": "e1", "name": "echo-1", "namespace": "shop", "serviceAccount": "echo",
       "node": "node-a", "ips": ["127.0.20.1"], "labels": {"app": "echo"}},
      {"uid": "e2", "name": "echo-2", "namespace": "shop", "serviceAccount": "echo",
       "node": "node-b", "ips": ["127.0.20.2"], "labels": {"app": "echo"}},
      {"uid": "db", "name": "db", "namespace": "data", "serviceAccount": "db",
       "node": "node-b", "ips": ["127.0.30.1"], "protocol": "NONE"}],
    "services": [
      {"name": "echo", "namespace": "shop", "vips": ["10.96.0.10"],
       "ports": [{"port": 80, "targetPort": 8080}], "endpoints": ["e1", "e2"]},
      {"name": "empty", "namespace": "shop", "vips": ["10.96.0.11"],
       "ports": [{"port": 80}], "endpoints": []},
      {"name": "db", "namespace": "data", "vips": ["10.96.0.12"],
       "ports": [{"port": 5432}], "endpoints": ["db"]}]
  })");
  doc["policies"] = nlohmann::json::parse(extra_policies);
  auto r = config::parse(doc);
  if (!r.ok()) FAIL(r.error().message);
  return r.value();
}

OutboundTarget ipport(const char* addr) {
  auto a = SockAddr::parse(addr);
  return OutboundTarget{a, "", a->port};
}
IpAddr client() { return *IpAddr::parse("127.0.10.1"); }

}  // namespace

TEST_CASE("outbound: a workload IP goes over HBONE to <ip>:15008", "[plan]") {
  auto s = snap();
  auto p = plan_outbound(*s, client(), ipport("127.0.20.2:8080"), 0);
  REQUIRE(p.kind == Kind::kHbone);
  CHECK(p.connect_to.to_string() == "127.0.20.2:15008");
  CHECK(p.authority.to_string() == "127.0.20.2:8080");
  CHECK(p.dst->name == "echo-2");
  CHECK(p.src->name == "client");
  CHECK(p.svc == nullptr);
}

TEST_CASE("outbound: a service VIP maps the port and round-robins endpoints", "[plan]") {
  auto s = snap();
  std::set<std::string> seen;
  for (uint64_t rr = 0; rr < 4; rr++) {
    auto p = plan_outbound(*s, client(), ipport("10.96.0.10:80"), rr);
    REQUIRE(p.kind == Kind::kHbone);
    CHECK(p.authority.port == 8080);
    CHECK(p.svc->name == "echo");
    seen.insert(p.dst->name.str());
  }
  CHECK(seen == std::set<std::string>{"echo-1", "echo-2"});
}

TEST_CASE("outbound: a service hostname resolves like its VIP", "[plan]") {
  auto s = snap();
  OutboundTarget t{std::nullopt, "echo.shop.svc.cluster.local", 80};
  auto p = plan_outbound(*s, client(), t, 0);
  REQUIRE(p.kind == Kind::kHbone);
  CHECK(p.authority.port == 8080);
}

TEST_CASE("outbound: rejections carry a SOCKS reply code and a reason", "[plan]") {
  auto s = snap();
  SECTION("unknown client") {
    auto p = plan_outbound(*s, *IpAddr::parse("127.0.99.1"), ipport("127.0.20.1:80"), 0);
    CHECK(p.kind == Kind::kReject);
    CHECK(p.socks_rep == 2);
    CHECK_THAT(p.reason, Catch::Contains("not a known workload"));
  }
  SECTION("client on another node") {
    auto p = plan_outbound(*s, *IpAddr::parse("127.0.10.9"), ipport("127.0.20.1:80"), 0);
    CHECK(p.kind == Kind::kReject);
    CHECK_THAT(p.reason, Catch::Contains("node-b"));
  }
  SECTION("service port not exposed") {
    auto p = plan_outbound(*s, client(), ipport("10.96.0.10:81"), 0);
    CHECK(p.kind == Kind::kReject);
    CHECK(p.socks_rep == 5);
  }
  SECTION("service without endpoints") {
    auto p = plan_outbound(*s, client(), ipport("10.96.0.11:80"), 0);
    CHECK(p.kind == Kind::kReject);
    CHECK_THAT(p.reason, Catch::Contains("no endpoints"));
  }
  SECTION("unknown hostname") {
    OutboundTarget t{std::nullopt, "example.com", 443};
    auto p = plan_outbound(*s, client(), t, 0);
    CHECK(p.kind == Kind::kReject);
    CHECK(p.socks_rep == 4);
  }
}

TEST_CASE("outbound: destinations outside the mesh get plain TCP", "[plan]") {
  auto s = snap();
  SECTION("unknown IP") {
    auto p = plan_outbound(*s, client(), ipport("127.0.50.1:9000"), 0);
    CHECK(p.kind == Kind::kPassthrough);
    CHECK(p.connect_to.to_string() == "127.0.50.1:9000");
  }
  SECTION("protocol NONE workload behind a service") {
    auto p = plan_outbound(*s, client(), ipport("10.96.0.12:5432"), 0);
    CHECK(p.kind == Kind::kPassthrough);
    CHECK(p.connect_to.to_string() == "127.0.30.1:5432");
  }
  SECTION("client not in the mesh") {
    auto p = plan_outbound(*s, *IpAddr::parse("127.0.10.2"), ipport("127.0.20.1:8080"), 0);
    CHECK(p.kind == Kind::kPassthrough);
  }
}

namespace {
InboundRequest connect_req(const std::string& authority) {
  InboundRequest r;
  r.method = "CONNECT";
  r.authority = authority;
  r.local = *SockAddr::parse("127.0.20.1:15008");
  r.peer = *SockAddr::parse("127.0.10.1:40000");
  r.peer_identity = "spiffe://cluster.local/ns/shop/sa/sleep";
  return r;
}
}  // namespace

TEST_CASE("inbound: a valid CONNECT to a local workload is allowed", "[plan]") {
  auto s = snap();
  auto d = decide_inbound(*s, connect_req("127.0.20.1:8080"));
  CHECK(d.status == 200);
  CHECK(d.upstream.to_string() == "127.0.20.1:8080");
  CHECK(d.dst->name == "echo-1");
  CHECK(d.facts.src_identity == "spiffe://cluster.local/ns/shop/sa/sleep");
}

TEST_CASE("inbound: malformed requests get 400", "[plan]") {
  auto s = snap();
  auto expect400 = [&](InboundRequest r, const char* why) {
    auto d = decide_inbound(*s, r);
    CHECK(d.status == 400);
    CHECK_THAT(d.reason, Catch::Contains(why));
  };
  auto r = connect_req("127.0.20.1:8080");
  r.method = "GET";
  expect400(r, "not CONNECT");
  expect400(connect_req(""), "missing :authority");
  expect400(connect_req("echo:80"), "malformed");
  expect400(connect_req("127.0.20.1"), "malformed");
  expect400(connect_req("127.0.20.1:99999"), "malformed");
  expect400(connect_req("127.0.20.1:0"), "port 0");
  expect400(connect_req("127.0.20.2:8080"), "does not match");
  expect400(connect_req("127.0.20.1:15008"), "HBONE port");
  r = connect_req("127.0.20.1:8080");
  r.has_path = true;
  r.path = "/";
  expect400(r, ":path");
  r = connect_req("127.0.20.1:8080");
  r.protocol = "websocket";
  expect400(r, "extended CONNECT");
}

TEST_CASE("inbound: a workload of another node is not served here", "[plan]") {
  auto s = snap();
  auto r = connect_req("127.0.20.2:8080");
  r.local = *SockAddr::parse("127.0.20.2:15008");
  auto d = decide_inbound(*s, r);
  CHECK(d.status == 400);
  CHECK_THAT(d.reason, Catch::Contains("no local workload"));
}

TEST_CASE("inbound: policy denies with 401 and names the policy", "[plan]") {
  auto s = snap(R"([{"metadata": {"name": "deny-sleep", "namespace": "shop"},
                     "spec": {"selector": {"matchLabels": {"app": "echo"}}, "action": "DENY",
                              "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/sleep"]}}]}]}}])");
  auto d = decide_inbound(*s, connect_req("127.0.20.1:8080"));
  CHECK(d.status == 401);
  CHECK(d.reason == "shop/deny-sleep");
}

namespace {
// The snapshot above with a waypoint "wp" in namespace shop: its pod on
// node-b, service echo and workload echo-1 behind it.
config::SnapshotPtr waypoint_snap(const std::string& policies = "[]", bool with_pod = true) {
  auto doc = config::to_json(*snap(policies));
  if (with_pod)
    doc["workloads"].push_back({{"uid", "wp-1"}, {"name", "wp"}, {"namespace", "shop"},
                                {"serviceAccount", "wp"}, {"node", "node-b"},
                                {"ips", {"127.0.40.1"}}, {"gateway", "wp"}});
  for (auto& s : doc["services"])
    if (s["name"] == "echo") s["waypoint"] = "wp";
  for (auto& w : doc["workloads"])
    if (w["uid"] == "e1") w["waypoint"] = "wp";
  auto r = config::parse(doc);
  if (!r.ok()) FAIL(r.error().message);
  return r.value();
}
}  // namespace

TEST_CASE("outbound: a destination behind a waypoint goes to the waypoint with the original authority", "[plan]") {
  auto s = waypoint_snap();
  auto p = plan_outbound(*s, client(), ipport("10.96.0.10:80"), 0);
  REQUIRE(p.kind == Kind::kHbone);
  CHECK(p.waypoint);
  CHECK(p.dst->name == "wp");
  CHECK(p.connect_to.to_string() == "127.0.40.1:15008");
  CHECK(p.authority.to_string() == "10.96.0.10:80");  // the VIP and service port, not an endpoint
  CHECK(p.svc->name == "echo");
  // A pod behind the waypoint, addressed directly: the pod IP is the authority.
  p = plan_outbound(*s, client(), ipport("127.0.20.1:8080"), 0);
  REQUIRE(p.kind == Kind::kHbone);
  CHECK(p.waypoint);
  CHECK(p.authority.to_string() == "127.0.20.1:8080");
  // Not behind it: straight to the pod.
  p = plan_outbound(*s, client(), ipport("127.0.20.2:8080"), 0);
  CHECK_FALSE(p.waypoint);
  CHECK(p.dst->name == "echo-2");
  // A port the service does not have is still refused here.
  CHECK(plan_outbound(*s, client(), ipport("10.96.0.10:81"), 0).kind == Kind::kReject);
  // The waypoint's pod is not captured (it serves HBONE itself).
  CHECK_FALSE(s->enrolled(*s->workload_by_uid("wp-1")));
}

TEST_CASE("outbound: a waypoint without pods refuses instead of bypassing it", "[plan]") {
  auto s = waypoint_snap("[]", false);
  auto p = plan_outbound(*s, client(), ipport("10.96.0.10:80"), 0);
  CHECK(p.kind == Kind::kReject);
  CHECK_THAT(p.reason, Catch::Contains("waypoint shop/wp has no pods"));
}

TEST_CASE("inbound: a workload behind a waypoint accepts only the waypoint unless an ALLOW policy matches", "[plan]") {
  auto s = waypoint_snap();
  auto d = decide_inbound(*s, connect_req("127.0.20.1:8080"));
  CHECK(d.status == 401);
  CHECK_THAT(d.reason, Catch::Contains("behind waypoint shop/wp"));
  auto r = connect_req("127.0.20.1:8080");
  r.peer_identity = "spiffe://cluster.local/ns/shop/sa/wp";
  CHECK(decide_inbound(*s, r).status == 200);
  // An explicit ALLOW for the client lets it in directly.
  s = waypoint_snap(R"([{"metadata": {"name": "allow-sleep", "namespace": "shop"},
                         "spec": {"selector": {"matchLabels": {"app": "echo"}}, "action": "ALLOW",
                                  "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/sleep"]}}]}]}}])");
  CHECK(decide_inbound(*s, connect_req("127.0.20.1:8080")).status == 200);
}
