// warren-demo: the guided tour that ./scripts/demo.sh runs (root only).
//
// Builds a cluster of network namespaces (2 nodes, 2 pods each, see
// harness.h), runs the mesh on it (one warren-node per node in in-pod mode
// with eBPF capture, pods enrolled through warren-cni, see mesh.h) and shows,
// step by step and with real commands' output: an unchanged application
// reaching a mesh-only Service VIP, mTLS on the wire, an ALLOW and a live
// DENY policy, the same-node fast path and the Istio metrics. Every claim it
// prints is checked; a step that does not behave as claimed ends the demo
// with exit code 1. Everything is removed at the end, on failure and on
// Ctrl-C/SIGTERM (the Mesh and Cluster destructors).
//
//   warren-demo [--keep]   --keep: leave the mesh running until Ctrl-C
//
// Exit codes: 0 shown as claimed, 1 a step failed, 77 not root, 130 interrupted.
#include <signal.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <iostream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "harness.h"
#include "mesh.h"

using namespace warren::netns;
using warren::e2e::Process;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

volatile sig_atomic_t g_signal = 0;
void on_signal(int sig) { g_signal = sig; }

struct Interrupted {};
struct StepFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

bool g_tty = false;
std::string bold(const std::string& s) { return g_tty ? "\033[1m" + s + "\033[0m" : s; }
std::string dim(const std::string& s) { return g_tty ? "\033[2m" + s + "\033[0m" : s; }

void checkpoint() {
  if (g_signal) throw Interrupted{};
}

void title(const std::string& s) {
  checkpoint();
  std::cout << "\n" << bold(s) << "\n";
}
void say(const std::string& s) { std::cout << "  " << s << "\n"; }
// A command as the reader could type it, then its output.
void cmd(const std::string& where, const std::string& c) {
  std::cout << "  " << dim("[" + where + "]$ ") << c << "\n";
}
void out(const std::string& text, size_t max_lines = 6, size_t width = 110) {
  std::istringstream in(text);
  size_t n = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    if (++n > max_lines) {
      std::cout << "    ...\n";
      break;
    }
    if (line.size() > width) line = line.substr(0, width - 3) + "...";
    std::cout << "    " << line << "\n";
  }
}
// A verified claim: printed with a check mark, or the demo stops.
void claim(bool ok, const std::string& what, const std::string& detail = "") {
  checkpoint();  // a failure caused by Ctrl-C killing a child is not a failed step
  if (!ok) throw StepFailed(what + (detail.empty() ? "" : "\n" + detail));
  std::cout << "  " << (g_tty ? "\033[32m✓\033[0m " : "✓ ") << what << "\n";
}

// A precondition of the tour (not worth a line of output): the demo stops without it.
void must(bool ok, const std::string& what, const std::string& detail = "") {
  checkpoint();
  if (!ok) throw StepFailed(what + (detail.empty() ? "" : "\n" + detail));
}

void pause_for(std::chrono::milliseconds d) {
  for (auto t = 0ms; t < d; t += 50ms) {
    checkpoint();
    std::this_thread::sleep_for(50ms);
  }
}

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}
bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }
std::string ip_of(const std::string& addr) { return addr.substr(0, addr.rfind(':')); }

std::string last_line_with(const std::string& text, const std::string& needle) {
  std::istringstream in(text);
  std::string found;
  for (std::string line; std::getline(in, line);)
    if (contains(line, needle)) found = line;
  return found;
}

// A warren-node log line without its timestamp and level ("TS\tlevel\tmessage").
std::string log_msg(const std::string& line) {
  auto p = line.find('\t');
  if (p != std::string::npos) p = line.find('\t', p + 1);
  return p == std::string::npos ? line : line.substr(p + 1);
}

// JSON as YAML lines, the way an operator would write the policy.
void yaml(const nlohmann::ordered_json& j, std::ostream& o, int indent, bool in_list = false) {
  std::string pad(static_cast<size_t>(indent), ' ');
  if (j.is_object()) {
    bool first = true;
    for (auto& [k, v] : j.items()) {
      o << (first && in_list ? "" : pad) << k << ":";
      if (v.is_primitive()) {
        o << " " << (v.is_string() ? v.get<std::string>() : v.dump()) << "\n";
      } else {
        o << "\n";
        yaml(v, o, indent + 2);
      }
      first = false;
    }
  } else if (j.is_array()) {
    for (auto& v : j) {
      o << pad << "- ";
      if (v.is_primitive())
        o << (v.is_string() ? v.get<std::string>() : v.dump()) << "\n";
      else
        yaml(v, o, indent + 2, true);
    }
  }
}

std::unique_ptr<Process> serve(Cluster& c, const PodInfo& p, const std::string& log) {
  auto s = c.spawn_in_pod(p, {podtool_path(), "serve", "--port", "8080", "--echo"}, log);
  bool up = warren::e2e::wait_until(
      [&] { return contains(s->log(), "listening") || !s->alive(); }, 5s);
  claim(up && s->alive(), "echo server listening on " + p.name + " (" + p.ip + ":8080)", s->log());
  return s;
}

// Peers an echo server reported so far (one JSON line per closed connection).
std::vector<std::string> peers_seen(const Process& s) {
  std::vector<std::string> r;
  std::istringstream in(s.log());
  for (std::string line; std::getline(in, line);) {
    auto j = json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("peer")) r.push_back(j["peer"]);
  }
  return r;
}

struct Demo {
  bool keep = false;
  std::unique_ptr<Cluster> c;
  std::unique_ptr<Mesh> mesh;
  std::unique_ptr<Process> echo21, echo22, srv12;
  std::string tag, vip = "10.96.0.10:80";

  std::string pod_prompt(const PodInfo& p) const {
    static const std::map<std::string, std::string> role{
        {"pod-1-1", "sleep"}, {"pod-1-2", "intruder"}, {"pod-2-1", "echo"}, {"pod-2-2", "echo"}};
    auto it = role.find(p.name);
    return p.name + (it == role.end() ? "" : " " + it->second);
  }

  // warren-podtool connect from a pod, printed as typed and as answered.
  warren::e2e::CmdResult connect(const PodInfo& from, const std::string& to, const std::string& marker,
                                 bool print = true) {
    std::vector<std::string> argv{podtool_path(), "connect", "--to", to, "--send-marker", marker,
                                  "--expect-echo", "--timeout-ms", "3000"};
    if (print)
      cmd(pod_prompt(from), "warren-podtool connect --to " + to + " --send-marker " + marker +
                                " --expect-echo");
    auto r = c->exec_in_pod(from, argv);
    if (print) out(r.output);
    return r;
  }

  // Waits for a new connection line in one of the echo servers; returns "pod: line".
  std::pair<std::string, std::string> echo_saw(size_t before21, size_t before22) {
    std::pair<std::string, std::string> r;
    warren::e2e::wait_until(
        [&] {
          auto a = peers_seen(*echo21), b = peers_seen(*echo22);
          if (a.size() > before21) r = {"pod-2-1", a.back()};
          if (b.size() > before22) r = {"pod-2-2", b.back()};
          return !r.first.empty();
        },
        3s);
    return r;
  }

  void step1() {
    title("1. A cluster on this machine: 2 nodes, 2 pods each, every one a network namespace");
    Topology t;
    t.nodes = 2;
    t.pods_per_node = 2;
    c = Cluster::create(t);
    tag = c->tag();
    say("cluster tag " + tag + "; the nodes' link is bridge br0 in netns " + c->fabric_netns());
    for (auto& n : c->nodes()) {
      say(n.name + "  " + n.ip + "  netns " + n.netns + "  pods " + n.pod_cidr);
      for (auto& p : n.pods)
        say("  " + p.name + "  " + p.ip + "  netns " + p.netns + "  serviceAccount " +
            p.service_account + "  (" + pod_prompt(p).substr(p.name.size() + 1) + ")");
    }
    checkpoint();
    echo21 = serve(*c, c->pod(2, 1), "echo-2-1.log");
    echo22 = serve(*c, c->pod(2, 2), "echo-2-2.log");
    srv12 = serve(*c, c->pod(1, 2), "echo-1-2.log");  // for step 5

    say("");
    say("The mesh: a warren-node per node in in-pod mode (eBPF capture, fast path on),");
    say("namespace \"default\" labelled warren.io/dataplane-mode=enabled, pods enrolled by");
    say("warren-cni as a container runtime would, and a Service that exists only in the mesh:");
    say("  echo.default  VIP " + vip + " -> targetPort 8080 on pod-2-1, pod-2-2");
    MeshOptions o;
    o.fast_path = true;
    o.services.push_back({"echo", "10.96.0.10", 80, 8080, {"pod-2-1", "pod-2-2"}});
    o.start_nodes = false;
    mesh = std::make_unique<Mesh>(*c, o);
    for (auto& n : c->nodes()) {
      json cfg = mesh->config(n.index);
      // Pods are enrolled through warren-cni only: the /proc scan matches pods
      // by IP host-wide and would also find other clusters' pods (every
      // cluster uses the same addresses).
      cfg["capture"]["scanProc"] = false;
      // The labels the policies below select on (the mesh starts with app=<pod name>).
      static const std::map<std::string, std::string> app{
          {"pod-1-1", "sleep"}, {"pod-1-2", "intruder"}, {"pod-2-1", "echo"}, {"pod-2-2", "echo"}};
      for (auto& w : cfg["workloads"]) w["labels"]["app"] = app.at(w["name"].get<std::string>());
      mesh->write_config(n.index, cfg);
      mesh->start_node(n.index);
    }
    for (auto& p : c->all_pods()) {
      std::string o;
      int rc = mesh->cni("ADD", p, &o);
      // Another warren-node on this machine whose /proc scan took this pod for
      // one of its own (concurrent netns tests: every cluster has the same
      // addresses) holds the pod's capture ports until it stops.
      if (rc != 0 && contains(mesh->node_log(p.node), "Address already in use")) {
        say("note: another warren-node on this machine holds " + p.name +
            "'s capture ports (netns tests running?); waiting up to 60 s");
        warren::e2e::wait_until([&] {
          checkpoint();
          return (rc = mesh->cni("ADD", p, &o)) == 0;
        }, 60s, 1s);
      }
      must(rc == 0, "warren-cni ADD " + p.name, o);
      must(mesh->wait_enrolled(p), p.name + " enrolled", mesh->node_log(p.node));
    }
    claim(true, "both warren-nodes ready, the 4 pods enrolled (their connects are now captured)");
  }

  void step2() {
    title("2. The application is unchanged: a plain TCP connect to a VIP that exists only in the mesh");
    const auto& sleep = c->pod(1, 1);
    say("(\"[pod-1-1 sleep]$ cmd\" = cmd run in that pod's netns and cgroup, as its container would;");
    say(" by hand: warren-netns exec --tag " + tag + " --pod 1/1 -- cmd)");
    uint64_t cap0 = mesh->bpf_stat(1, "connect_captured");
    for (int i = 0; i < 2; i++) {
      size_t b21 = peers_seen(*echo21).size(), b22 = peers_seen(*echo22).size();
      auto r = connect(sleep, vip, i == 0 ? "hello-mesh" : "hello-again");
      auto j = podtool_json(r.output);
      must(r.exit_code == 0 && j.is_object(), "sleep reaches the VIP", r.output);
      claim(j["peername"] == vip && j.value("echo_ok", false),
            "echoed; getpeername() in sleep says " + j["peername"].get<std::string>() +
                ": the app never learns it was redirected");
      auto [who, peer] = echo_saw(b21, b22);
      must(!who.empty(), "an echo server logged the connection");
      cmd(who + " echo", "(echo server's log)  peer " + peer);
      claim(starts_with(peer, sleep.ip + ":"),
            "the echo server on " + who + " sees sleep's own address " + ip_of(peer) +
                " (source address preserved)");
      if (i == 1)
        claim(peers_seen(*echo21).size() == 1 && peers_seen(*echo22).size() == 1,
              "the Service balanced the two connections over pod-2-1 and pod-2-2");
    }
    claim(mesh->bpf_stat(1, "connect_captured") - cap0 == 2,
          "node-1's cgroup/connect4 program captured both connects (bpfStats connect_captured +2)");
    say("Control: node-1's own netns is not in the mesh, so the VIP does not exist there:");
    cmd("node-1", "warren-podtool connect --to " + vip + " --timeout-ms 1500");
    auto r = c->exec_in_node(1, {podtool_path(), "connect", "--to", vip, "--timeout-ms", "1500"});
    out(r.output, 2);
    claim(r.exit_code != 0, "outside the mesh, connecting to " + vip + " fails");
  }

  void step3() {
    title("3. mTLS on the wire: what crosses the link between the two nodes");
    const auto& sleep = c->pod(1, 1);
    std::string secret = "TOP-SECRET-" + std::to_string(getpid());
    std::string plain = "IN-THE-CLEAR-" + std::to_string(getpid());
    std::string pcap = c->dir() + "/wire.pcap";
    cmd("fabric", "tcpdump -i fab-n1 -w wire.pcap      # node-1's port on the bridge");
    Process dump({nsexec_path(), "--netns", c->fabric_netns_path(), "--", "tcpdump", "-Z", "root",
                  "--immediate-mode", "-i", c->node(1).fabric_if, "-U", "-s", "0", "-w", pcap},
                 c->log_path("tcpdump.log"));
    must(warren::e2e::wait_until([&] { return contains(dump.log(), "listening on"); }, 5s),
         "tcpdump started", dump.log());
    auto r = connect(sleep, vip, secret);
    must(r.exit_code == 0, "sleep reaches the VIP", r.output);
    say("Control: node-1 itself (not in the mesh) sends a marker straight to pod-2-1");
    say("(the namespace is PERMISSIVE, so pod-2-1 still accepts plaintext):");
    cmd("node-1", "warren-podtool connect --to " + c->pod(2, 1).ip + ":8080 --send-marker " + plain +
                      " --expect-echo");
    auto p = c->exec_in_node(1, {podtool_path(), "connect", "--to", c->pod(2, 1).ip + ":8080",
                                 "--send-marker", plain, "--expect-echo", "--timeout-ms", "3000"});
    out(p.output);
    must(p.exit_code == 0, "node-1 reaches pod-2-1 in plaintext", p.output);
    pause_for(300ms);  // -U: let tcpdump write the last packets
    dump.stop();
    std::string bytes = warren::e2e::read_file(pcap);
    cmd("host", "tcpdump -nn -t -r wire.pcap 'tcp port 15008' | head -4");
    auto t = c->exec_in_node(1, {"tcpdump", "-nn", "-t", "-r", pcap, "tcp port 15008"});
    std::string lines;
    {
      std::istringstream in(t.output);
      for (std::string l; std::getline(in, l);)
        if (!starts_with(l, "reading from")) lines += l + "\n";
    }
    out(lines, 4, 100);
    bool tls_from_sleep = contains(lines, sleep.ip + ".") &&
                          (contains(lines, c->pod(2, 1).ip + ".15008") ||
                           contains(lines, c->pod(2, 2).ip + ".15008"));
    claim(tls_from_sleep, "sleep's connection crossed as " + sleep.ip + " -> echo pod port 15008 (HBONE)",
          t.output);
    claim(contains(bytes, std::string("\x17\x03\x03", 3)),
          "the capture holds TLS application-data records (TLS 1.3, mutual: SPIFFE certificates)");
    claim(!contains(bytes, secret),
          "\"" + secret + "\" appears nowhere in the " + std::to_string(bytes.size()) + "-byte capture");
    claim(contains(bytes, plain), "while the control's \"" + plain + "\" is right there in the clear");
  }

  nlohmann::ordered_json policy(const std::string& name, const std::string& action,
                                const std::string& principal) {
    return {{"apiVersion", "security.istio.io/v1"},
            {"kind", "AuthorizationPolicy"},
            {"metadata", {{"name", name}, {"namespace", "default"}}},
            {"spec",
             {{"selector", {{"matchLabels", {{"app", "echo"}}}}},
              {"action", action},
              {"rules", {{{"from", {{{"source", {{"principals", {principal}}}}}}}}}}}}};
  }

  // Adds a policy to every node's config file and waits until both nodes run it.
  void add_policy(const nlohmann::ordered_json& p) {
    json pj = json::parse(p.dump());
    mesh->update_configs([&](json& cfg) { cfg["policies"].push_back(pj); });
    must(mesh->wait_config_applied(), "both nodes applied the policy");
    auto v = std::to_string(mesh->config_dump(2).value("version", 0ull));
    std::string line;
    warren::e2e::wait_until([&] {
      line = last_line_with(mesh->node_log(2), "config version " + v + " applied");
      return !line.empty();
    }, 2s);
    cmd("node-2", "(warren-node's log)  " + log_msg(line));
  }

  void show_policy(const nlohmann::ordered_json& p) {
    std::ostringstream y;
    yaml(p, y, 0);
    out(y.str(), 20);
  }

  void step4() {
    title("4. Policy: Istio AuthorizationPolicy, enforced by the destination's node");
    const auto& sleep = c->pod(1, 1);
    const auto& intruder = c->pod(1, 2);
    std::string principal = "cluster.local/ns/default/sa/" + sleep.service_account;
    auto allow = policy("echo-allow-sleep", "ALLOW", principal);
    say("Added to both nodes' config files (the workloads are labelled app=sleep, app=intruder, app=echo):");
    show_policy(allow);
    add_policy(allow);
    size_t b21 = peers_seen(*echo21).size(), b22 = peers_seen(*echo22).size();
    double rej0 = mesh->metric(2, "warren_connections_rejected_total");
    auto r = connect(intruder, vip, "let-me-in");
    claim(r.exit_code != 0 && peers_seen(*echo21).size() == b21 && peers_seen(*echo22).size() == b22,
          "intruder (sa-1-2) is refused and no echo server saw a connection", r.output);
    std::string refused = last_line_with(mesh->node_log(2), "refused");
    must(!refused.empty() && mesh->metric(2, "warren_connections_rejected_total") > rej0,
         "node-2 logged and counted the refusal", mesh->node_log(2));
    cmd("node-2", "(warren-node's log)  " + log_msg(refused));
    r = connect(sleep, vip, "still-me");
    claim(r.exit_code == 0, "sleep (sa-1-1) still gets through", r.output);

    say("");
    say("Now a DENY for sleep, added while everything runs (edit the file; no restart):");
    auto deny = policy("echo-deny-sleep", "DENY", principal);
    show_policy(deny);
    auto v0 = mesh->config_dump(2).value("version", 0ull);
    add_policy(deny);
    auto v1 = mesh->config_dump(2).value("version", 0ull);
    claim(mesh->node_alive(1) && mesh->node_alive(2) && v1 > v0,
          "the running warren-nodes re-read their files (node-2: config version " +
              std::to_string(v0) + " -> " + std::to_string(v1) + ")");
    r = connect(sleep, vip, "me-again");
    claim(r.exit_code != 0, "sleep is refused now (DENY wins over ALLOW)", r.output);
    cmd("node-2", "(warren-node's log)  " + log_msg(last_line_with(mesh->node_log(2), "refused")));
  }

  void step5() {
    title("5. Same node: with capture.fastPath on, an allowed flow skips the proxy");
    const auto& sleep = c->pod(1, 1);
    std::string to = c->pod(1, 2).ip + ":8080";
    say("sleep calls the server in pod-1-2 (same node; no policy selects app=intruder).");
    auto stats = [&] {
      auto d = mesh->config_dump(1);
      must(d.is_object() && d.contains("capture"), "node-1's /config_dump");
      return std::make_pair(d["capture"]["bpfStats"].value("connect_captured", 0ull),
                            d["capture"]["bpfStats"].value("connect_direct", 0ull));
    };
    auto show = [&](std::pair<uint64_t, uint64_t> s) {
      cmd("node-1", "curl -s 127.0.0.1:15000/config_dump | jq -c '.capture.bpfStats|{connect_captured,connect_direct}'");
      out(json{{"connect_captured", s.first}, {"connect_direct", s.second}}.dump());
    };
    auto s0 = stats();
    show(s0);
    auto r = connect(sleep, to, "first");
    must(r.exit_code == 0, "first same-node connection", r.output);
    auto s1 = stats();
    show(s1);
    bool mtls = mesh->metric(1, "istio_tcp_connections_opened_total",
                             {{"reporter", "destination"}, {"destination_workload", "pod-1-2"},
                              {"connection_security_policy", "mutual_tls"}}) >= 1;
    claim(s1.first == s0.first + 1 && s1.second == s0.second && mtls,
          "the first connection was captured: the proxy checked policy (HBONE, mTLS even on one node)");
    r = connect(sleep, to, "second");
    auto j = podtool_json(r.output);
    must(r.exit_code == 0 && j.is_object(), "second same-node connection", r.output);
    auto s2 = stats();
    show(s2);
    claim(s2.second == s1.second + 1 && s2.first == s1.first,
          "the second went socket to socket: connect_direct +1, not captured");
    auto peers = peers_seen(*srv12);
    must(warren::e2e::wait_until([&] { return peers_seen(*srv12).size() >= 2; }, 3s), "pod-1-2 logged both");
    peers = peers_seen(*srv12);
    claim(j["peername"] == to && starts_with(peers.back(), sleep.ip + ":"),
          "same addresses as ever for both ends (" + peers.back() + " -> " + to + ")");
    double fast = 0;
    bool counted = warren::e2e::wait_until([&] {
      fast = mesh->metric(1, "warren_fast_path_connections_total", {{"state", "opened"}});
      return fast >= 1;
    }, 3s);
    claim(counted, "and it is still counted: node-1's warren_fast_path_connections_total{state=\"opened\"} " +
                       std::to_string(static_cast<long long>(fast)));
  }

  void step6() {
    title("6. Istio-standard metrics (node-2, Prometheus text on :15020/metrics)");
    cmd("node-2", "curl -s " + c->node(2).ip + ":15020/metrics | grep istio_tcp_connections_opened_total");
    say("(labels shortened to reporter, source -> destination workload, security policy, flags)");
    auto text = mesh->metrics(2);
    must(!text.empty(), "node-2 metrics");
    auto samples = warren::e2e::parse_metrics(text);
    bool mtls = false, plain = false;
    for (auto& s : samples) {
      if (s.name != "istio_tcp_connections_opened_total") continue;
      auto l = s.labels;
      std::ostringstream o;
      o << "{reporter=" << l["reporter"] << "} " << l["source_workload"] << " -> "
        << l["destination_workload"] << "  " << l["connection_security_policy"]
        << "  flags=" << l["response_flags"] << "  " << s.value;
      out(o.str());
      if (l["reporter"] == "destination" && l["source_workload"] == "pod-1-1" &&
          starts_with(l["destination_workload"], "pod-2-") && l["connection_security_policy"] == "mutual_tls")
        mtls = true;
      if (l["connection_security_policy"] == "none") plain = true;
    }
    claim(mtls, "sleep's connections to the echo pods: reported by node-2 as mutual_tls");
    claim(plain, "node-1's plaintext control connection: connection_security_policy=none");
    double rejected = mesh->metric(2, "warren_connections_rejected_total");
    cmd("node-2", "curl -s " + c->node(2).ip + ":15020/metrics | grep ^warren_connections_rejected_total");
    for (auto& s : samples)
      if (s.name == "warren_connections_rejected_total" && s.value > 0) {
        std::ostringstream o;
        o << "warren_connections_rejected_total{";
        bool first = true;
        for (auto& [k, v] : s.labels) o << (first ? "" : ",") << k << "=\"" << v << "\"", first = false;
        o << "} " << s.value;
        out(o.str());
      }
    claim(rejected >= 2, "the two refusals of step 4 are counted");
  }

  void step7() {
    std::string N = cli_path(), P = podtool_path();
    title("7. Where to look next");
    // Each suggested command is run once here, so what it is said to do holds.
    struct Try {
      std::vector<std::string> argv;
      std::string shown, expect;  // expect: in the output ("" : must fail)
    };
    std::string n2 = c->node(2).ip;
    std::vector<Try> tries = {
        {{N, "exec", "--tag", tag, "--pod", "1/1", "--", P, "connect", "--to", c->pod(1, 2).ip + ":8080",
          "--send-marker", "hi", "--expect-echo"},
         "$N exec --tag " + tag + " --pod 1/1 -- $P connect --to " + c->pod(1, 2).ip +
             ":8080 --send-marker hi --expect-echo",
         "\"echo_ok\":true"},
        {{N, "exec", "--tag", tag, "--pod", "1/1", "--", P, "connect", "--to", vip, "--send-marker", "hi",
          "--expect-echo", "--timeout-ms", "2000"},
         "$N exec --tag " + tag + " --pod 1/1 -- $P connect --to " + vip +
             " --send-marker hi --expect-echo   # refused until echo-deny-sleep is removed from node-2.json",
         ""},
        {{N, "exec", "--tag", tag, "--node", "2", "--", "curl", "-s", "127.0.0.1:15000/config_dump"},
         "$N exec --tag " + tag + " --node 2 -- curl -s 127.0.0.1:15000/config_dump", "\"bpfStats\""},
        {{N, "exec", "--tag", tag, "--node", "2", "--", "curl", "-s", n2 + ":15020/metrics"},
         "$N exec --tag " + tag + " --node 2 -- curl -s " + n2 + ":15020/metrics",
         "istio_tcp_connections_opened_total"}};
    for (auto& t : tries) {
      auto r = warren::e2e::run(t.argv);
      bool ok = t.expect.empty() ? r.exit_code != 0 : r.exit_code == 0 && contains(r.output, t.expect);
      must(ok, "suggested command: " + t.shown, r.output);
    }
    std::cout << "  N=" << N << "\n  P=" << P << "\n";
    for (auto& t : tries) std::cout << "  " << t.shown << "\n";
    std::cout << "  " << c->dir() << "/node-{1,2}.json   the node configs: edit them live\n"
              << "  " << c->dir() << "/node-{1,2}.log, access-{1,2}.log\n";
    if (!keep) {
      say("./scripts/demo.sh --keep leaves all of this running to try them; ARCHITECTURE.md explains");
      say("the pieces. Everything the demo started is removed now.");
      return;
    }
    std::cout << "\n" << bold("The mesh keeps running; press Ctrl-C to stop it and clean up.") << std::endl;
    while (!g_signal) {
      std::this_thread::sleep_for(200ms);
      if (!mesh->node_alive(1) || !mesh->node_alive(2)) {
        std::this_thread::sleep_for(500ms);  // a Ctrl-C reaches the nodes too (same process group)
        if (!g_signal) throw StepFailed("a warren-node exited");
      }
    }
    std::cout << "\nStopping the mesh and removing the cluster ..." << std::endl;
  }

  void run() {
    step1();
    step2();
    step3();
    step4();
    step5();
    step6();
    step7();
  }
};

}  // namespace

int main(int argc, char** argv) {
  bool keep = false;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--keep") {
      keep = true;
    } else {
      std::cerr << "usage: warren-demo [--keep]\n";
      return 2;
    }
  }
  if (!have_root()) {
    std::cerr << "warren-demo builds network namespaces, cgroups and eBPF programs: it needs root\n"
                 "(CAP_NET_ADMIN, CAP_SYS_ADMIN). Run it with sudo, or ./scripts/demo.sh --loopback\n"
                 "for the loopback demo without root.\n";
    return kSkipReturnCode;
  }
  if (!ensure_bpffs()) {
    std::cerr << "warren-demo: /sys/fs/bpf is not a bpf filesystem and could not be mounted\n";
    return 1;
  }
  g_tty = isatty(1);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaction(s, &sa, nullptr);

  int rc = 0;
  std::string tag;
  {
    Demo d;
    d.keep = keep;
    try {
      d.run();
    } catch (const Interrupted&) {
      std::cout << "\n" << bold("Interrupted: cleaning up") << std::endl;
      rc = 130;
    } catch (const std::exception& e) {
      // A Ctrl-C from the terminal also reaches the children (same process
      // group): a step may see them die just before the signal is noticed.
      std::this_thread::sleep_for(300ms);
      if (g_signal) {
        std::cout << "\n" << bold("Interrupted: cleaning up") << std::endl;
        rc = 130;
      } else {
        std::cout << "\n" << bold("FAILED: ") << e.what() << std::endl;
        rc = 1;
      }
    }
    tag = d.tag;
    if (rc == 1 && d.mesh) {
      for (int n : {1, 2}) {
        std::cout << "--- warren-node " << n << " log (last lines) ---\n";
        out(d.mesh->node_log(n), 15, 200);
      }
    }
    // Destructors: processes first, then the mesh (nodes stopped, BPF pins
    // removed), then the cluster (netns, cgroups).
    d.echo21.reset();
    d.echo22.reset();
    d.srv12.reset();
    d.mesh.reset();
    d.c.reset();
  }
  if (!tag.empty()) {
    // A Ctrl-C during the teardown also reaches its `ip netns del` children:
    // finish what they left.
    auto pins_left = [&] {
      return access(("/sys/fs/bpf/warren/t-" + tag + "-n1").c_str(), F_OK) == 0 ||
             access(("/sys/fs/bpf/warren/t-" + tag + "-n2").c_str(), F_OK) == 0;
    };
    auto tag_left = [&] {
      for (auto& t : list_tags())
        if (t == tag) return true;
      return false;
    };
    for (int i = 0; i < 3 && (tag_left() || pins_left()); i++) {
      std::this_thread::sleep_for(200ms);
      if (tag_left()) teardown_tag(tag);
      for (int n : {1, 2}) {
        std::error_code ec;
        std::filesystem::remove_all("/sys/fs/bpf/warren/t-" + tag + "-n" + std::to_string(n), ec);
      }
    }
    std::string left;
    for (auto& t : list_tags())
      if (t == tag) left += " netns/cgroup/owner file of " + tag;
    if (access(("/sys/fs/bpf/warren/t-" + tag + "-n1").c_str(), F_OK) == 0 ||
        access(("/sys/fs/bpf/warren/t-" + tag + "-n2").c_str(), F_OK) == 0)
      left += " BPF pins under /sys/fs/bpf/warren/t-" + tag + "-*";
    if (left.empty()) {
      std::cout << "Cleaned up: no network namespace, cgroup or BPF pin of cluster " << tag
                << " is left.\n";
    } else {
      std::cout << "Cleanup left:" << left << "\n";
      if (rc == 0) rc = 1;
    }
  }
  return rc;
}
