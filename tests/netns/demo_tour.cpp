// warren-demo's tour: the example application, the cluster, the control
// plane (demo_tour.h).
#include "demo_tour.h"

#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>
#include <sstream>

#include "local_manifest.h"  // the controller's own parser

namespace warren::demo {

namespace fs = std::filesystem;
using nlohmann::json;
using netns::podtool_path;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

Tour::Tour(std::string examples_dir) : examples_(std::move(examples_dir)) {}
Tour::~Tour() { teardown(); }

void Tour::teardown() {
  servers_.clear();
  mesh_.reset();
  c_.reset();
}

void Tour::dump_logs() {
  if (!mesh_) return;
  if (mesh_->controller_mode()) {
    std::cout << "--- warren-controller log (last lines) ---\n";
    out(mesh_->controller().log(), 15, 200);
  }
  for (int n = 1; n <= nodes_; n++) {
    std::cout << "--- warren-node " << n << " log (last lines) ---\n";
    std::string log = mesh_->node_log(n);
    std::istringstream in(log);
    std::vector<std::string> lines;
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    std::string tail;
    for (size_t i = lines.size() > 15 ? lines.size() - 15 : 0; i < lines.size(); i++) tail += lines[i] + "\n";
    out(tail, 15, 200);
  }
}

// ---- the example application --------------------------------------------------------------

void Tour::load() {
  std::vector<fs::path> files;
  for (auto& e : fs::directory_iterator(examples_)) {
    auto ext = e.path().extension().string();
    if (e.is_regular_file() && (ext == ".yaml" || ext == ".yml" || ext == ".json"))
      files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  for (auto& f : files) {
    files_.push_back(f.filename().string());
    auto objs = controller::parse_manifest(e2e::read_file(f.string()), f.extension() == ".json");
    must(objs.ok(), f.string() + ": " + (objs.ok() ? "" : objs.error().message));
    for (auto& m : *objs) {
      const json& o = m.obj;
      std::string kind = str(o, "kind");
      json md = o.value("metadata", json::object()), spec = o.value("spec", json::object());
      if (kind == "Pod") {
        AppPod p;
        p.name = str(md, "name");
        p.ns = str(md, "namespace", "default");
        p.uid = str(md, "uid", p.ns + "/" + p.name);  // the controller's default in local mode
        p.sa = str(spec, "serviceAccountName", "default");
        p.node = str(spec, "nodeName");
        p.ip = str(o.value("status", json::object()), "podIP");
        json labels = md.value("labels", json::object());
        for (auto& [k, v] : labels.items())
          if (v.is_string()) p.labels[k] = v;
        for (auto& ct : spec.value("containers", json::array()))
          for (auto& port : ct.value("ports", json::array()))
            if (port.contains("containerPort")) p.port = port["containerPort"].get<uint16_t>();
        // The cluster's layout: slot K of node N is 10.N.0.(10+K).
        int n = 0, a = 0, b = 0, k = 0;
        bool ok = std::sscanf(p.ip.c_str(), "%d.%d.%d.%d", &a, &n, &b, &k) == 4 && a == 10 &&
                  b == 0 && n >= 1 && n <= 9 && k > 10 && k <= 40 && p.node == "node-" + std::to_string(n);
        must(ok, f.filename().string() + ": pod " + p.prompt() + " (node \"" + p.node + "\", IP \"" +
                     p.ip + "\") is not at a slot of the demo's cluster: pod K on node-N is 10.N.0.(10+K)");
        nodes_ = std::max(nodes_, n);
        slots_ = std::max(slots_, k - 10);
        pods_[p.name] = p;
      } else if (kind == "Namespace") {
        json labels = md.value("labels", json::object());
        if (str(labels, "warren.io/dataplane-mode") == "enabled") enrolled_ns_.insert(str(md, "name"));
      } else if (kind == "Service") {
        AppService s;
        s.name = str(md, "name");
        s.ns = str(md, "namespace", "default");
        s.vip = str(spec, "clusterIP");
        auto ports = spec.value("ports", json::array());
        if (!ports.empty() && ports[0].contains("port")) s.port = ports[0]["port"].get<uint16_t>();
        services_[s.name] = s;
      }
    }
  }
  must(!pods_.empty(), examples_ + " has no Pod manifests");
}

const Tour::AppPod& Tour::pod(const std::string& name) const {
  auto it = pods_.find(name);
  if (it == pods_.end()) throw StepFailed("the tour needs a pod named " + name + " in " + examples_);
  return it->second;
}

const Tour::AppService& Tour::service(const std::string& name) const {
  auto it = services_.find(name);
  if (it == services_.end()) throw StepFailed("the tour needs a Service named " + name + " in " + examples_);
  return it->second;
}

std::string Tour::manifests() const { return W(mesh_->controller().manifests_dir()); }

std::string Tour::W(std::string text) const {
  const std::string d = c_ ? c_->dir() : std::string();
  for (size_t at; !d.empty() && (at = text.find(d)) != std::string::npos;) text.replace(at, d.size(), "$W");
  return text;
}

e2e::CmdResult Tour::connect(const AppPod& from, const std::string& to, const std::string& marker,
                             bool print, int timeout_ms) {
  if (print)
    cmd(from.prompt(), "warren-podtool connect --to " + to + " --send-marker " + marker + " --expect-echo");
  auto r = c_->exec_in_pod(*from.slot, {podtool_path(), "connect", "--to", to, "--send-marker", marker,
                                        "--expect-echo", "--timeout-ms", std::to_string(timeout_ms)});
  if (print) out(r.output, 3);
  return r;
}

std::vector<std::string> Tour::peers(const std::string& pod_name) const {
  std::vector<std::string> r;
  auto it = servers_.find(pod_name);
  if (it == servers_.end()) return r;
  std::istringstream in(it->second->log());
  for (std::string line; std::getline(in, line);) {
    auto j = json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("peer")) r.push_back(j["peer"]);
  }
  return r;
}

std::map<std::string, size_t> Tour::peer_counts() const {
  std::map<std::string, size_t> m;
  for (auto& [name, _] : servers_) m[name] = peers(name).size();
  return m;
}

std::string Tour::answered(const std::map<std::string, size_t>& before) {
  std::string who;
  e2e::wait_until([&] {
    for (auto& [name, n] : before)
      if (peers(name).size() > n) who = name;
    return !who.empty();
  }, 3s);
  return who;
}

// The last access log entry of node n between the two identities, as one line.
std::string Tour::access_line(int node, const std::string& src, const std::string& dst) {
  std::string found;
  e2e::wait_until([&] {
    std::istringstream in(e2e::read_file(c_->dir() + "/access-" + std::to_string(node) + ".log"));
    for (std::string line; std::getline(in, line);) {
      auto j = json::parse(line, nullptr, false);
      if (!j.is_object() || str(j, "src_identity") != src || str(j, "dst_identity") != dst) continue;
      found = str(j, "src_identity") + " -> " + str(j, "dst_identity") + "  " +
              std::to_string(j.value("bytes_received", 0)) + " bytes in, " +
              std::to_string(j.value("bytes_sent", 0)) + " out";
    }
    return !found.empty();
  }, 3s);
  return found;
}

std::string Tour::wire_lines(const std::string& pcap, const std::string& filter) {
  auto t = c_->exec_in_node(1, {"tcpdump", "-nn", "-t", "-r", pcap, filter});
  std::string lines;
  std::istringstream in(t.output);
  for (std::string l; std::getline(in, l);)
    if (!starts_with(l, "reading from")) lines += l + "\n";
  return lines;
}

// ---- the steps ----------------------------------------------------------------------------

void Tour::run() {
  std::cout << bold("Warren: a sidecarless service mesh, on this machine") << "\n"
            << "  A controller reads Kubernetes YAML and runs a certificate authority; a proxy per node\n"
            << "  (warren-node) captures its pods' connections with eBPF and carries them over mutual TLS,\n"
            << "  checking Istio's policies. Every line marked with a check below was verified as printed.\n";
  step_cluster();
  step_control_plane();
  step_traffic();
  step_allow();
  step_deny();
  step_enroll();
  step_metrics();
  step_waypoint();
  step_next();
  if (keep) wait_for_ctrl_c();
}

void Tour::step_cluster() {
  title("1. A cluster on this machine, and an application on it");
  load();
  netns::Topology t;
  t.nodes = nodes_;
  t.pods_per_node = slots_ + 1;  // and a spare slot per node for waypoints (step 8)
  c_ = netns::Cluster::create(t);
  tag_ = c_->tag();
  say("Nodes and pods are Linux network namespaces (this machine's own network is never touched):");
  say(std::to_string(nodes_) + " nodes on a bridge, " + std::to_string(slots_) +
      " pods each (and a spare slot for a waypoint). The application is examples/mesh/pods.yaml;");
  say("each pod runs an echo server:");
  say("");
  for (auto& n : c_->nodes()) {
    std::string line = n.name + "  " + n.ip + "   ";
    for (auto& slot : n.pods)
      for (auto& [name, p] : pods_)
        if (p.ip == slot.ip) {
          pods_[name].slot = &slot;
          line += "  " + p.prompt() + " " + p.ip;
        }
    say(line);
  }
  for (auto& [name, p] : pods_) {
    checkpoint();
    auto s = c_->spawn_in_pod(*p.slot, {podtool_path(), "serve", "--port", std::to_string(p.port), "--echo"},
                              "app-" + p.ns + "-" + p.name + ".log");
    bool up = e2e::wait_until([&] { return contains(s->log(), "listening") || !s->alive(); }, 5s);
    must(up && s->alive(), p.prompt() + "'s echo server", s->log());
    servers_[name] = std::move(s);
  }
  claim(true, std::to_string(pods_.size()) + " pods up, each answering on its port (warren-podtool serve --echo)");
  say("");
  say("This run's files (configs, logs, captures) are under W=" + c_->dir());
  say("Commands are shown as you could type them: [controller]$, [node-1]$, [shop/frontend]$ ... run");
  say("in that network namespace (a pod's also in its cgroup), [host]$ on this machine; step 9 says how.");
}

void Tour::step_control_plane() {
  title("2. The control plane: warren-controller reads Kubernetes YAML from a directory");
  netns::MeshOptions o;
  o.controller = true;
  o.generate_manifests = false;
  o.manifests_from = examples_;
  o.enrolled_namespaces.assign(enrolled_ns_.begin(), enrolled_ns_.end());  // whose pods get certificates
  o.start_nodes = false;
  for (auto& n : c_->nodes()) o.waypoint_slots.push_back(c_->pod(n.index, slots_ + 1).name);  // step 8
  for (auto& [name, p] : pods_) {
    netns::PodSpec s;
    s.name = p.name;
    s.k8s_namespace = p.ns;
    s.service_account = p.sa;
    s.uid = p.uid;
    s.labels = p.labels;
    s.port = p.port;
    o.pod_specs[p.slot->name] = s;
  }
  mesh_ = std::make_unique<netns::Mesh>(*c_, o);
  auto& ctl = mesh_->controller();
  std::string files;
  for (auto& f : files_) files += (files.empty() ? "" : ", ") + f;
  say("It watches a directory of the YAML you would kubectl apply: a copy of examples/mesh");
  say("(" + files + ") in $W/controller/manifests. The demo edits the copy, never examples/.");
  cmd("controller", "warren-controller --manifests " + W(ctl.manifests_dir()) + " --state-dir " +
                        W(ctl.state_dir()) + " --bootstrap-tokens " + W(ctl.tokens_file()) +
                        " --listen " + ctl.address() + " --monitoring " + ctl.monitoring());
  for (const char* what : {"local: ", "config version "})
    if (auto l = last_line_with(ctl.log(), what); !l.empty()) out(W(log_msg(l)), 1, 140);
  claim(true, "controller ready on " + ctl.address() + ", in a network namespace of its own (" +
                  ctl.netns() + ") on the nodes' bridge");

  say("");
  say("Each node runs warren-node with a small bootstrap file: its name, listeners, eBPF capture and");
  say("where the controller is; workloads, services, policies and certificates come from the controller:");
  cmd("node-1", "warren-node -c " + W(c_->dir()) + "/node-1.json   # \"controller\": {\"address\": \"" +
                    ctl.address() + "\", \"tokenFile\": ..., \"caFile\": ...}");
  for (auto& n : c_->nodes()) mesh_->start_node(n.index);
  must(ctl.wait_acked(c_->nodes().size(), 0, 10s), "the nodes acknowledged the configuration",
       ctl.get("/debug/nodes"));
  auto dn = ctl.debug_nodes();
  cmd("controller", "curl -s " + ctl.monitoring() + "/debug/nodes | jq -c '.nodes[]|{node,connected,acked}'");
  for (auto& n : dn["nodes"])
    out(json{{"node", n["node"]}, {"connected", n["connected"]}, {"acked", n["acked"]}}.dump(), 1);
  claim(true, "every node connected (bootstrap token) and acknowledged configuration version " +
                  std::to_string(dn.value("version", 0ull)));

  say("");
  say("warren-cni hands each pod to its node, as a container runtime would:");
  for (auto& [name, p] : pods_) {
    std::string output;
    int rc = mesh_->cni("ADD", *p.slot, &output);
    // A warren-node of another cluster on this machine (tests running?) whose
    // /proc scan took this pod for its own holds its capture ports until it stops.
    if (rc != 0 && contains(mesh_->node_log(p.slot->node), "Address already in use")) {
      say("note: another warren-node on this machine holds " + p.prompt() +
          "'s capture ports (netns tests running?); waiting up to 60 s");
      e2e::wait_until([&] {
        checkpoint();
        return (rc = mesh_->cni("ADD", *p.slot, &output)) == 0;
      }, 60s, 1s);
    }
    must(rc == 0, "warren-cni ADD " + p.prompt(), output);
  }
  std::vector<std::string> in, outside;
  for (auto& [name, p] : pods_) {
    bool want = enrolled_ns_.count(p.ns) && !(p.labels.count("warren.io/dataplane-mode") &&
                                             p.labels.at("warren.io/dataplane-mode") == "none");
    must(mesh_->wait_enrolled(*p.slot, want, 5s), p.prompt() + (want ? " enrolled" : " left alone"),
         mesh_->node_log(p.slot->node));
    (want ? in : outside).push_back(p.prompt());
  }
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
  };
  claim(!in.empty(), "in the mesh (namespace labelled warren.io/dataplane-mode=enabled): " + join(in));
  claim(true, "not in the mesh (namespace not labelled): " + (outside.empty() ? "none" : join(outside)));

  say("");
  say("Certificates: each node makes a key per service account of its pods and has it signed by the");
  say("controller's CA (which signs only identities of pods scheduled on the asking node); each is");
  say("renewed at about half its lifetime:");
  must(mesh_->wait_certificates(15s), "the nodes got their certificates", mesh_->controller_status(1).dump(2));
  size_t held = 0;
  for (auto& n : c_->nodes()) {
    auto st = mesh_->controller_status(n.index);
    for (auto& id : st["certificates"]["identities"]) {
      say("  " + n.name + "  " + str(id, "identity") + "  valid until " + day_time(str(id, "notAfter")) +
          ", renewal at " + time_of(str(id, "nextRenewal")));
      held++;
    }
  }
  double signed_n = ctl.metric("warren_ca_requests_total", {{"result", "signed"}});
  claim(held > 0 && signed_n >= static_cast<double>(held),
        std::to_string(held) + " certificates, issued by the controller (warren_ca_requests_total{result=\"signed\"} " +
            std::to_string(static_cast<long>(signed_n)) + ")");
}

void Tour::wait_for_ctrl_c() {
  std::cout << "\n" << bold("The mesh keeps running; press Ctrl-C to stop it and clean up.") << std::endl;
  auto& ctl = mesh_->controller();
  bool ctl_gone = false;
  while (!g_signal) {
    std::this_thread::sleep_for(200ms);
    bool nodes_ok = true;
    for (int n = 1; n <= nodes_; n++) nodes_ok = nodes_ok && mesh_->node_alive(n);
    bool ctl_ok = ctl.alive();
    if (nodes_ok && (ctl_ok || ctl_gone)) continue;
    std::this_thread::sleep_for(500ms);  // a Ctrl-C reaches the children too (same process group)
    if (g_signal) break;
    if (!nodes_ok) throw StepFailed("a warren-node exited; see its log under $W");
    // Trying that out is fair: the nodes keep serving what they were last sent.
    ctl_gone = true;
    say("");
    say("warren-controller exited. The nodes keep serving with the configuration and certificates");
    say("they hold, and reconnect (with backoff) when it is back. To start it again (same CA root):");
    std::string line = "nsenter --net=" + ctl.netns_path();
    for (auto& a : ctl.argv()) line += " " + a;
    say(line + " &");
  }
  std::cout << "\nStopping the mesh and removing the cluster ..." << std::endl;
}

}  // namespace warren::demo
