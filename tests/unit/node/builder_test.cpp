// SnapshotBuilder: controller-mode configuration, one resource at a time.
#include <catch2/catch.hpp>

#include "warren/config.h"

using nlohmann::json;
using warren::config::SnapshotBuilder;

namespace {
warren::config::SnapshotPtr boot() {
  auto r = warren::config::parse(json::parse(R"({"node":{"name":"n1","address":"10.0.0.1"},
    "controller":{"address":"127.0.0.1:15012","tokenFile":"/t","caFile":"/c"}})"));
  REQUIRE(r);
  return *r;
}
json workload(const std::string& uid, const std::string& ip) {
  return {{"uid", uid}, {"name", uid}, {"namespace", "shop"}, {"node", "n1"}, {"ips", {ip}}};
}
}  // namespace

TEST_CASE("builder assembles pushed resources and shares unchanged ones", "[node][controller]") {
  SnapshotBuilder b(*boot());
  REQUIRE(b.upsert("workload/a", workload("a", "10.1.0.1")));
  REQUIRE(b.upsert("workload/b", workload("b", "10.1.0.2")));
  REQUIRE(b.upsert("namespace/shop", {{"name", "shop"}, {"labels", {{"warren.io/dataplane-mode", "enabled"}}}}));
  REQUIRE(b.upsert("service/shop/echo", json::parse(R"({"name":"echo","namespace":"shop","vips":["10.96.0.1"],
      "ports":[{"port":80,"targetPort":8080}],"endpoints":["b"]})")));
  std::map<std::string, std::string> rej;
  auto s1 = b.build(&rej);
  CHECK(rej.empty());
  REQUIRE(s1->workloads.size() == 2);
  CHECK(s1->workload_by_ip(*warren::IpAddr::parse("10.1.0.2"))->uid == "b");
  CHECK(s1->workloads[0]->identity == "spiffe://cluster.local/ns/shop/sa/default");
  CHECK(s1->service_by_vip(*warren::IpAddr::parse("10.96.0.1"))->endpoints.size() == 1);
  CHECK(s1->enrolled(*s1->workloads[0]));
  CHECK(s1->node_name == "n1");

  // One change: the other workload is the same object in both snapshots.
  REQUIRE(b.upsert("workload/a", workload("a", "10.1.0.9")));
  auto s2 = b.build(&rej);
  CHECK(s2->workload_by_ip(*warren::IpAddr::parse("10.1.0.9"))->uid == "a");
  CHECK(s2->workload_by_ip(*warren::IpAddr::parse("10.1.0.1")) == nullptr);
  CHECK(s2->workload_by_uid("b") == s1->workload_by_uid("b"));
  CHECK(s2->version > s1->version);

  b.remove("workload/a");
  CHECK(b.build(&rej)->workloads.size() == 1);
  CHECK(b.size() == 3);
}

TEST_CASE("builder keeps the previous version of a rejected resource", "[node][controller]") {
  SnapshotBuilder b(*boot());
  REQUIRE(b.upsert("workload/a", workload("a", "10.1.0.1")));
  auto bad = b.upsert("workload/a", workload("a", "10.1.0.x"));
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message == "/ips/0: \"10.1.0.x\" is not an IP address");
  auto pol = b.upsert("policy/shop/p", json::parse(R"({"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy",
     "metadata":{"name":"p","namespace":"shop"},"spec":{"rules":[{"to":[{"operation":{"ports":["80a"]}}]}]}})"));
  REQUIRE_FALSE(pol);
  CHECK(pol.error().message.find("/spec/rules/0/to/0/operation/ports/0") != std::string::npos);
  CHECK_FALSE(b.upsert("gadget/x", json::object()));
  CHECK_FALSE(b.upsert("namespace/a", {{"name", "b"}}));
  std::map<std::string, std::string> rej;
  auto s = b.build(&rej);
  CHECK(rej.empty());
  REQUIRE(s->workloads.size() == 1);
  CHECK(s->workloads[0]->ips[0].to_string() == "10.1.0.1");
  CHECK(s->policies.empty());
}

TEST_CASE("builder leaves out resources that conflict with others", "[node][controller]") {
  SnapshotBuilder b(*boot());
  REQUIRE(b.upsert("workload/a", workload("a", "10.1.0.1")));
  REQUIRE(b.upsert("workload/b", workload("b", "10.1.0.1")));
  REQUIRE(b.upsert("service/shop/x", json::parse(R"({"name":"x","namespace":"shop","vips":["10.96.0.1"],
      "ports":[{"port":80}],"endpoints":["nope"]})")));
  std::map<std::string, std::string> rej;
  auto s = b.build(&rej);
  CHECK(s->workloads.size() == 1);
  CHECK(s->services.empty());
  REQUIRE(rej.size() == 2);
  CHECK(rej.at("workload/b") == "/ips: 10.1.0.1 is also used by workload \"a\"");
  CHECK(rej.at("service/shop/x") == "/endpoints: unknown workload uid \"nope\"");
}

TEST_CASE("builder shares indexes across content-only changes and rebuilds when keys move",
          "[node][controller]") {
  SnapshotBuilder b(*boot());
  REQUIRE(b.upsert("workload/a", workload("a", "10.1.0.1")));
  REQUIRE(b.upsert("workload/b", workload("b", "10.1.0.2")));
  REQUIRE(b.upsert("service/shop/echo", json::parse(R"({"name":"echo","namespace":"shop","vips":["10.96.0.1"],
      "ports":[{"port":80}],"endpoints":["b"]})")));
  std::map<std::string, std::string> rej;
  auto s1 = b.build(&rej);
  REQUIRE(rej.empty());

  // A label change on a: same uid, same IP. The index and the services are
  // shared; a is the new object, found by IP and uid.
  json a2 = workload("a", "10.1.0.1");
  a2["labels"] = {{"rev", "2"}};
  REQUIRE(b.upsert("workload/a", a2));
  auto s2 = b.build(&rej);
  CHECK(rej.empty());
  CHECK(s2->windex_ == s1->windex_);
  CHECK(s2->sindex_ == s1->sindex_);
  CHECK(s2->workload_by_ip(*warren::IpAddr::parse("10.1.0.1"))->labels().at("rev") == "2");
  CHECK(s2->workload_by_uid("a")->labels().at("rev") == "2");
  CHECK(s1->workload_by_uid("a")->labels().empty());  // the old snapshot is unchanged
  CHECK(s2->workload_by_uid("b") == s1->workload_by_uid("b"));

  // A new workload c claiming b's IP: refused; the index is rebuilt.
  REQUIRE(b.upsert("workload/c", workload("c", "10.1.0.2")));
  auto s3 = b.build(&rej);
  CHECK(rej.count("workload/c") == 1);
  CHECK(s3->windex_ != s2->windex_);
  CHECK(s3->workload_by_uid("c") == nullptr);
  CHECK(s3->workload_by_ip(*warren::IpAddr::parse("10.1.0.2"))->uid == "b");

  // b goes: c gets the IP, and the service naming b is refused (unknown uid).
  b.remove("workload/b");
  rej.clear();
  auto s4 = b.build(&rej);
  CHECK(rej.count("workload/c") == 0);
  CHECK(rej.count("service/shop/echo") == 1);
  CHECK(s4->workload_by_ip(*warren::IpAddr::parse("10.1.0.2"))->uid == "c");
  CHECK(s4->service_by_vip(*warren::IpAddr::parse("10.96.0.1")) == nullptr);

  // b back: the service is accepted again, even though it did not change.
  REQUIRE(b.upsert("workload/b", workload("b", "10.1.0.3")));
  rej.clear();
  auto s5 = b.build(&rej);
  CHECK(rej.empty());
  CHECK(s5->service_by_vip(*warren::IpAddr::parse("10.96.0.1")) != nullptr);
  CHECK(s5->workloads.size() == 3);

  // Content-only again after a rebuild: shared, and a label change of c lands.
  json c2 = workload("c", "10.1.0.2");
  c2["labels"] = {{"x", "y"}};
  REQUIRE(b.upsert("workload/c", c2));
  auto s6 = b.build(&rej);
  CHECK(s6->windex_ == s5->windex_);
  CHECK(s6->workload_by_uid("c")->labels().at("x") == "y");
  CHECK(s6->workload_by_ip(*warren::IpAddr::parse("10.1.0.3"))->uid == "b");
}

TEST_CASE("builder applies queued upserts and removes in order and checks ids", "[node][controller]") {
  SnapshotBuilder b(*boot());
  // The id names the uid.
  auto bad = b.upsert("workload/x", workload("y", "10.1.0.1"));
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message == "/uid: \"y\" does not match the id workload/x");
  // Within one batch the last operation on a uid wins.
  REQUIRE(b.upsert("workload/a", workload("a", "10.1.0.1")));
  b.remove("workload/a");
  REQUIRE(b.upsert("workload/b", workload("b", "10.1.0.2")));
  b.remove("workload/c");  // never there
  REQUIRE(b.upsert("workload/c", workload("c", "10.1.0.3")));
  REQUIRE(b.upsert("workload/b", workload("b", "10.1.0.4")));
  CHECK(b.size() == 2);
  std::map<std::string, std::string> rej;
  auto s = b.build(&rej);
  CHECK(rej.empty());
  REQUIRE(s->workloads.size() == 2);
  CHECK(s->workload_by_uid("a") == nullptr);
  CHECK(s->workload_by_ip(*warren::IpAddr::parse("10.1.0.4"))->uid == "b");
  CHECK(s->workload_by_ip(*warren::IpAddr::parse("10.1.0.2")) == nullptr);
  CHECK(s->workload_by_uid("c") != nullptr);
  // Workloads come out in uid order whatever order they arrived in.
  for (const char* u : {"q", "e", "m", "a"}) REQUIRE(b.upsert(std::string("workload/") + u, workload(u, "10.2.0." + std::to_string(u[0]))));
  s = b.build(&rej);
  REQUIRE(s->workloads.size() == 6);
  for (size_t i = 1; i < s->workloads.size(); ++i) CHECK(s->workloads[i - 1]->uid < s->workloads[i]->uid);
  for (const auto& w : s->workloads) CHECK(s->workload_by_uid(w->uid) == w.get());
  // An IPv6 workload is found by its address.
  REQUIRE(b.upsert("workload/v6", workload("v6", "fd00::7")));
  s = b.build(&rej);
  CHECK(s->workload_by_ip(*warren::IpAddr::parse("fd00::7"))->uid == "v6");
  CHECK(s->workload_by_ip(*warren::IpAddr::parse("fd00::8")) == nullptr);
}

TEST_CASE("builder keeps labels only for this node's workloads and interns shared strings", "[node][controller]") {
  SnapshotBuilder b(*boot());
  json local = workload("l", "10.1.0.1"), remote = workload("r", "10.1.0.2");
  local["labels"] = remote["labels"] = {{"app", "shop"}, {"version", "v2"}};
  local["annotations"] = {{"warren.io/exclude-outbound-ports", "5432"}};
  remote["node"] = "n2";
  REQUIRE(b.upsert("workload/l", local));
  REQUIRE(b.upsert("workload/r", remote));
  std::map<std::string, std::string> rej;
  auto s = b.build(&rej);
  const auto* l = s->workload_by_uid("l");
  const auto* r = s->workload_by_uid("r");
  REQUIRE(l);
  REQUIRE(r);
  CHECK(l->labels().at("app") == "shop");
  CHECK(l->excluded_outbound_ports() == std::vector<uint16_t>{5432});
  CHECK(r->labels().empty());
  CHECK(r->annotations().empty());
  CHECK(r->excluded_outbound_ports().empty());
  // Telemetry names survive without the labels.
  CHECK(r->canonical_name == "shop");
  CHECK(r->canonical_revision == "v2");
  // Same namespace and identity: one shared string.
  CHECK(&l->namespace_.str() == &r->namespace_.str());
  CHECK(&l->identity.str() == &r->identity.str());
  CHECK(l->node != r->node);
}
