// Kubernetes configuration (kubeconfig, in-cluster) and the API helpers.
#include <stdlib.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <optional>

#include "fake_apiserver.h"
#include "k8s/api.h"
#include "k8s/kube_source.h"
#include "k8s/kubeconfig.h"
#include "k8s_test_support.h"

using namespace warren::fakes;
using namespace warren::controller::k8s;
using warren::Errc;

namespace {

const char* kKubeconfig = R"(apiVersion: v1
kind: Config
current-context: kind-warren
preferences: {}
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUNmYWtlCi0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K
    server: https://127.0.0.1:36789
  name: kind-warren
- cluster:
    certificate-authority: certs/ca.crt
    server: https://prod.example.com:6443/
    tls-server-name: kubernetes.default
  name: prod
- cluster:
    insecure-skip-tls-verify: true
    server: https://10.0.0.1
  name: lab
contexts:
- context:
    cluster: kind-warren
    user: kind-warren
  name: kind-warren
- context:
    cluster: prod
    namespace: warren-system
    user: prod-admin
  name: prod
- context:
    cluster: lab
    user: lab-token-file
  name: lab
- context:
    cluster: lab
    user: gke
  name: gke
- context:
    cluster: lab
    user: half
  name: half
users:
- name: kind-warren
  user:
    client-certificate-data: Y2VydA==
    client-key-data: a2V5
- name: prod-admin
  user:
    client-certificate: /etc/warren/admin.crt
    client-key: admin.key
    token: abc.def.ghi
- name: lab-token-file
  user:
    tokenFile: tokens/lab
- name: gke
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: gke-gcloud-auth-plugin
- name: half
  user:
    client-certificate-data: Y2VydA==
)";

// Sets an environment variable for the scope of a test.
struct Env {
  std::string name;
  std::optional<std::string> old;
  Env(std::string n, const char* value) : name(std::move(n)) {
    if (const char* o = getenv(name.c_str())) old = o;
    if (value) {
      setenv(name.c_str(), value, 1);
    } else {
      unsetenv(name.c_str());
    }
  }
  ~Env() {
    if (old) {
      setenv(name.c_str(), old->c_str(), 1);
    } else {
      unsetenv(name.c_str());
    }
  }
};

}  // namespace

TEST_CASE("k8s kubeconfig: current-context with embedded data", "[controller][k8s]") {
  auto c = parse_kubeconfig(kKubeconfig, "/home/me/.kube");
  REQUIRE(c.ok());
  CHECK(c->server == "https://127.0.0.1:36789");
  CHECK(c->ca_pem == "-----BEGIN CERTIFICATE-----\nMIICfake\n-----END CERTIFICATE-----\n");
  CHECK(c->ca_file.empty());
  CHECK(c->client_cert_pem == "cert");
  CHECK(c->client_key_pem == "key");
  CHECK(!c->insecure);
  CHECK(c->token.empty());
  CHECK(c->default_namespace.empty());
}

TEST_CASE("k8s kubeconfig: a named context with files and a token", "[controller][k8s]") {
  auto c = parse_kubeconfig(kKubeconfig, "/home/me/.kube", "prod");
  REQUIRE(c.ok());
  CHECK(c->server == "https://prod.example.com:6443");  // trailing slash dropped
  CHECK(c->ca_file == "/home/me/.kube/certs/ca.crt");   // relative to the kubeconfig
  CHECK(c->client_cert_file == "/etc/warren/admin.crt");
  CHECK(c->client_key_file == "/home/me/.kube/admin.key");
  CHECK(c->token == "abc.def.ghi");
  CHECK(c->tls_server_name == "kubernetes.default");
  CHECK(c->default_namespace == "warren-system");

  auto lab = parse_kubeconfig(kKubeconfig, "/k", "lab");
  REQUIRE(lab.ok());
  CHECK(lab->insecure);
  CHECK(lab->token_file == "/k/tokens/lab");
}

TEST_CASE("k8s kubeconfig: errors say what is wrong", "[controller][k8s]") {
  auto missing = parse_kubeconfig(kKubeconfig, "/k", "nope");
  REQUIRE(!missing.ok());
  CHECK(missing.error().message.find("context \"nope\" not found") != std::string::npos);
  auto gke = parse_kubeconfig(kKubeconfig, "/k", "gke");
  REQUIRE(!gke.ok());
  CHECK(gke.error().message.find("exec") != std::string::npos);
  auto half = parse_kubeconfig(kKubeconfig, "/k", "half");
  REQUIRE(!half.ok());
  CHECK(half.error().message.find("together") != std::string::npos);
  CHECK(!parse_kubeconfig("current-context: x\n", "/k").ok());
  CHECK(!parse_kubeconfig("- just\n- a list\n", "/k").ok());
  CHECK(!parse_kubeconfig(R"(current-context: c
contexts: [{name: c, context: {cluster: k}}]
clusters: [{name: k, cluster: {server: "ftp://x"}}]
)", "/k").ok());
  auto bad64 = parse_kubeconfig(R"(current-context: c
contexts: [{name: c, context: {cluster: k}}]
clusters: [{name: k, cluster: {server: "https://x", certificate-authority-data: "%%%"}}]
)", "/k");
  REQUIRE(!bad64.ok());
  CHECK(bad64.error().message.find("certificate-authority-data") != std::string::npos);
  auto nofile = load_kubeconfig("/nonexistent/kubeconfig");
  REQUIRE(!nofile.ok());
  CHECK(nofile.error().message.find("/nonexistent/kubeconfig") != std::string::npos);
}

TEST_CASE("k8s kubeconfig: in-cluster configuration", "[controller][k8s]") {
  TempDir dir;
  InClusterOptions o;
  o.token_file = dir.write("token", "eyJhbGciOi.sa-token\n");
  o.ca_file = dir.write("ca.crt", "-----BEGIN CERTIFICATE-----\n");
  o.namespace_file = dir.write("namespace", "warren-system\n");
  o.host = "10.96.0.1";
  o.port = "443";
  auto c = in_cluster_config(o);
  REQUIRE(c.ok());
  CHECK(c->server == "https://10.96.0.1:443");
  CHECK(c->token_file == o.token_file);
  CHECK(c->token.empty());  // read (and re-read) by the client
  CHECK(c->ca_file == o.ca_file);
  CHECK(c->default_namespace == "warren-system");

  o.host = "fd00:10:96::1";
  CHECK(in_cluster_config(o)->server == "https://[fd00:10:96::1]:443");

  SECTION("from the environment") {
    Env h("KUBERNETES_SERVICE_HOST", "10.96.0.10");
    Env p("KUBERNETES_SERVICE_PORT", "6443");
    o.host.clear();
    o.port.clear();
    CHECK(in_cluster_config(o)->server == "https://10.96.0.10:6443");
    ConfigOptions co;
    co.in_cluster = o;
    auto auto_cfg = load_cluster_config(co);
    REQUIRE(auto_cfg.ok());
    CHECK(auto_cfg->server == "https://10.96.0.10:6443");
  }
  SECTION("not in a pod") {
    Env h("KUBERNETES_SERVICE_HOST", nullptr);
    o.host.clear();
    auto r = in_cluster_config(o);
    REQUIRE(!r.ok());
    CHECK(r.error().code == Errc::kNotFound);
  }
  SECTION("no token") {
    o.token_file = dir.file("missing");
    auto r = in_cluster_config(o);
    REQUIRE(!r.ok());
    CHECK(r.error().message.find("token") != std::string::npos);
  }
}

TEST_CASE("k8s kubeconfig: load_cluster_config picks the source", "[controller][k8s]") {
  TempDir dir;
  std::string kc = dir.write("config", kKubeconfig);
  Env h("KUBERNETES_SERVICE_HOST", nullptr);
  SECTION("explicit file and context") {
    ConfigOptions o;
    o.kubeconfig = kc;
    o.context = "prod";
    auto c = load_cluster_config(o);
    REQUIRE(c.ok());
    CHECK(c->ca_file == dir.path() + "/certs/ca.crt");
  }
  SECTION("$KUBECONFIG: the first of several") {
    Env k("KUBECONFIG", (kc + ":/other/config").c_str());
    auto c = load_cluster_config({});
    REQUIRE(c.ok());
    CHECK(c->server == "https://127.0.0.1:36789");
  }
  SECTION("$HOME/.kube/config") {
    Env k("KUBECONFIG", nullptr);
    Env home("HOME", dir.path().c_str());
    std::filesystem::create_directory(dir.file(".kube"));
    dir.write(".kube/config", kKubeconfig);
    auto c = load_cluster_config({});
    REQUIRE(c.ok());
    CHECK(c->server == "https://127.0.0.1:36789");
  }
  SECTION("nothing") {
    Env k("KUBECONFIG", nullptr);
    Env home("HOME", dir.path().c_str());
    auto c = load_cluster_config({});
    REQUIRE(!c.ok());
    CHECK(c.error().code == Errc::kNotFound);
  }
}

TEST_CASE("k8s kubeconfig: a source from a kubeconfig file syncs over HTTPS", "[controller][k8s]") {
  auto api = FakeApiServer::start({});
  REQUIRE(api.ok());
  create_all_kinds(**api);
  TempDir dir;
  SECTION("CA and token inline") {
    std::string kc = dir.write("kubeconfig", (*api)->kubeconfig("test-token"));
    auto cfg = load_kubeconfig(kc);
    REQUIRE(cfg.ok());
    TestLoop loop;
    RecordingSink sink;
    auto src = KubernetesSource::create(loop.get(), *cfg, fast_options());
    REQUIRE(src.ok());
    (*src)->start(&sink);
    REQUIRE(loop.run_until([&] { return sink.synced_count == 1; }));
    CHECK(sink.objects.size() == 13);
  }
  SECTION("CA file and client certificate files with relative paths") {
    auto [cert, key] = (*api)->issue_client_cert("admin");
    std::filesystem::create_directory(dir.file("pki"));
    dir.write("pki/ca.crt", (*api)->ca_pem());
    dir.write("pki/admin.crt", cert);
    dir.write("pki/admin.key", key);
    std::string kc = dir.write("kubeconfig", R"(apiVersion: v1
kind: Config
current-context: fake
clusters: [{name: fake, cluster: {server: ")" + (*api)->url() + R"(", certificate-authority: pki/ca.crt}}]
users: [{name: admin, user: {client-certificate: pki/admin.crt, client-key: pki/admin.key}}]
contexts: [{name: fake, context: {cluster: fake, user: admin, namespace: shop}}]
)");
    auto cfg = load_kubeconfig(kc);
    REQUIRE(cfg.ok());
    CHECK(cfg->default_namespace == "shop");
    TestLoop loop;
    RecordingSink sink;
    auto src = KubernetesSource::create(loop.get(), *cfg, fast_options());
    REQUIRE(src.ok());
    (*src)->start(&sink);
    REQUIRE(loop.run_until([&] { return sink.synced_count == 1; }));
    CHECK(sink.objects.size() == 13);
  }
  SECTION("tls-server-name: the name checked differs from the address dialled") {
    auto cfg = fake_config(**api);
    // Only in the certificate (and not resolvable): the name is checked, the
    // connection goes to the server's address.
    cfg.tls_server_name = "kubernetes.default.svc";
    TestLoop loop;
    RecordingSink sink;
    auto src = KubernetesSource::create(loop.get(), cfg, fast_options());
    REQUIRE(src.ok());
    (*src)->start(&sink);
    REQUIRE(loop.run_until([&] { return sink.synced_count == 1; }));

    cfg.tls_server_name = "wrong.example";
    auto c = Client::create(loop.get(), cfg);
    REQUIRE(c.ok());
    std::optional<warren::Result<HttpResponse>> r;
    HttpRequest req;
    req.path = "/api/v1/namespaces";
    (*c)->start(req, [&](warren::Result<HttpResponse> x) { r.emplace(std::move(x)); });
    REQUIRE(loop.run_until([&] { return r.has_value(); }));
    REQUIRE(!r->ok());
    CHECK(r->error().code == Errc::kTls);
  }
}

TEST_CASE("k8s api: paths and encodings", "[controller][k8s]") {
  CHECK(collection_path(*find_kind("Pod")) == "/api/v1/pods");
  CHECK(collection_path(*find_kind("Pod"), "shop") == "/api/v1/namespaces/shop/pods");
  CHECK(object_path(*find_kind("Node"), "ignored", "n1") == "/api/v1/nodes/n1");
  CHECK(object_path(*find_kind("HTTPRoute"), "shop", "r") ==
        "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/r");
  CHECK(collection_path(*find_kind("EndpointSlice")) == "/apis/discovery.k8s.io/v1/endpointslices");
  CHECK(find_kind("AuthorizationPolicy")->api_version() == "security.istio.io/v1");
  CHECK(find_kind("Widget") == nullptr);
  CHECK(watched_kinds().size() == 13);

  for (const std::string& s :
       std::vector<std::string>{"", "a", "ab", "abc", "abcd", std::string("\0\xff\x10", 3)}) {
    auto d = base64_decode(base64_encode(s));
    REQUIRE(d.ok());
    CHECK(*d == s);
  }
  CHECK(base64_encode("hello") == "aGVsbG8=");
  CHECK(base64_decode("aGVs\nbG8=").value() == "hello");
  CHECK(!base64_decode("aGVsbG8=x").ok());
  CHECK(url_encode("a b/c=d") == "a%20b%2Fc%3Dd");
  CHECK(micro_time(std::chrono::system_clock::time_point(std::chrono::microseconds(1714641247123456))) ==
        "2024-05-02T09:14:07.123456Z");
  CHECK(rfc3339(std::chrono::system_clock::time_point(std::chrono::seconds(1714641247))) ==
        "2024-05-02T09:14:07Z");
  auto st = parse_status_body(R"({"kind":"Status","code":410,"reason":"Expired","message":"too old"})");
  CHECK(st.code == 410);
  CHECK(st.reason == "Expired");
  CHECK(http_error("watch pods", 410, R"({"kind":"Status","code":410,"reason":"Expired","message":"too old"})")
            .message == "watch pods: HTTP 410 Expired: too old");
}
