// Waypoints and the controller (issue 5): the routing resources and waypoint
// blocks the model renders, who may subscribe as a waypoint, what each proxy
// receives, the waypoint's CSR check, and warren-waypoint's ControllerSource
// against the real push server and CA.
#include <catch2/catch.hpp>

#include <sstream>

#include "controller_source.h"
#include "local_manifest.h"
#include "model_fixtures.h"
#include "push_fixture.h"
#include "route_table.h"

using namespace warren;
using namespace push_fixture;
using nlohmann::json;

namespace {

json virtual_service(const std::string& ns, const std::string& name, const std::string& host,
                     const std::string& subset = "v1") {
  return {{"apiVersion", "networking.istio.io/v1"},
          {"kind", "VirtualService"},
          {"metadata", {{"name", name}, {"namespace", ns}}},
          {"spec",
           {{"hosts", {host}},
            {"http", json::array({{{"route", json::array({{{"destination", {{"host", host}, {"subset", subset}}}}})}}})}}}};
}

json gateway(const std::string& ns, const std::string& name) {
  return {{"apiVersion", "gateway.networking.k8s.io/v1"},
          {"kind", "Gateway"},
          {"metadata", {{"name", name}, {"namespace", ns}}},
          {"spec",
           {{"gatewayClassName", "warren-waypoint"},
            {"listeners", json::array({{{"name", "mesh"}, {"port", 15008}, {"protocol", "HBONE"}}})}}}};
}

// A pod of waypoint `gw` in shop (label gateway.networking.k8s.io/gateway-name).
json waypoint_pod(const std::string& name, const std::string& gw, const std::string& ip, const std::string& sa) {
  json p = pod(name, "n1", ip, sa);
  p["metadata"]["labels"] = {{"gateway.networking.k8s.io/gateway-name", gw}};
  return p;
}

const json* resource(const controller::Model& m, const std::string& id) {
  auto it = m.resources().find(id);
  return it == m.resources().end() ? nullptr : it->second.get();
}

// Writes a token file for one client; returns its path.
std::string token_file(const Fixture& f, const std::string& token) {
  std::string path = f.dir + "/token-" + token;
  std::ofstream(path) << token << "\n";
  return path;
}

push::ControllerClientOptions waypoint_opts(Fixture& f, const std::string& token, const std::string& pod_name,
                                            const std::string& claimed = "waypoint:shop/wp") {
  auto o = f.client_opts(claimed);
  o.token_file = token_file(f, token);
  o.pod = pod_name;
  return o;
}

// The mesh of these tests: namespace shop with a waypoint wp (pod wp-1 as
// service account wp), an app pod, VirtualServices in shop, in the root
// namespace and in another namespace.
void load_mesh(Fixture& f) {
  f.model->upsert("t", fixtures::ns_object("shop", {{"warren.io/dataplane-mode", "enabled"}}));
  f.model->upsert("t", gateway("shop", "wp"));
  f.model->upsert("t", waypoint_pod("wp-1", "wp", "10.1.0.9", "wp"));
  f.model->upsert("t", pod("a", "n1", "10.1.0.1"));
  f.model->upsert("t", fixtures::service("shop", "reviews", "10.96.0.5", {{"app", "a"}}));
  f.model->upsert("t", virtual_service("shop", "reviews", "reviews.shop.svc.cluster.local"));
  f.model->upsert("t", virtual_service("istio-system", "mesh-wide", "ratings.other.svc.cluster.local"));
  f.model->upsert("t", virtual_service("other", "elsewhere", "ratings.other.svc.cluster.local"));
  f.model->synced();
  f.publish();
}

}  // namespace

TEST_CASE("model: routing objects become waypoint resources and leave with their object", "[controller][model][waypoint]") {
  controller::Model m({});
  m.upsert("t", virtual_service("shop", "reviews", "reviews"));
  m.upsert("t", json::parse(R"({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
    "metadata": {"name": "reviews", "namespace": "shop"},
    "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}})"));
  m.upsert("t", json::parse(R"({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
    "metadata": {"name": "r", "namespace": "shop"},
    "spec": {"parentRefs": [{"kind": "Service", "group": "", "name": "reviews"}],
             "rules": [{"backendRefs": [{"name": "reviews", "port": 80}]}]}})"));
  m.upsert("t", json::parse(R"({"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
    "metadata": {"name": "jwt", "namespace": "shop"},
    "spec": {"jwtRules": [{"issuer": "https://issuer.example"}]}})"));
  auto d = m.flush();
  CHECK(fixtures::ids(d) == std::vector<std::string>{"destinationrule/shop/reviews", "httproute/shop/r",
                                                     "requestauthentication/shop/jwt", "virtualservice/shop/reviews"});
  REQUIRE(resource(m, "virtualservice/shop/reviews"));
  CHECK(resource(m, "virtualservice/shop/reviews")->at("spec")["hosts"][0] == "reviews");

  // An invalid edit is rejected and the last good version stays.
  json bad = virtual_service("shop", "reviews", "reviews");
  bad["spec"]["http"][0]["route"][0]["weight"] = "heavy";
  m.upsert("t", bad);
  CHECK(m.flush().empty());
  CHECK(m.rejected().size() == 1);
  CHECK(resource(m, "virtualservice/shop/reviews")->at("spec")["http"][0]["route"][0]["destination"]["subset"] == "v1");
  // A valid edit replaces it; a removal removes it.
  m.upsert("t", virtual_service("shop", "reviews", "reviews", "v2"));
  CHECK(fixtures::ids(m.flush()) == std::vector<std::string>{"virtualservice/shop/reviews"});
  m.remove({"VirtualService", "shop", "reviews"});
  auto gone = m.flush();
  CHECK(gone.removes == std::vector<std::string>{"virtualservice/shop/reviews"});
  CHECK_FALSE(resource(m, "virtualservice/shop/reviews"));
}

TEST_CASE("model: RequestAuthentications are rendered through the jwks transform and refreshed on demand", "[controller][model][waypoint][jwks]") {
  std::map<std::string, std::string> keys;  // what a JwksResolver would hold
  controller::ModelOptions mo;
  mo.request_authentication_transform = [&](const json& ra) {
    json out = ra;
    for (auto& r : out["spec"]["jwtRules"])
      if (r.contains("jwksUri") && keys.count(r["jwksUri"])) r["jwks"] = keys[r["jwksUri"]];
    return out;
  };
  controller::Model m(mo);
  m.upsert("t", json::parse(R"({"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
    "metadata": {"name": "jwt", "namespace": "shop"},
    "spec": {"jwtRules": [{"issuer": "https://issuer.example", "jwksUri": "https://issuer.example/jwks"},
                          {"issuer": "inline", "jwks": "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AA\",\"y\":\"AA\"}]}"}]}})"));
  m.upsert("t", virtual_service("shop", "reviews", "reviews"));
  CHECK(m.jwks_uris() == std::set<std::string>{"https://issuer.example/jwks"});
  m.flush();
  REQUIRE(resource(m, "requestauthentication/shop/jwt"));
  CHECK_FALSE(resource(m, "requestauthentication/shop/jwt")->at("spec")["jwtRules"][0].contains("jwks"));
  // Keys arrive: a refresh re-renders RequestAuthentications only, and sends the changed body.
  keys["https://issuer.example/jwks"] = R"({"keys":[{"kty":"EC"}]})";
  m.refresh_kind("RequestAuthentication");
  CHECK(fixtures::ids(m.flush()) == std::vector<std::string>{"requestauthentication/shop/jwt"});
  CHECK(resource(m, "requestauthentication/shop/jwt")->at("spec")["jwtRules"][0]["jwks"] == keys["https://issuer.example/jwks"]);
  // Nothing changed: nothing sent.
  m.refresh_kind("RequestAuthentication");
  CHECK(m.flush().empty());
  m.remove({"RequestAuthentication", "shop", "jwt"});
  m.flush();
  CHECK(m.jwks_uris().empty());
}

TEST_CASE("model: a waypoint pod gets its waypoint block and the CA check knows its identity", "[controller][model][waypoint]") {
  controller::Model m({});
  m.upsert("t", waypoint_pod("wp-1", "wp", "10.1.0.9", "wp-sa"));
  m.upsert("t", pod("a", "n1", "10.1.0.1", "app"));
  m.flush();
  const json* block = resource(m, "waypoint/shop/wp/wp-1");
  REQUIRE(block);
  CHECK(*block == json{{"name", "wp"}, {"namespace", "shop"}, {"serviceAccount", "wp-sa"}, {"address", "10.1.0.9"}});
  CHECK(m.identity_of_waypoint("shop", "wp", "spiffe://cluster.local/ns/shop/sa/wp-sa"));
  CHECK_FALSE(m.identity_of_waypoint("shop", "wp", "spiffe://cluster.local/ns/shop/sa/app"));
  CHECK_FALSE(m.identity_of_waypoint("shop", "other", "spiffe://cluster.local/ns/shop/sa/wp-sa"));
  CHECK_FALSE(m.identity_of_waypoint("shop", "wp", "spiffe://other.domain/ns/shop/sa/wp-sa"));

  // Relabelled to another gateway: the old block goes, a new one comes.
  m.upsert("t", waypoint_pod("wp-1", "wp2", "10.1.0.9", "wp-sa"));
  auto d = m.flush();
  CHECK(d.removes == std::vector<std::string>{"waypoint/shop/wp/wp-1"});
  CHECK(resource(m, "waypoint/shop/wp2/wp-1"));
  CHECK_FALSE(m.identity_of_waypoint("shop", "wp", "spiffe://cluster.local/ns/shop/sa/wp-sa"));
  // Deleted: no block, no identity.
  m.remove({"Pod", "shop", "wp-1"});
  m.flush();
  CHECK_FALSE(resource(m, "waypoint/shop/wp2/wp-1"));
  CHECK_FALSE(m.identity_of_waypoint("shop", "wp2", "spiffe://cluster.local/ns/shop/sa/wp-sa"));
}

TEST_CASE("push: waypoint tokens act only as their waypoint and name their pod", "[controller][push][waypoint]") {
  Fixture f;
  load_mesh(f);
  struct Case {
    std::string token, claimed, pod;
    bool ok;
  };
  const std::string k = kToken;
  std::vector<Case> cases = {
      {k + "-wp", "waypoint:shop/wp", "wp-1", true},
      {k + "-wp", "waypoint:shop/other", "wp-1", false},  // another gateway
      {k + "-wp", "waypoint:shop/wp", "", false},         // no pod named
      {k + "-wp", "n1", "", false},                       // a waypoint token is not a node's
      {k + "-any", "waypoint:shop/wp", "wp-1", false},    // an any-node token is not a waypoint's
      {k, "waypoint:shop/wp", "wp-1", false},             // a node's token
      {k + "-wp", "waypoint:shop", "wp-1", false},        // malformed
  };
  for (const auto& c : cases) {
    INFO(c.token << " as " << c.claimed << " pod " << c.pod);
    push::ControllerClient cl(&f.loop, waypoint_opts(f, c.token, c.pod, c.claimed), nullptr);
    cl.set_update_fn([](push::ControllerClient::Update&&) { return std::map<std::string, std::string>{}; });
    cl.start();
    if (c.ok) {
      CHECK(run_until(&f.loop, [&] { return cl.version() == f.model->version(); }));
    } else {
      CHECK(run_until(&f.loop, [&] { return !cl.last_error().empty(); }));
      CHECK(cl.version() == 0);
    }
    cl.stop();
    for (int i = 0; i < 10; ++i) uv_run(&f.loop, UV_RUN_NOWAIT);
  }
}

TEST_CASE("push: nodes get node kinds and a waypoint its scope and its own block", "[controller][push][waypoint]") {
  Fixture f;
  load_mesh(f);
  f.model->upsert("t", waypoint_pod("wp-2", "wp", "10.1.0.10", "wp"));
  f.publish();
  Recorder node_rec, wp_rec;
  push::ControllerClient node(&f.loop, f.client_opts(), node_rec.fn());
  push::ControllerClient wp(&f.loop, waypoint_opts(f, std::string(kToken) + "-wp", "wp-1"), wp_rec.fn());
  node.start();
  wp.start();
  REQUIRE(run_until(&f.loop, [&] { return node.version() == f.model->version() && wp.version() == f.model->version(); }));
  for (const auto& [id, body] : node.resources())
    CHECK(push::node_kind(push::resource_kind(id)));
  CHECK(node.resources().count("workload/uid-a"));
  CHECK(wp.resources().count("workload/uid-a"));
  CHECK(wp.resources().count("service/shop/reviews"));
  CHECK(wp.resources().count("virtualservice/shop/reviews"));
  CHECK(wp.resources().count("virtualservice/istio-system/mesh-wide"));
  CHECK_FALSE(wp.resources().count("virtualservice/other/elsewhere"));
  CHECK(wp.resources().count("waypoint/shop/wp/wp-1"));
  CHECK_FALSE(wp.resources().count("waypoint/shop/wp/wp-2"));

  // A delta: an edit and a removal reach the waypoint; the node's version
  // moves on with nothing it reads.
  size_t node_msgs = node_rec.changes.size();
  f.model->upsert("t", virtual_service("shop", "reviews", "reviews.shop.svc.cluster.local", "v2"));
  f.model->remove({"VirtualService", "istio-system", "mesh-wide"});
  f.publish();
  REQUIRE(run_until(&f.loop, [&] { return node.version() == f.model->version() && wp.version() == f.model->version(); }));
  CHECK(wp.resources().at("virtualservice/shop/reviews")["spec"]["http"][0]["route"][0]["destination"]["subset"] == "v2");
  CHECK_FALSE(wp.resources().count("virtualservice/istio-system/mesh-wide"));
  REQUIRE(node_rec.changes.size() == node_msgs + 1);
  CHECK(node_rec.changes.back().empty());
  // Status names the waypoint's pod.
  bool listed = false;
  for (const auto& st : f.push->status()) listed |= st.node == "waypoint:shop/wp/wp-1" && st.connected;
  CHECK(listed);
}

TEST_CASE("the CA signs a waypoint only the identity of its gateway's pods", "[controller][push][waypoint]") {
  Fixture f;
  load_mesh(f);
  Recorder rec;
  push::ControllerClient wp(&f.loop, waypoint_opts(f, std::string(kToken) + "-wp", "wp-1"), rec.fn());
  wp.start();
  auto ask = [&](const std::string& id) { return test::ask_certificate(&f.loop, wp, id); };
  auto own = ask("spiffe://cluster.local/ns/shop/sa/wp");
  REQUIRE(own.ok());
  CHECK(own->find("BEGIN CERTIFICATE") != std::string::npos);
  auto app = ask("spiffe://cluster.local/ns/shop/sa/default");  // the app pod's, on the same node
  REQUIRE_FALSE(app.ok());
  CHECK(app.error().message.find("no pod of waypoint shop/wp runs as") != std::string::npos);
}

TEST_CASE("warren-waypoint's controller source serves pushed routes and gets its certificate", "[controller][push][waypoint]") {
  Fixture f;
  load_mesh(f);
  certs::IdentityStore store;
  waypoint::ControllerSourceOptions o;
  o.address = f.push->local().to_string();
  o.token_file = token_file(f, std::string(kToken) + "-wp");
  o.ca_file = f.dir + "/root.pem";
  o.waypoint_ns = "shop";
  o.gateway = "wp";
  o.pod = "wp-1";
  o.backoff_min_ms = 20;
  o.backoff_max_ms = 100;
  waypoint::ControllerSource src(&f.loop, o, store);
  std::vector<waypoint::StatePtr> states;
  int cert_changes = 0;
  REQUIRE(src.start(
      [&](waypoint::StatePtr st) -> Result<void> {
        states.push_back(st);
        return {};
      },
      [&](const certs::IdentityStore::ReloadReport&) { ++cert_changes; }));
  REQUIRE(run_until(&f.loop, [&] { return !states.empty() && store.get("spiffe://cluster.local/ns/shop/sa/wp"); }));
  const auto& st = *states.back();
  CHECK(st.self.name == "wp");
  CHECK(st.self.identity == "spiffe://cluster.local/ns/shop/sa/wp");
  CHECK(st.self.address.to_string() == "10.1.0.9");
  CHECK(st.routes.has_routes_for("reviews.shop.svc.cluster.local"));
  CHECK(st.mesh->service_by_vip(*IpAddr::parse("10.96.0.5")));
  CHECK(cert_changes > 0);

  // A live edit arrives as a delta and becomes a new State.
  size_t n = states.size();
  f.model->upsert("t", virtual_service("shop", "ratings", "ratings.shop.svc.cluster.local"));
  f.publish();
  REQUIRE(run_until(&f.loop, [&] { return states.size() > n; }));
  CHECK(states.back()->routes.has_routes_for("ratings.shop.svc.cluster.local"));
  CHECK(states.back()->routes.has_routes_for("reviews.shop.svc.cluster.local"));
  src.stop();
}

TEST_CASE("examples/mesh/extra/waypoint.yaml is valid and makes routing resources", "[controller][model][waypoint]") {
  std::ifstream f(std::string(WARREN_SRC_DIR) + "/examples/mesh/extra/waypoint.yaml");
  std::stringstream ss;
  ss << f.rdbuf();
  auto objs = controller::parse_manifest(ss.str(), false);
  REQUIRE(objs);
  REQUIRE(objs->size() == 6);
  controller::Model m({});
  for (auto& o : *objs) m.upsert("waypoint.yaml", o.obj);
  CHECK(m.rejected().empty());
  m.flush();
  CHECK(resource(m, "virtualservice/shop/catalog"));
  CHECK(resource(m, "destinationrule/shop/catalog"));
  REQUIRE(m.waypoint_gateways().count("shop/waypoint"));
  CHECK(m.waypoint_gateways().at("shop/waypoint").service_account == "waypoint");  // Istio's default: the name
  // Istio's annotation names another service account; a Gateway of another class is not a waypoint.
  json g = (*objs)[0].obj;
  g["metadata"]["annotations"] = {{"gateway.istio.io/service-account", "custom"}};
  m.upsert("t", g);
  CHECK(m.waypoint_gateways().at("shop/waypoint").service_account == "custom");
  g["spec"]["gatewayClassName"] = "istio";
  m.upsert("t", g);
  CHECK(m.waypoint_gateways().empty());
}
