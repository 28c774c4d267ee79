// warren-demo's tour, steps 3 to 9 (demo_tour.h).
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <set>
#include <sstream>

#include "demo_tour.h"
#include "local_manifest.h"  // the controller's own parser

namespace warren::demo {

namespace fs = std::filesystem;
using nlohmann::json;
using netns::podtool_path;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

void Tour::step_traffic() {
  title("3. Traffic: plain TCP in the application, mutual TLS between the pods");
  const auto& fe = pod("frontend");
  const auto& catalog = service("catalog");
  say("The frontend calls the catalog Service (" + catalog.addr() + ", a VIP that exists only in the mesh):");
  std::set<std::string> versions;
  for (int i = 0; i < 2; i++) {
    auto before = peer_counts();
    auto r = connect(fe, catalog.addr(), i == 0 ? "hello-catalog" : "hello-again");
    auto j = netns::podtool_json(r.output);
    must(r.exit_code == 0 && j.is_object() && j.value("echo_ok", false), "frontend reaches the catalog", r.output);
    std::string who = answered(before);
    must(!who.empty(), "a catalog pod logged the connection");
    const auto& p = pod(who);
    auto v = p.labels.count("version") ? p.labels.at("version") : "?";
    versions.insert(v);
    claim(true, "answered by " + p.prompt() + " (version " + v + ", on " + p.node + ")");
  }
  claim(versions.size() == 2, "one Service, two versions: the node balances new connections over both");

  const auto& rv = pod("reviews");
  std::string secret = "TOP-SECRET-" + std::to_string(getpid());
  say("");
  say("The frontend calls reviews (on the other node) while tcpdump listens on the nodes' link:");
  Wire w(*c_, "wire.pcap");
  auto r = connect(fe, service("reviews").addr(), secret);
  must(r.exit_code == 0, "frontend reaches reviews", r.output);
  std::string bytes = w.stop();
  cmd("host", "tcpdump -nn -t -r $W/wire.pcap 'tcp port 15008' | head -3");
  auto lines = wire_lines(w.file, "tcp port 15008");
  out(lines, 3, 100);
  claim(contains(lines, fe.ip + ".") && contains(lines, rv.ip + ".15008"),
        "on the wire: " + fe.ip + " -> " + rv.ip + ":15008, HBONE (HTTP/2 CONNECT inside TLS 1.3)", lines);
  claim(!contains(bytes, secret) && contains(bytes, std::string("\x17\x03\x03", 3)),
        "TLS records only: \"" + secret + "\" appears nowhere in the " + std::to_string(bytes.size()) +
            "-byte capture");
  auto seen = peers("reviews");
  claim(!seen.empty() && starts_with(seen.back(), fe.ip + ":"),
        "reviews saw the connection come from " + fe.ip + ", the frontend's own address");
  say("The receiving node logs each connection with both ends' identities, from their certificates:");
  int node2 = rv.slot->node;
  cmd("host", "tail -1 $W/access-" + std::to_string(node2) + ".log   # one JSON line per connection; its identities:");
  std::string al = access_line(node2, fe.identity(), rv.identity());
  out(al, 1, 160);
  claim(!al.empty(), "mutual TLS: the frontend proved " + fe.identity() + ", reviews proved " + rv.identity());
}

void Tour::step_allow() {
  title("4. Policy: Istio's AuthorizationPolicy, from policies.yaml, checked by the receiving node");
  out(without_comments(e2e::read_file(examples_ + "/policies.yaml")), 20);
  const auto& rv = pod("reviews");
  auto before = peer_counts();
  std::vector<std::string> logs_before;
  for (int n = 1; n <= nodes_; n++) logs_before.push_back(mesh_->node_log(n));
  auto r = connect(rv, service("catalog").addr(), "may-i");
  pause_for(200ms);
  auto after = peer_counts();
  bool none = after.at("catalog-v1") == before.at("catalog-v1") && after.at("catalog-v2") == before.at("catalog-v2");
  claim(r.exit_code != 0 && none, "reviews (" + rv.identity() + ") is refused; no catalog pod saw a connection",
        r.output);
  for (int n = 1; n <= nodes_; n++) {
    std::string log = mesh_->node_log(n).substr(std::min(logs_before[n - 1].size(), mesh_->node_log(n).size()));
    if (auto l = last_line_with(log, "refused"); !l.empty()) {
      cmd("host", "grep refused $W/node-" + std::to_string(n) + ".log | tail -1   # warren-node's log");
      out(log_msg(l), 1, 160);
    }
  }
  claim(true, "the frontend's calls to the catalog (step 3) passed the same policy");
}

void Tour::step_deny() {
  title("5. A DENY policy, applied by adding a file to the directory");
  auto& ctl = mesh_->controller();
  const auto& fe = pod("frontend");
  std::string reviews = service("reviews").addr();
  std::string text = e2e::read_file(examples_ + "/" + kDenyFile);
  out(without_comments(text), 20);
  std::string name = fs::path(kDenyFile).filename().string();
  uint64_t v0 = ctl.version();
  cmd("host", std::string("cp examples/mesh/") + kDenyFile + " " + manifests() + "/");
  auto t0 = Clock::now();
  ctl.write_manifest(name, text);
  long took = -1;
  e2e::CmdResult last;
  while (Clock::now() - t0 < 5s && took < 0) {
    checkpoint();
    last = connect(fe, reviews, "again", false, 1000);
    if (last.exit_code != 0) took = ms_since(t0);
  }
  must(ctl.wait_acked(c_->nodes().size(), v0 + 1), "both nodes acknowledged the new version",
       ctl.get("/debug/nodes"));
  if (auto l = last_line_with(ctl.log(), "config version "); !l.empty()) {
    cmd("host", "tail -1 $W/controller.log   # warren-controller's log");
    out(W(log_msg(l)), 1, 140);
  }
  connect(fe, reviews, "again");
  claim(took >= 0, "the frontend's calls to reviews are refused, " + std::to_string(took) +
                       " ms after the file was written; no restart, both nodes on version " +
                       std::to_string(ctl.version()));
  say("");
  cmd("host", "rm " + manifests() + "/" + name);
  t0 = Clock::now();
  ctl.remove_manifest(name);
  took = -1;
  while (Clock::now() - t0 < 5s && took < 0) {
    checkpoint();
    if (connect(fe, reviews, "back", false, 1000).exit_code == 0) took = ms_since(t0);
  }
  claim(took >= 0, "allowed again " + std::to_string(took) + " ms after the file was removed");
}

void Tour::step_enroll() {
  title("6. A namespace joins the mesh at run time");
  auto& ctl = mesh_->controller();
  const auto& billing = pod("billing");
  const auto& inventory = pod("inventory");
  std::string to = inventory.ip + ":" + std::to_string(inventory.port);
  say("Namespace " + billing.ns + " is not in the mesh: " + billing.prompt() + " (" + billing.node + ") calls " +
      inventory.prompt() + " (" + inventory.node + ") in plain TCP, for anyone on the wire to read:");
  std::string m1 = "LEGACY-PLAINTEXT-" + std::to_string(getpid());
  {
    Wire w(*c_, "legacy-before.pcap");
    auto r = connect(billing, to, m1);
    must(r.exit_code == 0, "billing reaches inventory", r.output);
    std::string bytes = w.stop();
    auto lines = wire_lines(w.file, "tcp and host " + inventory.ip);
    claim(contains(bytes, m1) && contains(lines, inventory.ip + "." + std::to_string(inventory.port)),
          "on the wire: " + billing.ip + " -> " + to + ", and \"" + m1 + "\" in the clear", lines);
  }
  say("");
  say("Label the namespace: the live namespaces.yaml becomes examples/mesh/" + std::string(kEnrolledNamespaces) + ":");
  std::string text = e2e::read_file(examples_ + "/" + kEnrolledNamespaces);
  std::string doc = without_comments(text);
  out(doc.substr(doc.find("---") == std::string::npos ? 0 : doc.find("---") + 4), 10);
  cmd("host", std::string("cp examples/mesh/") + kEnrolledNamespaces + " " + manifests() + "/namespaces.yaml");
  auto t0 = Clock::now();
  ctl.write_manifest("namespaces.yaml", text);
  bool both = mesh_->wait_enrolled(*billing.slot, true, 5s) && mesh_->wait_enrolled(*inventory.slot, true, 5s);
  long took = ms_since(t0);
  claim(both, billing.prompt() + " and " + inventory.prompt() + " enrolled " + std::to_string(took) +
                  " ms after the file was written (running pods, no restart)");
  std::string m2 = "LEGACY-SECRET-" + std::to_string(getpid());
  say("The same call again:");
  Wire w(*c_, "legacy-after.pcap");
  auto r = connect(billing, to, m2);
  must(r.exit_code == 0, "billing reaches inventory in the mesh", r.output);
  std::string bytes = w.stop();
  auto lines = wire_lines(w.file, "tcp port 15008");
  claim(contains(lines, billing.ip + ".") && contains(lines, inventory.ip + ".15008") && !contains(bytes, m2),
        "on the wire now: " + billing.ip + " -> " + inventory.ip + ":15008 (HBONE), \"" + m2 + "\" nowhere",
        lines);
  std::string al = access_line(inventory.slot->node, billing.identity(), inventory.identity());
  cmd("host", "tail -1 $W/access-" + std::to_string(inventory.slot->node) + ".log");
  out(al, 1, 160);
  claim(!al.empty(), "and both ends are known by their certificates");
}

void Tour::step_metrics() {
  title("7. Metrics, in Prometheus text with Istio's names and labels");
  const auto& rv = pod("reviews");
  int n = rv.slot->node;
  std::string node_ip = c_->node(n).ip;
  cmd(rv.node, "curl -s " + node_ip + ":15020/metrics | grep ^istio_tcp_connections_opened_total");
  say("(labels shortened: source -> destination workload, security policy, response flags, count)");
  auto samples = e2e::parse_metrics(mesh_->metrics(n));
  bool mtls = false, denied = false;
  for (auto& s : samples) {
    if (s.name != "istio_tcp_connections_opened_total" || s.labels["reporter"] != "destination") continue;
    auto l = s.labels;
    std::ostringstream o;
    o << l["source_workload_namespace"] << "/" << l["source_workload"] << " -> " << l["destination_workload"]
      << "  " << l["connection_security_policy"] << "  flags=" << l["response_flags"] << "  " << s.value;
    out(o.str(), 1, 140);
    if (l["source_workload"] == "frontend" && l["destination_workload"] == "reviews") {
      if (l["connection_security_policy"] == "mutual_tls" && l["response_flags"] == "-") mtls = true;
      if (l["response_flags"] == "DENY") denied = true;
    }
  }
  claim(mtls, "frontend -> reviews: counted by " + rv.node + " as mutual_tls");
  claim(denied, "and the connections the DENY policy refused, with response_flags=DENY");
  auto& ctl = mesh_->controller();
  say("");
  cmd("controller", "curl -s " + ctl.monitoring() + "/metrics | grep -E '^warren_(push|ca)_'");
  double connected = 0;
  for (auto& s : e2e::parse_metrics(ctl.get("/metrics"))) {
    bool show = s.name == "warren_push_connected_nodes" || s.name == "warren_push_acks_total" ||
                s.name == "warren_ca_requests_total" || s.name == "warren_push_ack_latency_seconds_count";
    if (!show) continue;
    if (s.name == "warren_push_connected_nodes") connected = s.value;
    std::string labels;
    for (auto& [k, v] : s.labels) labels += (labels.empty() ? "{" : ",") + k + "=\"" + v + "\"";
    std::ostringstream o;
    o << s.name << (labels.empty() ? "" : labels + "}") << " " << s.value;
    out(o.str(), 1);
  }
  claim(connected == nodes_, "the controller holds a configuration stream to each node");
}

// http-get from a pod as the reader could type it; the parsed JSON line.
static json http_get(netns::Cluster& c, const netns::PodInfo& slot, const std::string& prompt, const std::string& to,
                     const std::string& path, const std::string& header = "", int count = 1) {
  std::vector<std::string> argv{podtool_path(), "http-get", "--to", to, "--path", path, "--count",
                                std::to_string(count), "--timeout-ms", "3000"};
  std::string shown = "warren-podtool http-get --to " + to + " --path " + path;
  if (!header.empty()) {
    argv.insert(argv.end(), {"--header", header});
    shown += " --header '" + header + "'";
  }
  if (count != 1) shown += " --count " + std::to_string(count);
  if (!prompt.empty()) cmd(prompt, shown);
  auto r = c.exec_in_pod(slot, argv);
  auto j = netns::podtool_json(r.output);
  if (!prompt.empty()) out(r.output, 2, 140);
  return j.is_object() ? j : json{{"ok", false}, {"output", r.output}};
}

void Tour::step_waypoint() {
  title("8. A waypoint: HTTP routing and L7 policy for the catalog");
  auto& ctl = mesh_->controller();
  const auto& fe = pod("frontend");
  const auto& rv = pod("reviews");
  const auto& catalog = service("catalog");
  say("The nodes see connections; a waypoint (warren-waypoint) sees HTTP requests. Put in front of a");
  say("Service, it gets the Service's traffic from the nodes over HBONE, routes each request and applies");
  say("L7 policy. The catalog pods first switch from their echo server to HTTP/1.1:");
  for (const char* name : {"catalog-v1", "catalog-v2"}) {
    checkpoint();
    const auto& p = pod(name);
    servers_.erase(name);  // stops the echo server
    std::string port = std::to_string(p.port);
    cmd(p.prompt(), "warren-podtool http-serve --port " + port + " --name " + p.name +
                        "   # answers \"<name> <method> <path>\", header x-backend: <name>");
    auto s = c_->spawn_in_pod(*p.slot, {podtool_path(), "http-serve", "--port", port, "--name", p.name},
                              "app-" + p.ns + "-" + p.name + "-http.log");
    bool up = e2e::wait_until([&] { return contains(s->log(), "listening") || !s->alive(); }, 5s);
    must(up && s->alive(), p.prompt() + "'s HTTP server", s->log());
    servers_[name] = std::move(s);
  }
  // Before the waypoint: the node balances connections, one request each, over both versions.
  std::set<std::string> before;
  std::string seen;
  for (int i = 0; i < 20 && before.size() < 2; i++) {
    checkpoint();
    auto r = http_get(*c_, *fe.slot, "", catalog.addr(), "/", "x-canary: yes");
    seen += r.dump() + "\n";
    for (auto& b : r.value("backends", json::array()))
      if (b.is_string() && !b.get<std::string>().empty()) before.insert(b.get<std::string>());
  }
  claim(before.size() == 2, "without a waypoint \"x-canary: yes\" means nothing: the node balances over both versions",
        seen);

  say("");
  std::string text = e2e::read_file(examples_ + "/" + kWaypointFile);
  say("examples/mesh/" + std::string(kWaypointFile) + " holds the Istio and Gateway API objects, unchanged:");
  auto objs = controller::parse_manifest(text, false);
  must(objs.ok(), std::string(kWaypointFile) + ": " + (objs.ok() ? "" : objs.error().message));
  for (auto& m : *objs) {
    const json& o = m.obj;
    json md = o.value("metadata", json::object());
    json spec = o.value("spec", json::object());
    std::string kind = str(o, "kind"), what = kind + " " + str(md, "namespace") + "/" + str(md, "name"), note;
    if (kind == "Gateway") {
      note = "gatewayClassName " + str(spec, "gatewayClassName") + ": the controller places a waypoint for it";
    } else if (kind == "DestinationRule") {
      for (auto& sub : spec.value("subsets", json::array())) note += (note.empty() ? "subsets " : ", ") + str(sub, "name");
    } else if (kind == "VirtualService") {
      note = std::to_string(spec.value("http", json::array()).size()) + " HTTP routes, first match wins";
    } else if (kind == "AuthorizationPolicy") {
      note = str(spec, "action", "ALLOW") + (spec.contains("targetRefs") ? ", per request at the waypoint (targetRefs)"
                                                                         : ", per connection at the pods' node (selector)");
    }
    out(what + std::string(what.size() < 46 ? 46 - what.size() : 1, ' ') + "# " + note, 1, 160);
  }
  std::string name = fs::path(kWaypointFile).filename().string();
  cmd("host", std::string("cp examples/mesh/") + kWaypointFile + " " + manifests() + "/");
  ctl.write_manifest(name, text);
  // The catalog Service opts in with a label (the live services.yaml, edited).
  std::string svcs = ctl.read_manifest("services.yaml");
  const std::string anchor = "  name: catalog\n  namespace: shop\n";
  auto at = svcs.find(anchor);
  must(at != std::string::npos, "services.yaml has the catalog Service (" + anchor + ")");
  svcs.insert(at + anchor.size(), "  labels:\n    warren.io/use-waypoint: waypoint\n");
  cmd("host", "$EDITOR " + manifests() + "/services.yaml   # the catalog Service gets a label:");
  out("metadata:\n  name: catalog\n  namespace: shop\n  labels:\n    warren.io/use-waypoint: waypoint", 5);
  auto t0 = Clock::now();
  ctl.write_manifest("services.yaml", svcs);
  bool placed = e2e::wait_until([&] { return !mesh_->waypoint("shop", "waypoint").is_null(); }, 10s) &&
                mesh_->wait_waypoint_ready("shop", "waypoint", 15s);
  must(placed, "the controller placed the waypoint", mesh_->waypoint_log("shop", "waypoint") + ctl.log());
  json wp = mesh_->waypoint("shop", "waypoint");
  auto dump = mesh_->waypoint_config_dump("shop", "waypoint");
  std::string wp_id = dump.is_object() ? str(dump.value("waypoint", json::object()), "identity") : "";
  if (auto l = last_line_with(ctl.log(), "waypoint"); !l.empty()) {
    cmd("host", "grep waypoint $W/controller.log | tail -1");
    out(W(log_msg(l)), 1, 140);
  }
  claim(!wp_id.empty(), "the controller started warren-waypoint for the Gateway (its --waypoint-launcher) in " +
                            str(wp, "pod") + " " + str(wp, "ip") + ", identity " + wp_id);
  // Routed through it once the nodes have the Service's waypoint.
  bool through = e2e::wait_until([&] {
    checkpoint();
    return http_get(*c_, *fe.slot, "", catalog.addr(), "/admin")["statuses"] == json::array({403});
  }, 10s, 100ms);
  long took = ms_since(t0);
  must(through, "the catalog's requests go through the waypoint", mesh_->waypoint_log("shop", "waypoint"));
  claim(true, "the catalog's traffic goes through the waypoint " + std::to_string(took) +
                  " ms after the files were written");

  say("");
  say("The frontend calls the catalog, in HTTP now:");
  auto plain = http_get(*c_, *fe.slot, fe.prompt(), catalog.addr(), "/products", "", 4);
  claim(plain["statuses"] == json::array({200, 200, 200, 200}) &&
            plain["backends"] == json::array({"catalog-v1", "catalog-v1", "catalog-v1", "catalog-v1"}),
        "every request to catalog-v1 (the VirtualService's default route)", plain.dump());
  auto canary = http_get(*c_, *fe.slot, fe.prompt(), catalog.addr(), "/products", "x-canary: yes", 4);
  claim(canary["backends"] == json::array({"catalog-v2", "catalog-v2", "catalog-v2", "catalog-v2"}),
        "with \"x-canary: yes\" every request to catalog-v2: routed per request by a header", canary.dump());
  auto admin = http_get(*c_, *fe.slot, fe.prompt(), catalog.addr(), "/admin");
  claim(admin["statuses"] == json::array({403}) && admin["backends"] == json::array({""}),
        "/admin is answered 403 by the waypoint (the L7 DENY); no catalog pod saw it", admin.dump());
  auto other = http_get(*c_, *rv.slot, rv.prompt(), catalog.addr(), "/products");
  claim(other["statuses"] == json::array({403}),
        "reviews is refused with 403 too: \"only the frontend\" holds, checked per request at the waypoint",
        other.dump());
  std::string metrics = netns::http_get_in(str(wp, "netnsPath"), str(wp, "ip"), 15020, "/metrics");
  auto samples = e2e::parse_metrics(metrics);
  double ok = e2e::metric_sum(samples, "istio_requests_total", {{"reporter", "waypoint"}, {"response_code", "200"}});
  double denied = e2e::metric_sum(samples, "istio_requests_total", {{"reporter", "waypoint"}, {"response_code", "403"}});
  cmd("host", "nsenter --net=" + str(wp, "netnsPath") + " curl -s " + str(wp, "ip") +
                  ":15020/metrics | grep ^istio_requests_total");
  say("(labels shortened: source -> destination workload, response code, response flags, count)");
  for (auto& m : samples) {
    if (m.name != "istio_requests_total" || m.labels["reporter"] != "waypoint") continue;
    std::ostringstream o;
    o << m.labels["source_workload"] << " -> " << m.labels["destination_workload"] << "  "
      << m.labels["response_code"] << "  flags=" << m.labels["response_flags"] << "  " << m.value;
    out(o.str(), 1, 140);
  }
  claim(ok >= 8 && denied >= 3, "the waypoint counts requests (Istio's istio_requests_total, reporter=\"waypoint\"): " +
                                    std::to_string(static_cast<long>(ok)) + " answered 200, " +
                                    std::to_string(static_cast<long>(denied)) + " refused with 403");
}

void Tour::step_next() {
  title("9. Where to look next");
  auto& ctl = mesh_->controller();
  std::string N = netns::cli_path(), P = podtool_path();
  const auto& fe = pod("frontend");
  int rn = pod("reviews").slot->node;
  struct Try {
    std::vector<std::string> argv;
    std::string shown, expect;
  };
  auto ns = [](const std::string& path) { return "nsenter --net=" + path; };
  std::string node1 = c_->node(1).netns_path, noder = c_->node(rn).netns_path;
  std::string slot = std::to_string(fe.slot->node) + "/" + std::to_string(fe.slot->index);
  std::vector<Try> tries = {
      {{"/usr/bin/nsenter", "--net=" + ctl.netns_path(), "/usr/bin/curl", "-s", ctl.monitoring() + "/debug/nodes"},
       ns(ctl.netns_path()) + " curl -s " + ctl.monitoring() + "/debug/nodes      # also /metrics, /debug/rejected",
       "\"acked\""},
      {{"/usr/bin/nsenter", "--net=" + node1, "/usr/bin/curl", "-s", "127.0.0.1:15000/config_dump"},
       ns(node1) + " curl -s 127.0.0.1:15000/config_dump | jq .controller", "\"controller\""},
      {{"/usr/bin/nsenter", "--net=" + noder, "/usr/bin/curl", "-s", c_->node(rn).ip + ":15020/metrics"},
       ns(noder) + " curl -s " + c_->node(rn).ip + ":15020/metrics", "istio_tcp_connections_opened_total"},
      {{N, "exec", "--tag", tag_, "--pod", slot, "--", P, "connect", "--to", service("reviews").addr(),
        "--send-marker", "hi", "--expect-echo"},
       "$N exec --tag " + tag_ + " --pod " + slot + " -- $P connect --to " + service("reviews").addr() +
           " --send-marker hi --expect-echo      # as " + fe.prompt(),
       "\"echo_ok\":true"}};
  for (auto& t : tries) {
    auto r = e2e::run(t.argv);
    must(r.exit_code == 0 && contains(r.output, t.expect), "suggested command: " + t.shown, r.output);
  }
  say(keep ? "While the mesh runs, as root from another terminal:" : "While the mesh runs (not after --exit), as root:");
  std::cout << "  W=" << c_->dir() << "\n  N=" << N << "\n  P=" << P << "\n";
  for (auto& t : tries) std::cout << "  " << t.shown << "\n";
  std::cout << "  " << manifests() << "/   the live manifests: edit, add or remove files\n"
            << "      (e.g. cp examples/mesh/" << kDenyFile << " there again)\n"
            << "  $W/controller.log, node-{1.." << nodes_ << "}.log, access-{1.." << nodes_
            << "}.log   the logs\n"
            << "  examples/mesh/README.md explains the manifests; ARCHITECTURE.md the pieces.\n";
}

}  // namespace warren::demo
