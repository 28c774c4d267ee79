#include <catch2/catch.hpp>

#include "resources.h"

using nlohmann::json;
using warren::node::assemble;

namespace {
json boot() {
  return json::parse(R"({"node":{"name":"n1","address":"10.0.0.1"},
    "controller":{"address":"127.0.0.1:15012","tokenFile":"/t","caFile":"/c"}})");
}
json workload(const std::string& uid, const std::string& ip) {
  return {{"uid", uid}, {"name", uid}, {"namespace", "shop"}, {"node", "n1"}, {"ips", {ip}}};
}
}  // namespace

TEST_CASE("assemble builds a snapshot from pushed resources", "[node][controller]") {
  std::map<std::string, json> res;
  res["workload/a"] = workload("a", "10.1.0.1");
  res["workload/b"] = workload("b", "10.1.0.2");
  res["namespace/shop"] = {{"name", "shop"}, {"labels", {{"warren.io/dataplane-mode", "enabled"}}}};
  auto a = assemble(boot(), res);
  REQUIRE(a.snap);
  CHECK(a.rejected.empty());
  CHECK(a.snap->workloads.size() == 2);
  CHECK(a.snap->namespaces.count("shop") == 1);
  // The bodies are handed back.
  CHECK(res["workload/a"]["uid"] == "a");
}

TEST_CASE("assemble leaves out only the resources the parser rejects", "[node][controller]") {
  std::map<std::string, json> res;
  res["workload/a"] = workload("a", "10.1.0.1");
  res["workload/bad"] = workload("bad", "10.1.0.x");
  res["policy/shop/p"] = json::parse(R"({"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy",
     "metadata":{"name":"p","namespace":"shop"},"spec":{"rules":[{"to":[{"operation":{"ports":["80a"]}}]}]}})");
  auto a = assemble(boot(), res);
  REQUIRE(a.snap);
  CHECK(a.snap->workloads.size() == 1);
  CHECK(a.snap->policies.empty());
  REQUIRE(a.rejected.size() == 2);
  CHECK(a.rejected.at("workload/bad").find("is not an IP address") != std::string::npos);
  CHECK(a.rejected.at("policy/shop/p").find("80a") != std::string::npos);
}

TEST_CASE("assemble reports a bootstrap error without a snapshot", "[node][controller]") {
  std::map<std::string, json> res;
  json b = boot();
  b["node"]["address"] = "nope";
  auto a = assemble(b, res);
  CHECK_FALSE(a.snap);
  CHECK(a.error.find("/node/address") != std::string::npos);
}
