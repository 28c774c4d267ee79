// Issue 4 end to end: warren-controller pushing configuration and issuing
// certificates to the warren-nodes of a netns cluster (controller_mesh.h).
// Root only.
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <sstream>
#include <thread>

#include "harness.h"
#include "mesh.h"
#include "test_util.h"
#include "warren/certs.h"
#include "warren/csr.h"
#include "warren/push_proto.h"

using namespace warren::netns;
using warren::e2e::Process;
using warren::e2e::wait_until;
using nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// Certificate lifetime and how long to wait for a renewal in the renewal test.
// The CA backdates notBefore by 1 minute; the node renews at half of the life
// left when the certificate arrived (about 12 s here), so a short lifetime
// renews once per half-life, not in a loop.
constexpr const char* kRenewalTestTtl = "24s";
constexpr auto kRenewalWait = 30s;

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

long ms_since(Clock::time_point t0) {
  return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count());
}

// One echoed connection from a pod (podtool connect); true when echoed.
bool echoed(Cluster& c, const PodInfo& from, const std::string& to, int timeout_ms = 3000,
            std::string* output = nullptr) {
  auto r = c.exec_in_pod(from, {podtool_path(), "connect", "--to", to, "--send-marker", "ping",
                                "--expect-echo", "--timeout-ms", std::to_string(timeout_ms)});
  if (output) *output = r.output;
  return r.exit_code == 0;
}

std::string principal(const PodInfo& p) {
  return "cluster.local/ns/" + p.k8s_namespace + "/sa/" + p.service_account;
}

// A DENY AuthorizationPolicy in "default" from the given principals; no
// selector: it applies to every workload of the namespace, on every node.
json deny_policy(const std::string& name, const std::vector<std::string>& principals,
                 const std::string& app = "") {
  json source = {{"principals", principals}};
  json rule = {{"from", json::array({json{{"source", source}}})}};
  json spec = {{"action", "DENY"}, {"rules", json::array({rule})}};
  if (!app.empty()) spec["selector"] = {{"matchLabels", {{"app", app}}}};
  return {{"apiVersion", "security.istio.io/v1"},
          {"kind", "AuthorizationPolicy"},
          {"metadata", {{"name", name}, {"namespace", "default"}}},
          {"spec", spec}};
}

// The node's certificate counters and identities (controller section of
// /config_dump); empty when the node does not answer.
json certs_of(Mesh& m, int node) {
  auto st = m.controller_status(node);
  return st.contains("certificates") && st["certificates"].is_object() ? st["certificates"] : json::object();
}

// Two flows, each decided by the other node: A pod-1-1 → pod-2-1 (node-2
// enforces), B pod-2-2 → pod-1-2 (node-1 enforces).
struct Flows {
  Cluster& c;
  std::string a_to, b_to;
  explicit Flows(Cluster& cl)
      : c(cl), a_to(cl.pod(2, 1).ip + ":8080"), b_to(cl.pod(1, 2).ip + ":8080") {}
  bool a(int timeout_ms = 3000) { return echoed(c, c.pod(1, 1), a_to, timeout_ms); }
  bool b(int timeout_ms = 3000) { return echoed(c, c.pod(2, 2), b_to, timeout_ms); }
};

// Tries both flows until each shows `want` (true: echoed, false: refused) or
// the deadline passes; returns when each first did (ms from t0), -1 if not.
std::pair<long, long> until_behaviour(Flows& f, Clock::time_point t0, bool want_a, bool want_b,
                                      std::chrono::milliseconds deadline) {
  long ta = -1, tb = -1;
  while (Clock::now() - t0 < deadline && (ta < 0 || tb < 0)) {
    if (ta < 0 && f.a(400) == want_a) ta = ms_since(t0);
    if (tb < 0 && f.b(400) == want_b) tb = ms_since(t0);
  }
  return {ta, tb};
}

// The CSR a node would send, signed by a fresh key.
std::string csr_for(const std::string& spiffe_id) {
  auto key = warren::certs::generate_p256_key();
  REQUIRE(key.ok());
  auto csr = warren::certs::make_csr_pem(key->get(), spiffe_id);
  REQUIRE(csr.ok());
  return *csr;
}

struct SignAnswer {
  int status = 0;
  std::string body, error;
};

// POST /warren.ca.v1/Sign to the controller from inside a node's netns, the
// way warren-node's ControllerClient does (HTTP/2 over TLS, bearer token,
// x-warren-node).
SignAnswer sign_request(const std::string& netns_path, const std::string& ip, uint16_t port,
                        const std::string& token, const std::string& node, const std::string& identity,
                        const std::string& csr) {
  SignAnswer a;
  std::thread t([&] {
    int ns = ::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) {
      a.error = "setns failed";
      if (ns >= 0) ::close(ns);
      return;
    }
    ::close(ns);
    warren::e2e::TlsOpts o;  // no client certificate: the token authenticates
    auto tls = std::make_unique<warren::e2e::TlsClient>("", ip, port, o);
    if (!tls->ok()) {
      a.error = tls->error();
      return;
    }
    warren::e2e::H2Client h2(std::move(tls));
    if (!h2.handshake()) {
      a.error = "HTTP/2 handshake";
      return;
    }
    std::string body = json{{"identity", identity}, {"csr", csr}}.dump();
    h2.send_headers(1, {{":method", "POST"},
                        {":scheme", "https"},
                        {":authority", ip + ":" + std::to_string(port)},
                        {":path", warren::push::kSignPath},
                        {"authorization", "Bearer " + token},
                        {"x-warren-node", node},
                        {"content-type", "application/json"}});
    h2.send(warren::e2e::frame(warren::e2e::kData, warren::e2e::kEndStream, 1, body));
    auto deadline = Clock::now() + 5s;
    while (Clock::now() < deadline) {
      auto f = h2.next(1s);
      if (!f) continue;
      if (f->sid != 1) continue;
      if (f->type == warren::e2e::kHeaders)
        for (auto& [k, v] : h2.decode(f->payload))
          if (k == ":status") a.status = std::stoi(v);
      if (f->type == warren::e2e::kData) a.body += f->payload;
      if (f->type == warren::e2e::kRstStream) break;
      if (f->flags & warren::e2e::kEndStream) break;
    }
  });
  t.join();
  return a;
}

}  // namespace

TEST_CASE("controller: a policy file edit changes behaviour on both nodes within 1 s") {
  auto c = Cluster::create(topo(2, 2));
  auto s12 = serve(*c, c->pod(1, 2), {"--port", "8080", "--echo"}, "echo-1-2.log");
  auto s21 = serve(*c, c->pod(2, 1), {"--port", "8080", "--echo"}, "echo-2-1.log");
  MeshOptions o;
  o.controller = true;
  Mesh mesh(*c, o);
  auto& ctl = mesh.controller();
  REQUIRE(ctl.wait_acked(2));
  Flows f(*c);
  REQUIRE(f.a());
  REQUIRE(f.b());
  double rej1 = mesh.metric(1, "warren_connections_rejected_total");
  double rej2 = mesh.metric(2, "warren_connections_rejected_total");

  // 1. A new file: DENY from pod-1-1 and pod-2-2, refused by node-2 and node-1.
  uint64_t v0 = ctl.version();
  auto t0 = Clock::now();
  ctl.write_manifest("deny.yaml", to_yaml(deny_policy("deny-clients", {principal(c->pod(1, 1)),
                                                                        principal(c->pod(2, 2))})));
  auto [ta, tb] = until_behaviour(f, t0, false, false, 1s);
  long acked = ctl.wait_acked(2, v0 + 1, 2s) ? ms_since(t0) : -1;
  std::printf("policy file written -> refused: flow to node-2 %ld ms, flow to node-1 %ld ms "
              "(both nodes acked by %ld ms)\n", ta, tb, acked);
  CHECK(ta >= 0);
  CHECK(tb >= 0);
  REQUIRE((ta >= 0 && tb >= 0));
  // It was the policy: both nodes counted refusals, and it stays refused.
  CHECK(mesh.metric(2, "warren_connections_rejected_total") > rej2);
  CHECK(mesh.metric(1, "warren_connections_rejected_total") > rej1);
  CHECK_FALSE(f.a());
  CHECK_FALSE(f.b());

  // 2. The same file edited: pod-2-2 no longer denied (node-1 lets B through).
  t0 = Clock::now();
  ctl.write_manifest("deny.yaml", to_yaml(deny_policy("deny-clients", {principal(c->pod(1, 1))})));
  auto [ta2, tb2] = until_behaviour(f, t0, false, true, 1s);
  std::printf("policy file edited -> flow to node-1 allowed again after %ld ms (flow to node-2 "
              "still refused at %ld ms)\n", tb2, ta2);
  CHECK(tb2 >= 0);
  CHECK(ta2 >= 0);

  // 3. The file removed: A allowed again too.
  t0 = Clock::now();
  ctl.remove_manifest("deny.yaml");
  auto [ta3, tb3] = until_behaviour(f, t0, true, true, 1s);
  std::printf("policy file removed -> flow to node-2 allowed again after %ld ms\n", ta3);
  CHECK(ta3 >= 0);
  CHECK(tb3 >= 0);
  CHECK(ctl.metric("warren_push_acks_total", {{"result", "nack"}}) == 0);
}

TEST_CASE("controller: killed and restarted while traffic and certificates keep working") {
  auto c = Cluster::create(topo(2, 2));
  auto s12 = serve(*c, c->pod(1, 2), {"--port", "8080", "--echo"}, "echo-1-2.log");
  auto s21 = serve(*c, c->pod(2, 1), {"--port", "8080", "--echo"}, "echo-2-1.log");
  MeshOptions o;
  o.controller = true;
  Mesh mesh(*c, o);
  auto& ctl = mesh.controller();
  Flows f(*c);
  REQUIRE(f.a());
  REQUIRE(f.b());
  std::string root_before = warren::e2e::read_file(ctl.ca_file());
  std::string epoch_before = mesh.controller_status(1).value("epoch", "");
  REQUIRE(!epoch_before.empty());

  // A connection that lives through the whole outage.
  std::string stop = c->dir() + "/stop-long";
  auto longc = c->spawn_in_pod(c->pod(1, 1), {podtool_path(), "long-lived", "--to", f.a_to,
                                              "--interval-ms", "50", "--duration", "120",
                                              "--stop-file", stop},
                               "long.log");
  REQUIRE(wait_until([&] { return contains(longc->log(), "peername"); }, 5s));

  ctl.kill();
  REQUIRE(wait_until([&] {
    return !mesh.controller_status(1).value("connected", true) &&
           !mesh.controller_status(2).value("connected", true);
  }, 5s));
  // While the controller is away: new connections both ways, for a while
  // (the nodes retry with backoff meanwhile), with the certificates they hold.
  auto outage = Clock::now();
  int during = 0;
  while (Clock::now() - outage < 3s) {
    INFO("connection " << during << " during the outage");
    REQUIRE(f.a());
    REQUIRE(f.b());
    during++;
  }
  CHECK(longc->alive());
  for (int n : {1, 2}) {
    auto st = mesh.controller_status(n);
    CHECK_FALSE(st.value("connected", true));
    CHECK(!st.value("lastError", "").empty());
  }

  long outage_ms = ms_since(outage);
  auto t0 = Clock::now();
  ctl.start();
  long ready = ms_since(t0);
  REQUIRE(ctl.wait_acked(2, 0, 15s));
  long recovered = ms_since(t0);
  std::printf("controller restarted after a %ld ms outage (%d connection pairs made meanwhile): "
              "ready after %ld ms, both nodes reconnected and acked its configuration after %ld ms\n",
              outage_ms, during, ready, recovered);
  CHECK(warren::e2e::read_file(ctl.ca_file()) == root_before);  // same CA root
  for (int n : {1, 2}) {
    auto st = mesh.controller_status(n);
    CHECK(st.value("connected", false));
    CHECK(st.value("epoch", "") != epoch_before);  // a new controller process
  }
  REQUIRE(f.a());
  REQUIRE(f.b());

  // A further policy edit applies: pod-2-2 may no longer call pod-1-2.
  uint64_t v = ctl.version();
  ctl.write_manifest("deny.yaml", to_yaml(deny_policy("deny-b", {principal(c->pod(2, 2))}, "pod-1-2")));
  REQUIRE(ctl.wait_acked(2, v + 1));
  CHECK(wait_until([&] { return !f.b(1000); }, 5s));
  CHECK(f.a());

  // And the restarted CA issues certificates the other node trusts: pod-1-2
  // now runs as a new service account, which node-1 has to ask for.
  std::string new_sa = "sa-1-2-next";
  std::string pods = ctl.read_manifest("10-pods.yaml");
  auto at = pods.find("serviceAccountName: " + c->pod(1, 2).service_account + "\n");
  REQUIRE(at != std::string::npos);
  pods.replace(at, std::string("serviceAccountName: " + c->pod(1, 2).service_account).size(),
               "serviceAccountName: " + new_sa);
  uint64_t v2 = ctl.version();
  ctl.write_manifest("10-pods.yaml", pods);
  REQUIRE(ctl.wait_acked(2, v2 + 1));
  std::string new_id = "spiffe://cluster.local/ns/default/sa/" + new_sa;
  CHECK(wait_until([&] {
    for (auto& id : certs_of(mesh, 1).value("identities", json::array()))
      if (id.value("identity", "") == new_id && id.value("installed", false)) return true;
    return false;
  }, 10s));
  // pod-2-1 (node-2) → pod-1-2: node-2 checks pod-1-2's new certificate
  // against the root it has held since before the restart.
  CHECK(echoed(*c, c->pod(2, 1), f.b_to));
  CHECK(ctl.metric("warren_ca_requests_total", {{"result", "signed"}}) >= 1);

  warren::e2e::write_file_atomic(stop, "stop");
  REQUIRE(longc->wait_exit(10s));
  INFO(longc->log());
  CHECK(longc->exit_code() == 0);
  auto last = podtool_json(longc->log());
  CHECK(last.value("ok", false));
  std::printf("long-lived connection: %lld echoed lines across the outage, none lost\n",
              last.value("lines", 0LL));
}

TEST_CASE("controller: a node asking for an identity that is not on it is refused") {
  auto c = Cluster::create(topo(2, 1));
  MeshOptions o;
  o.controller = true;
  Mesh mesh(*c, o);
  auto& ctl = mesh.controller();
  const auto& mine = c->pod(1, 1);
  const auto& other = c->pod(2, 1);
  std::string mine_id = "spiffe://" + principal(mine), other_id = "spiffe://" + principal(other);
  double refused0 = ctl.metric("warren_ca_requests_total", {{"result", "refused"}});

  // node-1, with its own token, for the identity of a pod on node-2.
  auto a = sign_request(c->node(1).netns_path, Controller::kIp, Controller::kPushPort, ctl.token(1),
                        "node-1", other_id, csr_for(other_id));
  INFO(a.error << " " << a.body);
  CHECK(a.status == 403);
  CHECK(contains(a.body, "no pod running as " + other_id + " is scheduled on node node-1"));
  CHECK(ctl.metric("warren_ca_requests_total", {{"result", "refused"}}) == refused0 + 1);
  CHECK(wait_until([&] {
    return contains(ctl.log(), "ca: refused a certificate for node \"node-1\"") &&
           contains(ctl.log(), "no pod running as " + other_id);
  }, 2s));

  // node-1's token presented as node-2: refused before the CSR is looked at.
  auto b = sign_request(c->node(1).netns_path, Controller::kIp, Controller::kPushPort, ctl.token(1),
                        "node-2", other_id, csr_for(other_id));
  INFO(b.error << " " << b.body);
  CHECK(b.status == 401);
  CHECK(contains(b.body, "belongs to node node-1"));
  CHECK(ctl.metric("warren_ca_requests_total", {{"result", "refused"}}) == refused0 + 2);

  // The same client asking for node-1's own pod gets a chain: the refusals
  // above are the controller's authorization, not a broken request.
  auto ok = sign_request(c->node(1).netns_path, Controller::kIp, Controller::kPushPort, ctl.token(1),
                         "node-1", mine_id, csr_for(mine_id));
  INFO(ok.error << " " << ok.body);
  CHECK(ok.status == 200);
  CHECK(contains(ok.body, "BEGIN CERTIFICATE"));

  // Nothing of this reached the real node-1: it holds only its own pod's identity.
  auto ids = certs_of(mesh, 1).value("identities", json::array());
  REQUIRE(ids.size() == 1);
  CHECK(ids[0].value("identity", "") == mine_id);
}

TEST_CASE("controller: certificate renewal under traffic drops nothing") {
  auto c = Cluster::create(topo(2, 1));
  auto server = serve(*c, c->pod(2, 1), {"--port", "8080", "--echo"}, "echo.log");
  MeshOptions o;
  o.controller = true;
  o.controller_options.cert_ttl = kRenewalTestTtl;
  Mesh mesh(*c, o);
  const auto& client = c->pod(1, 1);
  std::string to = c->pod(2, 1).ip + ":8080";

  auto renewed = [&](int n) { return certs_of(mesh, n).value("renewed", 0ull); };
  auto not_after = [&](int n) {
    auto ids = certs_of(mesh, n).value("identities", json::array());
    return ids.empty() ? std::string() : ids[0].value("notAfter", "");
  };
  uint64_t r1 = renewed(1), r2 = renewed(2);
  std::string na1 = not_after(1), na2 = not_after(2);

  std::string stop = c->dir() + "/stop-long";
  auto longc = c->spawn_in_pod(client, {podtool_path(), "long-lived", "--to", to, "--interval-ms",
                                        "100", "--duration", "300", "--stop-file", stop},
                               "long.log");
  REQUIRE(wait_until([&] { return contains(longc->log(), "peername"); }, 5s));
  // A stream of new connections, one after the other, until told to stop.
  std::atomic<bool> done{false};
  std::atomic<int> ok{0}, failed{0};
  std::string first_failure;
  std::thread stream([&] {
    while (!done) {
      std::string out;
      if (echoed(*c, client, to, 5000, &out)) {
        ok++;
      } else if (failed++ == 0) {
        first_failure = out;
      }
      std::this_thread::sleep_for(100ms);
    }
  });
  auto t0 = Clock::now();
  bool both = wait_until([&] { return renewed(1) > r1 && renewed(2) > r2; }, kRenewalWait, 200ms);
  long renewal_ms = ms_since(t0);
  // A little more traffic on the renewed certificates.
  std::this_thread::sleep_for(1500ms);
  done = true;
  stream.join();
  warren::e2e::write_file_atomic(stop, "stop");
  REQUIRE(longc->wait_exit(10s));

  uint64_t n1 = renewed(1), n2 = renewed(2);
  std::printf("certificate renewal (--cert-ttl %s): renewed on node-1 %llu -> %llu, node-2 %llu -> "
              "%llu within %ld ms; %d new connections ok, %d failed; notAfter node-1 %s -> %s\n",
              kRenewalTestTtl, static_cast<unsigned long long>(r1), static_cast<unsigned long long>(n1),
              static_cast<unsigned long long>(r2), static_cast<unsigned long long>(n2), renewal_ms,
              ok.load(), failed.load(), na1.c_str(), not_after(1).c_str());
  INFO(first_failure);
  INFO(longc->log());
  CHECK(both);
  CHECK(n1 > r1);
  CHECK(n2 > r2);
  // About 15 s of a 24 s lifetime: one renewal per node, two at most with
  // jitter; a storm would be hundreds.
  CHECK(n1 - r1 <= 3);
  CHECK(n2 - r2 <= 3);
  CHECK(not_after(1) != na1);
  CHECK(not_after(2) != na2);
  CHECK(failed == 0);
  CHECK(ok > 0);
  CHECK(longc->exit_code() == 0);
  CHECK(podtool_json(longc->log()).value("ok", false));
}

TEST_CASE("controller: pods outside the mesh get plain TCP and reach enrolled pods") {
  // pod-2-1 is labelled warren.io/dataplane-mode=none: the controller sends it
  // as protocol NONE, so node-1 connects to it directly instead of dialling
  // HBONE on 15008, where nothing listens for a pod outside the mesh.
  auto c = Cluster::create(topo(2, 2));
  auto out = serve(*c, c->pod(2, 1), {"--port", "8080", "--echo"}, "echo-2-1.log");
  auto in = serve(*c, c->pod(1, 2), {"--port", "8080", "--echo"}, "echo-1-2.log");
  MeshOptions o;
  o.controller = true;
  o.opted_out = {c->pod(2, 1).name};
  Mesh mesh(*c, o);
  REQUIRE(mesh.controller().wait_acked(2));

  std::string proto;
  auto dump = mesh.config_dump(1);
  for (auto& w : dump.value("config", json::object()).value("workloads", json::array()))
    if (w.value("name", "") == c->pod(2, 1).name) proto = w.value("protocol", "");
  CHECK(proto == "NONE");

  std::string output;
  // Enrolled → outside the mesh: captured by node-1, sent as plain TCP.
  bool out_ok = echoed(*c, c->pod(1, 1), c->pod(2, 1).ip + ":8080", 3000, &output);
  INFO(output);
  CHECK(out_ok);
  // Outside the mesh → enrolled: plaintext inbound on node-1, allowed (PERMISSIVE).
  CHECK(echoed(*c, c->pod(2, 1), c->pod(1, 2).ip + ":8080", 3000, &output));
  CHECK(mesh.metric(1, "istio_tcp_connections_opened_total",
                    {{"reporter", "destination"}, {"connection_security_policy", "none"}}) == 1);
  // Enrolled → enrolled still goes over HBONE.
  CHECK(echoed(*c, c->pod(2, 2), c->pod(1, 2).ip + ":8080", 3000, &output));
  CHECK(mesh.metric(1, "istio_tcp_connections_opened_total",
                    {{"reporter", "destination"}, {"connection_security_policy", "mutual_tls"}}) == 1);
}
