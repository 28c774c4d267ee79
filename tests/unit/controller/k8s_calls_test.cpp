// TokenReview and Secret calls, the HTTP client on its own, and the fake's
// wire format.
#include <catch2/catch.hpp>

#include "fake_apiserver.h"
#include "k8s/api.h"
#include "k8s/api_calls.h"
#include "k8s/kube_source.h"
#include "k8s_test_support.h"

using namespace warren::fakes;
using namespace warren::controller::k8s;
using warren::Errc;
using warren::Result;

namespace {

std::unique_ptr<FakeApiServer> start_fake(FakeApiServerOptions o = {}) {
  auto api = FakeApiServer::start(std::move(o));
  REQUIRE(api.ok());
  return std::move(*api);
}

std::unique_ptr<Client> client_for(TestLoop& loop, ClusterConfig cfg) {
  auto c = Client::create(loop.get(), std::move(cfg));
  REQUIRE(c.ok());
  return std::move(*c);
}

// Runs one request to completion.
Result<HttpResponse> fetch(TestLoop& loop, Client& c, HttpRequest req) {
  std::optional<Result<HttpResponse>> out;
  c.start(std::move(req), [&](Result<HttpResponse> r) { out.emplace(std::move(r)); });
  REQUIRE(loop.run_until([&] { return out.has_value(); }));
  return std::move(*out);
}

}  // namespace

TEST_CASE("k8s calls: token_review returns the user and the node name", "[controller][k8s]") {
  auto api = start_fake();
  api->set_token_review("node-token", {{"username", "system:serviceaccount:warren-system:warren-node"},
                                       {"uid", "7f1c2d3e-0000-4000-8000-000000000001"},
                                       {"groups", {"system:serviceaccounts", "system:authenticated"}},
                                       {"extra",
                                        {{"authentication.kubernetes.io/node-name", {"worker-1"}},
                                         {"authentication.kubernetes.io/pod-name", {"warren-node-x7k2p"}}}}});
  TestLoop loop;
  auto src = KubernetesSource::create(loop.get(), fake_config(*api), fast_options());
  REQUIRE(src.ok());
  std::optional<Result<TokenReviewResult>> ok, bad;
  (*src)->token_review("node-token", [&](Result<TokenReviewResult> r) { ok.emplace(std::move(r)); });
  (*src)->token_review("forged", [&](Result<TokenReviewResult> r) { bad.emplace(std::move(r)); },
                       {"warren"});
  REQUIRE(loop.run_until([&] { return ok && bad; }));
  REQUIRE(ok->ok());
  CHECK((*ok)->authenticated);
  CHECK((*ok)->username == "system:serviceaccount:warren-system:warren-node");
  CHECK((*ok)->uid == "7f1c2d3e-0000-4000-8000-000000000001");
  CHECK((*ok)->groups.size() == 2);
  CHECK((*ok)->node_name() == "worker-1");
  CHECK((*ok)->pod_name() == "warren-node-x7k2p");
  REQUIRE(bad->ok());
  CHECK(!(*bad)->authenticated);
  CHECK(!(*bad)->error.empty());
  CHECK((*bad)->node_name().empty());
  // What was sent.
  size_t posts = 0;
  for (const auto& r : api->requests()) {
    posts += r.method == "POST" && r.path == "/apis/authentication.k8s.io/v1/tokenreviews";
  }
  CHECK(posts == 2);
}

TEST_CASE("k8s calls: token_review errors when the API refuses", "[controller][k8s]") {
  auto api = start_fake();
  api->fail_requests("POST", "/apis/authentication.k8s.io/v1/tokenreviews", 403);
  TestLoop loop;
  auto c = client_for(loop, fake_config(*api));
  std::optional<Result<TokenReviewResult>> r;
  token_review(*c, "t", {}, [&](Result<TokenReviewResult> x) { r.emplace(std::move(x)); });
  REQUIRE(loop.run_until([&] { return r.has_value(); }));
  REQUIRE(!r->ok());
  CHECK(r->error().code == Errc::kPermissionDenied);
}

TEST_CASE("k8s calls: get_secret decodes the data", "[controller][k8s]") {
  auto api = start_fake();
  REQUIRE(api->create(load_testdata("secret.json")).ok());
  TestLoop loop;
  auto src = KubernetesSource::create(loop.get(), fake_config(*api), fast_options());
  REQUIRE(src.ok());
  std::optional<Result<std::map<std::string, std::string>>> found, missing;
  (*src)->get_secret("warren-system", "cacerts", [&](auto r) { found.emplace(std::move(r)); });
  (*src)->get_secret("warren-system", "nope", [&](auto r) { missing.emplace(std::move(r)); });
  REQUIRE(loop.run_until([&] { return found && missing; }));
  REQUIRE(found->ok());
  CHECK((*found)->size() == 2);
  CHECK((**found)["ca-cert.pem"] == "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n");
  CHECK((**found)["ca-key.pem"].rfind("-----BEGIN PRIVATE KEY-----", 0) == 0);
  REQUIRE(!missing->ok());
  CHECK(missing->error().code == Errc::kNotFound);
}

TEST_CASE("k8s calls: parse_secret_data rejects bad base64", "[controller][k8s]") {
  CHECK(!parse_secret_data(R"({"data":{"k":"not base64!"}})").ok());
  auto ok = parse_secret_data(R"({"data":{"k":"aGVsbG8="},"stringData":{"s":"plain"}})");
  REQUIRE(ok.ok());
  CHECK((*ok)["k"] == "hello");
  CHECK((*ok)["s"] == "plain");
}

TEST_CASE("k8s client: transport errors and statuses are told apart", "[controller][k8s]") {
  auto api = start_fake();
  TestLoop loop;
  SECTION("wrong CA: a TLS error") {
    ClusterConfig cfg = fake_config(*api);
    auto other = start_fake();
    cfg.ca_pem = other->ca_pem();
    auto c = client_for(loop, cfg);
    HttpRequest req;
    req.path = "/api/v1/namespaces";
    auto r = fetch(loop, *c, req);
    REQUIRE(!r.ok());
    CHECK(r.error().code == Errc::kTls);
  }
  SECTION("nothing listening: unavailable") {
    ClusterConfig cfg = fake_config(*api);
    uint16_t port = api->port();
    api.reset();
    cfg.server = "https://127.0.0.1:" + std::to_string(port);
    auto c = client_for(loop, cfg);
    HttpRequest req;
    req.path = "/api/v1/namespaces";
    auto r = fetch(loop, *c, req);
    REQUIRE(!r.ok());
    CHECK(r.error().code == Errc::kUnavailable);
  }
  SECTION("a 404 is a response with the Status body") {
    auto c = client_for(loop, fake_config(*api));
    HttpRequest req;
    req.path = "/api/v1/namespaces/shop";
    auto r = fetch(loop, *c, req);
    REQUIRE(r.ok());
    CHECK(r->status == 404);
    CHECK(parse_status_body(r->body).reason == "NotFound");
    CHECK(http_error("get", r->status, r->body).code == Errc::kNotFound);
  }
  SECTION("insecure-skip-tls-verify") {
    ClusterConfig cfg = fake_config(*api);
    cfg.ca_pem.clear();
    cfg.insecure = true;
    auto c = client_for(loop, cfg);
    HttpRequest req;
    req.path = "/api/v1/namespaces";
    auto r = fetch(loop, *c, req);
    REQUIRE(r.ok());
    CHECK(r->status == 200);
  }
  SECTION("a client certificate authenticates without a token") {
    ClusterConfig cfg = fake_config(*api, "");
    auto [cert, key] = api->issue_client_cert("warren-controller");
    cfg.client_cert_pem = cert;
    cfg.client_key_pem = key;
    auto c = client_for(loop, cfg);
    HttpRequest req;
    req.path = "/api/v1/namespaces";
    auto r = fetch(loop, *c, req);
    REQUIRE(r.ok());
    CHECK(r->status == 200);
  }
  SECTION("no credentials: 401") {
    auto c = client_for(loop, fake_config(*api, ""));
    HttpRequest req;
    req.path = "/api/v1/namespaces";
    auto r = fetch(loop, *c, req);
    REQUIRE(r.ok());
    CHECK(r->status == 401);
  }
  SECTION("cancel: no callback") {
    auto c = client_for(loop, fake_config(*api));
    HttpRequest req;
    req.path = "/api/v1/pods?watch=1&resourceVersion=0";
    req.stream = true;
    bool called = false;
    auto id = c->start(req, [&](Result<HttpResponse>) { called = true; }, [](std::string_view) {});
    REQUIRE(loop.run_until([&] { return api->open_watches("Pod") == 1; }));
    c->cancel(id);
    REQUIRE(loop.run_until([&] { return api->open_watches("Pod") == 0; }));
    CHECK(!called);
    CHECK(c->active_calls() == 0);
  }
}

TEST_CASE("k8s client: a plain http server works too", "[controller][k8s]") {
  FakeApiServerOptions o;
  o.tls = false;
  auto api = start_fake(o);
  REQUIRE(api->url().rfind("http://", 0) == 0);
  create_all_kinds(*api);
  TestLoop loop;
  RecordingSink sink;
  auto src = KubernetesSource::create(loop.get(), fake_config(*api), fast_options());
  REQUIRE(src.ok());
  (*src)->start(&sink);
  REQUIRE(loop.run_until([&] { return sink.synced_count == 1; }));
  CHECK(sink.objects.size() == 13);
}

TEST_CASE("k8s fake: the wire format of lists watches and errors", "[controller][k8s]") {
  auto api = start_fake();
  create_all_kinds(*api);
  TestLoop loop;
  auto c = client_for(loop, fake_config(*api));
  auto get = [&](const std::string& path) {
    HttpRequest req;
    req.path = path;
    auto r = fetch(loop, *c, req);
    REQUIRE(r.ok());
    return std::make_pair(r->status, nlohmann::json::parse(r->body));
  };
  auto [st, pods] = get("/api/v1/pods");
  CHECK(st == 200);
  CHECK(pods["kind"] == "PodList");
  CHECK(pods["apiVersion"] == "v1");
  CHECK(pods["metadata"]["resourceVersion"] == std::to_string(api->resource_version()));
  CHECK(!pods["items"][0].contains("kind"));  // built-in list items carry no type
  auto [st2, aps] = get("/apis/security.istio.io/v1/namespaces/shop/authorizationpolicies");
  CHECK(st2 == 200);
  CHECK(aps["kind"] == "AuthorizationPolicyList");
  CHECK(aps["items"][0]["kind"] == "AuthorizationPolicy");  // custom resources keep theirs
  auto [st3, ns] = get("/api/v1/namespaces/shop");
  CHECK(st3 == 200);
  CHECK(ns["kind"] == "Namespace");
  auto [st4, none] = get("/apis/example.com/v1/widgets");
  CHECK(st4 == 404);
  CHECK(none["kind"] == "Status");

  // A continue token minted before a compaction has expired.
  for (int i = 0; i < 3; ++i) {
    auto p = load_testdata("pod.json");
    p["metadata"]["name"] = "p" + std::to_string(i);
    REQUIRE(api->create(p).ok());
  }
  auto [st5, page] = get("/api/v1/pods?limit=2");
  CHECK(page["items"].size() == 2);
  CHECK(page["metadata"]["remainingItemCount"] == 2);
  std::string cont = page["metadata"]["continue"];
  auto p = load_testdata("pod.json");
  p["metadata"]["name"] = "p9";
  REQUIRE(api->create(p).ok());
  api->compact();
  auto [st6, gone] = get("/api/v1/pods?limit=2&continue=" + url_encode(cont));
  CHECK(st6 == 410);
  CHECK(gone["reason"] == "Expired");
}
