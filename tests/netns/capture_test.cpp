// Issue 3 end to end: eBPF capture of pods on nodes built as network
// namespaces, with one warren-node per node in in-pod mode. Root only.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "harness.h"
#include "test_util.h"
#include "mesh.h"

using namespace warren::netns;
using warren::e2e::Process;
using warren::e2e::wait_until;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {



// podtool connect from a pod; the JSON result (null on failure).
json connect(Cluster& c, const PodInfo& from, const std::string& to, const std::string& marker = "ping",
             int timeout_ms = 3000) {
  auto r = c.exec_in_pod(from, {podtool_path(), "connect", "--to", to, "--send-marker", marker,
                                "--expect-echo", "--timeout-ms", std::to_string(timeout_ms)});
  INFO(r.output);
  return r.exit_code == 0 ? podtool_json(r.output) : json();
}

// Peers the echo server reported, one per connection.
std::vector<std::string> peers_seen(const Process& s) {
  std::vector<std::string> out;
  std::istringstream in(s.log());
  for (std::string line; std::getline(in, line);) {
    auto j = json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("peer")) out.push_back(j["peer"]);
  }
  return out;
}

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

// The echo server reports a connection once it has seen its end, which can be
// a moment after the client returned: wait for the count to reach `n`.
std::vector<std::string> wait_peers(const Process& s, size_t n) {
  wait_until([&] { return peers_seen(s).size() >= n; }, 3s, 20ms);
  std::this_thread::sleep_for(100ms);  // and nothing more arriving
  return peers_seen(s);
}

// tcpdump on the fabric bridge (the inter-node link), writing a pcap.
struct Capture {
  std::unique_ptr<Process> proc;
  std::string file;
  Capture(Cluster& c, const std::string& name) {
    file = c.dir() + "/" + name + ".pcap";
    proc = std::make_unique<Process>(
        std::vector<std::string>{nsexec_path(), "--netns", c.fabric_netns_path(), "--", "tcpdump",
                                 "-Z", "root", "--immediate-mode", "-i", "fab-n1", "-U", "-s", "0", "-w", file},
        c.log_path(name + ".log"));
    REQUIRE(wait_until([&] { return proc->log().find("listening on") != std::string::npos; }, 5s));
  }
  std::string stop() {
    std::this_thread::sleep_for(300ms);  // let -U flush the last packets
    proc->stop();
    return warren::e2e::read_file(file);
  }
};

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

std::string marker(const std::string& what) {
  return "WARREN-MARKER-" + what + "-" + std::to_string(::getpid());
}

json strict_mesh_wide() {
  return json::array({{{"apiVersion", "security.istio.io/v1"},
                       {"kind", "PeerAuthentication"},
                       {"metadata", {{"name", "default"}, {"namespace", "istio-system"}}},
                       {"spec", {{"mtls", {{"mode", "STRICT"}}}}}}});
}

}  // namespace

TEST_CASE("capture: outbound to a pod and to a mesh-only VIP keeps the original destination") {
  auto c = Cluster::create(topo(2, 2));
  MeshOptions o;
  o.services.push_back({"echo", "10.96.0.10", 80, 8080, {"pod-2-1"}});
  auto echo21 = serve(*c, c->pod(2, 1), {"--port", "8080", "--echo"}, "echo21.log");
  auto echo12 = serve(*c, c->pod(1, 2), {"--port", "8080", "--echo"}, "echo12.log");
  {
    Mesh mesh(*c, o);
    INFO(mesh.node_log(1));
    for (auto& p : c->all_pods()) REQUIRE(mesh.wait_enrolled(p));
    const auto& client = c->pod(1, 1);
    uint64_t captured0 = mesh.bpf_stat(1, "connect_captured");

    auto same = connect(*c, client, c->pod(1, 2).ip + ":8080");
    REQUIRE(same.is_object());
    CHECK(same["peername"] == c->pod(1, 2).ip + ":8080");  // getpeername: original destination
    CHECK(starts_with(same["sockname"].get<std::string>(), client.ip + ":"));  // getsockname: the pod's own
    auto cross = connect(*c, client, c->pod(2, 1).ip + ":8080");
    REQUIRE(cross.is_object());
    CHECK(cross["peername"] == c->pod(2, 1).ip + ":8080");
    auto vip = connect(*c, client, "10.96.0.10:80");
    REQUIRE(vip.is_object());
    CHECK(vip["peername"] == "10.96.0.10:80");

    CHECK(mesh.bpf_stat(1, "connect_captured") - captured0 == 3);
    CHECK(mesh.bpf_stat(1, "getpeername_rewritten") >= 3);
    // The proxy saw the VIP (the service label) and resolved it to pod-2-1.
    CHECK(mesh.metric(1, "istio_tcp_connections_opened_total",
                      {{"reporter", "source"}, {"destination_service", "echo.default.svc.cluster.local"},
                       {"connection_security_policy", "mutual_tls"}}) >= 1);
    // The application on the other side sees the client pod's own address.
    for (auto& p : wait_peers(*echo21, 2)) CHECK(starts_with(p, client.ip + ":"));
    for (auto& p : wait_peers(*echo12, 1)) CHECK(starts_with(p, client.ip + ":"));
  }
  // Control run: with the programs gone (Mesh removed them) the VIP exists nowhere.
  auto r = c->exec_in_pod(c->pod(1, 1), {podtool_path(), "connect", "--to", "10.96.0.10:80",
                                         "--timeout-ms", "1500"});
  CHECK(r.exit_code != 0);
  auto direct = connect(*c, c->pod(1, 1), c->pod(1, 2).ip + ":8080");
  CHECK(direct.is_object());  // plain routing still works without the mesh
}

TEST_CASE("capture: cross-node traffic is TLS to 15008 on the wire and never plaintext") {
  auto c = Cluster::create(topo(2, 2));
  MeshOptions o;
  o.opted_out = {"pod-1-2"};
  auto echo = serve(*c, c->pod(2, 1), {"--port", "8080", "--echo"}, "echo.log");
  Mesh mesh(*c, o);
  REQUIRE(mesh.wait_enrolled(c->pod(1, 1)));
  REQUIRE(mesh.wait_enrolled(c->pod(2, 1)));
  REQUIRE(mesh.wait_enrolled(c->pod(1, 2), false));

  std::string secret = marker("mtls"), plain = marker("plain");
  Capture cap(*c, "wire");
  REQUIRE(connect(*c, c->pod(1, 1), c->pod(2, 1).ip + ":8080", secret).is_object());
  // The opted-out pod is the control: its bytes cross the link in the clear.
  REQUIRE(connect(*c, c->pod(1, 2), c->pod(2, 1).ip + ":8080", plain).is_object());
  std::string pcap = cap.stop();
  INFO("pcap " << pcap.size() << " bytes; tcpdump: " << cap.proc->log());
  CHECK_FALSE(contains(pcap, secret));
  CHECK(contains(pcap, plain));
  auto r = c->exec_in_node(1, {"tcpdump", "-nn", "-r", cap.file, "tcp dst port 15008 and src host " +
                                                                       c->pod(1, 1).ip});
  INFO(r.output);
  CHECK(contains(r.output, c->pod(2, 1).ip + ".15008"));
  CHECK(contains(pcap, std::string("\x17\x03\x03", 3)));  // TLS application data records
}

TEST_CASE("capture: inbound plaintext is refused under STRICT and counted under PERMISSIVE") {
  auto c = Cluster::create(topo(2, 2));
  MeshOptions o;
  o.opted_out = {"pod-1-2"};
  auto echo = serve(*c, c->pod(2, 1), {"--port", "8080", "--echo"}, "echo.log");
  Mesh mesh(*c, o);
  REQUIRE(mesh.wait_enrolled(c->pod(2, 1)));
  REQUIRE(mesh.wait_enrolled(c->pod(1, 1)));
  std::string target = c->pod(2, 1).ip + ":8080";

  // PERMISSIVE (no PeerAuthentication): plaintext goes through 15006.
  uint64_t plain0 = mesh.bpf_stat(2, "lookup_plaintext");
  REQUIRE(connect(*c, c->pod(1, 2), target).is_object());
  auto from_node = c->exec_in_node(2, {podtool_path(), "connect", "--to", target, "--send-marker",
                                       "x", "--expect-echo"});
  CHECK(from_node.exit_code == 0);
  CHECK(mesh.bpf_stat(2, "lookup_plaintext") - plain0 == 2);
  CHECK(mesh.metric(2, "istio_tcp_connections_opened_total",
                    {{"reporter", "destination"}, {"connection_security_policy", "none"}}) == 2);
  auto peers = wait_peers(*echo, 2);
  REQUIRE(peers.size() == 2);
  CHECK(starts_with(peers[0], c->pod(1, 2).ip + ":"));  // source address kept

  // STRICT: plaintext refused, mTLS still fine.
  mesh.update_configs([](json& cfg) { cfg["peerAuthentications"] = strict_mesh_wide(); });
  REQUIRE(mesh.wait_config_applied());
  CHECK(connect(*c, c->pod(1, 2), target, "x", 2000).is_null());
  CHECK(c->exec_in_node(2, {podtool_path(), "connect", "--to", target, "--send-marker", "x",
                            "--expect-echo", "--timeout-ms", "2000"})
            .exit_code != 0);
  CHECK(connect(*c, c->pod(1, 1), target).is_object());
  CHECK(wait_peers(*echo, 3).size() == 3);  // only the mTLS one reached the app
  CHECK(mesh.metric(2, "warren_connections_rejected_total", {{"reason", "plaintext"}}) >= 2);
}

TEST_CASE("capture: every client connection is captured exactly once") {
  auto c = Cluster::create(topo(2, 2));
  auto e12 = serve(*c, c->pod(1, 2), {"--port", "8080", "--echo"}, "e12.log");
  auto e21 = serve(*c, c->pod(2, 1), {"--port", "8080", "--echo"}, "e21.log");
  Mesh mesh(*c, {});
  for (auto& p : c->all_pods()) REQUIRE(mesh.wait_enrolled(p));
  auto before1 = mesh.bpf_stat(1, "connect_captured"), before2 = mesh.bpf_stat(2, "connect_captured");
  auto orig1 = mesh.bpf_stat(1, "orig_dst_recorded");
  const int n = 10;
  for (int i = 0; i < n; i++) {
    REQUIRE(connect(*c, c->pod(1, 1), c->pod(1, 2).ip + ":8080").is_object());
    REQUIRE(connect(*c, c->pod(1, 1), c->pod(2, 1).ip + ":8080").is_object());
  }
  CHECK(mesh.bpf_stat(1, "connect_captured") - before1 == 2 * n);
  CHECK(mesh.bpf_stat(1, "orig_dst_recorded") - orig1 == 2 * n);
  CHECK(mesh.bpf_stat(2, "connect_captured") == before2);  // the proxy's own legs: never
  CHECK(wait_peers(*e12, n).size() == n);
  CHECK(wait_peers(*e21, n).size() == n);
  CHECK(mesh.metric(1, "istio_tcp_connections_opened_total", {{"reporter", "source"}}) == 2 * n);
  // The BPF counters are exported (polled once a second), since this start.
  CHECK(wait_until([&] {
    return mesh.metric(1, "warren_capture_events_total", {{"event", "connect_captured"}}) ==
           static_cast<double>(mesh.bpf_stat(1, "connect_captured"));
  }, 3s));
}

TEST_CASE("capture: pods enroll and unenroll at run time without a restart") {
  auto c = Cluster::create(topo(2, 1));
  MeshOptions o;
  o.enrolled_namespaces = {};  // nothing enrolled at first
  auto echo = serve(*c, c->pod(2, 1), {"--port", "8080", "--echo"}, "echo.log");
  Mesh mesh(*c, o);
  const auto& client = c->pod(1, 1);
  REQUIRE(mesh.wait_enrolled(client, false));
  std::string target = c->pod(2, 1).ip + ":8080";
  std::string stop = c->dir() + "/stop-long";
  auto longc = c->spawn_in_pod(client, {podtool_path(), "long-lived", "--to", target, "--interval-ms",
                                        "50", "--duration", "60", "--stop-file", stop},
                               "long.log");
  REQUIRE(wait_until([&] { return longc->log().find("peername") != std::string::npos; }, 5s));
  pid_t pause = client.pause_pid, lpid = longc->pid();

  mesh.update_configs([](json& cfg) {
    cfg["namespaces"] = json::array({{{"name", "default"}, {"labels", {{"warren.io/dataplane-mode", "enabled"}}}}});
  });
  REQUIRE(mesh.wait_enrolled(client));
  REQUIRE(mesh.wait_enrolled(c->pod(2, 1)));
  auto cap0 = mesh.bpf_stat(1, "connect_captured");
  REQUIRE(connect(*c, client, target).is_object());
  CHECK(mesh.bpf_stat(1, "connect_captured") == cap0 + 1);
  CHECK(mesh.metric(2, "istio_tcp_connections_opened_total",
                    {{"reporter", "destination"}, {"connection_security_policy", "mutual_tls"}}) == 1);
  std::this_thread::sleep_for(500ms);
  CHECK(longc->alive());  // the connection opened before enrollment keeps working
  CHECK(::kill(pause, 0) == 0);
  CHECK(::kill(lpid, 0) == 0);

  mesh.update_configs([](json& cfg) { cfg["namespaces"] = json::array(); });
  REQUIRE(mesh.wait_enrolled(client, false));
  auto cap1 = mesh.bpf_stat(1, "connect_captured");
  REQUIRE(connect(*c, client, target).is_object());
  CHECK(mesh.bpf_stat(1, "connect_captured") == cap1);  // not captured any more
  CHECK(longc->alive());
  warren::e2e::write_file_atomic(stop, "stop");
  REQUIRE(longc->wait_exit(5s));
  CHECK(longc->exit_code() == 0);
  CHECK(longc->pid() == lpid);
}

TEST_CASE("capture: UDP and DNS-style UDP and ICMP and IPv6 loopback are unaffected") {
  auto c = Cluster::create(topo(2, 1));
  auto udp = c->spawn_in_pod(c->pod(2, 1), {podtool_path(), "udp-echo-serve", "--port", "53"}, "udp.log");
  REQUIRE(wait_until([&] { return udp->log().find("listening") != std::string::npos; }, 5s));
  Mesh mesh(*c, {});
  const auto& client = c->pod(1, 1);
  REQUIRE(mesh.wait_enrolled(client));
  REQUIRE(mesh.wait_enrolled(c->pod(2, 1)));
  uint64_t cap0 = mesh.bpf_stat(1, "connect_captured");
  uint64_t local0 = mesh.bpf_stat(1, "connect_skip_local");

  auto u = c->exec_in_pod(client, {podtool_path(), "udp-echo", "--to", c->pod(2, 1).ip + ":53", "--count", "5"});
  INFO(u.output);
  CHECK(u.exit_code == 0);
  auto ping = c->exec_in_pod(client, {"ping", "-c", "1", "-W", "2", c->pod(2, 1).ip});
  INFO(ping.output);
  CHECK(ping.exit_code == 0);
  // IPv6 over loopback inside the enrolled pod: a TCP connect the programs see and leave alone.
  auto v6 = c->exec_in_pod(client, {"python3", "-c",
                                    "import socket\n"
                                    "s=socket.socket(socket.AF_INET6);s.bind(('::1',7000));s.listen()\n"
                                    "c=socket.create_connection(('::1',7000),timeout=3)\n"
                                    "a,_=s.accept();c.sendall(b'v6');print(a.recv(2).decode())"});
  INFO(v6.output);
  CHECK(v6.exit_code == 0);
  CHECK(v6.output.find("v6") != std::string::npos);
  CHECK(mesh.bpf_stat(1, "connect_captured") == cap0);
  CHECK(mesh.bpf_stat(1, "connect_skip_local") == local0 + 1);
}

TEST_CASE("cni: CHECK knows an enrolled pod and DEL unenrolls it and is idempotent") {
  auto c = Cluster::create(topo(1, 2));
  auto echo = serve(*c, c->pod(1, 2), {"--port", "8080", "--echo"}, "echo.log");
  Mesh mesh(*c, {});
  const auto& p = c->pod(1, 1);
  REQUIRE(mesh.wait_enrolled(p));
  std::string out;
  CHECK(mesh.cni("CHECK", p, &out) == 0);
  CHECK(mesh.cni("DEL", p, &out) == 0);
  REQUIRE(mesh.wait_enrolled(p, false));
  auto cap0 = mesh.bpf_stat(1, "connect_captured");
  REQUIRE(connect(*c, p, c->pod(1, 2).ip + ":8080").is_object());
  CHECK(mesh.bpf_stat(1, "connect_captured") == cap0);  // its traffic is no longer captured
  CHECK(mesh.cni("CHECK", p, &out) != 0);
  INFO(out);
  CHECK(mesh.cni("DEL", p, &out) == 0);  // again: still fine
  CHECK(mesh.cni("ADD", p, &out) == 0);
  CHECK(mesh.wait_enrolled(p));
  REQUIRE(connect(*c, p, c->pod(1, 2).ip + ":8080").is_object());
  CHECK(mesh.bpf_stat(1, "connect_captured") == cap0 + 1);
}
