// ControllerSource::apply: pushed resources become waypoint States; a bad
// resource is rejected alone and its previous version stays.
#include <catch2/catch.hpp>

#include <uv.h>

#include "controller_source.h"

using namespace warren;
using nlohmann::json;
using Update = push::ControllerClient::Update;

namespace {

json virtual_service(const std::string& name, const std::string& host, const std::string& subset) {
  return {{"apiVersion", "networking.istio.io/v1"},
          {"kind", "VirtualService"},
          {"metadata", {{"name", name}, {"namespace", "shop"}}},
          {"spec",
           {{"hosts", {host}},
            {"http", json::array({{{"route", json::array({{{"destination", {{"host", host}, {"subset", subset}}}}})}}})}}}};
}

json block(const std::string& gateway = "wp") {
  return {{"name", gateway}, {"namespace", "shop"}, {"serviceAccount", "wp"}, {"address", "10.1.0.9"}};
}

json workload(const std::string& uid, const std::string& ip) {
  return {{"uid", uid},     {"name", uid},         {"namespace", "shop"},
          {"node", "n1"},   {"ips", {ip}},         {"protocol", "HBONE"},
          {"labels", {{"app", "reviews"}, {"version", "v1"}}}};
}

struct SourceFixture {
  uv_loop_t loop;
  certs::IdentityStore store;
  std::unique_ptr<waypoint::ControllerSource> src;
  SourceFixture() {
    uv_loop_init(&loop);
    waypoint::ControllerSourceOptions o;
    o.waypoint_ns = "shop";
    o.gateway = "wp";
    o.pod = "wp-1";
    src = std::make_unique<waypoint::ControllerSource>(&loop, o, store);
  }
  ~SourceFixture() {
    src.reset();
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_loop_close(&loop);
  }
  std::map<std::string, std::string> apply(bool snapshot, std::vector<std::pair<std::string, json>> upserts,
                                           std::vector<std::string> removes = {}) {
    Update u;
    u.snapshot = snapshot;
    u.upserts = std::move(upserts);
    u.removes = std::move(removes);
    return src->apply(std::move(u));
  }
};

}  // namespace

TEST_CASE("controller source: no State until the waypoint block arrives", "[waypoint][controller]") {
  SourceFixture f;
  auto rej = f.apply(true, {{"workload/a", workload("a", "10.1.0.1")},
                            {"virtualservice/shop/reviews", virtual_service("reviews", "reviews.shop.svc.cluster.local", "v1")}});
  CHECK(rej.empty());
  CHECK_FALSE(f.src->state());
  rej = f.apply(false, {{"waypoint/shop/wp/wp-1", block()}});
  CHECK(rej.empty());
  REQUIRE(f.src->state());
  const auto& st = *f.src->state();
  CHECK(st.self.identity == "spiffe://cluster.local/ns/shop/sa/wp");
  CHECK(st.self.address.to_string() == "10.1.0.9");
  REQUIRE(st.mesh->workload_by_uid("a"));
  // Labels of every node's workloads are kept (subsets select by them).
  CHECK(st.mesh->workload_by_uid("a")->labels().at("version") == "v1");
  CHECK(st.routes.has_routes_for("reviews.shop.svc.cluster.local"));
}

TEST_CASE("controller source: a bad resource is rejected alone and the last good one stays", "[waypoint][controller]") {
  SourceFixture f;
  REQUIRE(f.apply(true, {{"waypoint/shop/wp/wp-1", block()},
                         {"virtualservice/shop/reviews", virtual_service("reviews", "reviews.shop.svc.cluster.local", "v1")}})
              .empty());
  REQUIRE(f.src->state());

  // A VirtualService the route compiler refuses, a workload with a bad IP, an
  // id no waypoint reads, and a good VirtualService in the same message.
  json bad_vs = virtual_service("reviews", "reviews.shop.svc.cluster.local", "v2");
  bad_vs["spec"]["http"][0]["route"] = "not a list";
  auto rej = f.apply(false, {{"virtualservice/shop/reviews", bad_vs},
                             {"workload/b", workload("b", "10.1.0.x")},
                             {"gateway/shop/wp", json::object()},
                             {"virtualservice/shop/ratings", virtual_service("ratings", "ratings.shop.svc.cluster.local", "v1")}});
  CHECK(rej.size() == 3);
  CHECK(rej.count("virtualservice/shop/reviews"));
  CHECK(rej.count("workload/b"));
  CHECK(rej.at("gateway/shop/wp") == "not a resource a waypoint reads");
  const auto& st = *f.src->state();
  CHECK(st.routes.has_routes_for("ratings.shop.svc.cluster.local"));
  // The previous reviews route still applies.
  REQUIRE(st.routes.has_routes_for("reviews.shop.svc.cluster.local"));
  CHECK(st.source["virtualServices"].size() == 2);
  bool v1 = false;
  for (const auto& vs : st.source["virtualServices"])
    v1 |= vs["metadata"]["name"] == "reviews" && vs["spec"]["http"][0]["route"][0]["destination"]["subset"] == "v1";
  CHECK(v1);

  // Removal applies.
  CHECK(f.apply(false, {}, {"virtualservice/shop/reviews"}).empty());
  CHECK_FALSE(f.src->state()->routes.has_routes_for("reviews.shop.svc.cluster.local"));
}

TEST_CASE("controller source: a waypoint block for another gateway is refused", "[waypoint][controller]") {
  SourceFixture f;
  auto rej = f.apply(true, {{"waypoint/shop/wp/wp-1", block("someone-else")}});
  REQUIRE(rej.count("waypoint/shop/wp/wp-1"));
  CHECK(rej.at("waypoint/shop/wp/wp-1").find("shop/wp") != std::string::npos);
  CHECK_FALSE(f.src->state());
  // A block whose address does not parse is refused; the good one stays.
  REQUIRE(f.apply(false, {{"waypoint/shop/wp/wp-1", block()}}).empty());
  json bad = block();
  bad["address"] = "nowhere";
  rej = f.apply(false, {{"waypoint/shop/wp/wp-1", bad}});
  REQUIRE(rej.count("waypoint/shop/wp/wp-1"));
  CHECK(rej.at("waypoint/shop/wp/wp-1").find("/waypoint/address") != std::string::npos);
  CHECK(f.src->state()->self.address.to_string() == "10.1.0.9");
}

TEST_CASE("controller source: extensionProviders of the waypoint block become providers of the State", "[waypoint][controller][ext_authz]") {
  SourceFixture f;
  json b = block();
  b["extensionProviders"] = json::array(
      {{{"name", "authz"},
        {"envoyExtAuthzHttp",
         {{"service", "authz.shop.svc.cluster.local"}, {"port", 8000}, {"timeout", "2s"}, {"pathPrefix", "/check"},
          {"includeRequestHeadersInCheck", {"x-user"}}, {"headersToUpstreamOnAllow", {"x-auth-*"}},
          {"headersToDownstreamOnDeny", {"content-type"}}, {"failOpen", false}}}}});
  auto rej = f.apply(true, {{"waypoint/shop/wp/wp-1", b}});
  CHECK(rej.empty());
  REQUIRE(f.src->state());
  const auto& st = *f.src->state();
  REQUIRE(st.providers.count("authz"));
  const auto& p = st.providers.at("authz");
  CHECK(p.service == "authz.shop.svc.cluster.local");
  CHECK(p.port == 8000);
  CHECK(p.timeout == std::chrono::milliseconds(2000));
  CHECK(p.path_prefix == "/check");
  CHECK(p.include_request_headers == std::vector<std::string>{"x-user"});
  CHECK(p.headers_to_upstream_on_allow == std::vector<std::string>{"x-auth-*"});
  CHECK(p.headers_to_downstream_on_deny == std::vector<std::string>{"content-type"});
  CHECK_FALSE(p.fail_open);
  CHECK(st.source["extensionProviders"].size() == 1);

  // A block without them: no providers (a change of meshConfig re-pushes the block).
  rej = f.apply(false, {{"waypoint/shop/wp/wp-1", block()}});
  CHECK(rej.empty());
  CHECK(f.src->state()->providers.empty());

  // A provider the waypoint cannot read refuses the block; the State in force stays.
  json bad = block();
  bad["extensionProviders"] = json::array({{{"name", "authz"}, {"envoyExtAuthzHttp", {{"service", "authz"}}}}});
  b["address"] = "10.1.0.10";
  rej = f.apply(false, {{"waypoint/shop/wp/wp-1", b}});
  REQUIRE(f.src->state()->providers.count("authz"));
  rej = f.apply(false, {{"waypoint/shop/wp/wp-1", bad}});
  REQUIRE(rej.count("waypoint/shop/wp/wp-1"));
  CHECK(rej["waypoint/shop/wp/wp-1"].find("/extensionProviders/0/envoyExtAuthzHttp/port") != std::string::npos);
  CHECK(f.src->state()->providers.count("authz"));
  CHECK(f.src->state()->self.address.to_string() == "10.1.0.10");
}
