#include "mesh.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace warren::netns {

using json = nlohmann::json;
using namespace std::chrono_literals;

std::string http_get_in(const std::string& netns_path, const std::string& host, uint16_t port,
                        const std::string& path) {
  std::string out;
  std::thread t([&] {
    int ns = ::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0) return;
    int rc = ::setns(ns, CLONE_NEWNET);
    ::close(ns);
    if (rc != 0) return;
    auto r = e2e::http_get(host, port, path);
    if (r.status == 200) out = r.body;
  });
  t.join();
  return out;
}

json podtool_json(const std::string& output) {
  std::istringstream in(output);
  std::string line;
  json last;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] != '{') continue;
    try {
      last = json::parse(line);
    } catch (...) {
    }
  }
  return last;
}

Mesh::Mesh(Cluster& c, MeshOptions o) : c_(c), o_(std::move(o)) {
  if (o_.controller) {
    start_controller_mode();
    return;
  }
  ca_dir_ = c_.dir() + "/ca";
  certs_dir_ = c_.dir() + "/certs";
  e2e::dev_ca_init(ca_dir_);
  for (auto& n : c_.nodes()) {
    write_config(n.index, make_config(n.index));
    auto r = e2e::run({e2e::bin("/cli/warrenctl"), "dev-ca", "issue-config", "--ca", ca_dir_,
                       "--config", config_path(n.index), "--out", certs_dir_});
    if (r.exit_code != 0) throw std::runtime_error("issue-config: " + r.output);
  }
  if (!o_.start_nodes) return;
  for (auto& n : c_.nodes()) start_node(n.index);
  if (!o_.enroll_pods) return;
  for (auto& p : c_.all_pods()) {
    if (waypoint_slot(p.name)) continue;
    std::string out;
    if (int rc = cni("ADD", p, &out); rc != 0)
      throw std::runtime_error("warren-cni ADD " + p.name + ": " + out);
  }
}

Mesh::~Mesh() {
  for (auto& [n, proc] : nodes_)
    if (proc) proc->stop();
  for (auto& n : c_.nodes())
    e2e::run({e2e::bin("/nodeproxy/warren-node"), "-c", config_path(n.index), "--uninstall"});
  ctl_.reset();  // after the nodes: they would only retry
}

// ---- controller mode ----

Controller& Mesh::controller() {
  if (!ctl_) throw std::logic_error("the mesh is not in controller mode");
  return *ctl_;
}

PodSpec Mesh::spec_of(const PodInfo& p) const {
  PodSpec s;
  if (auto it = o_.pod_specs.find(p.name); it != o_.pod_specs.end()) s = it->second;
  if (s.name.empty()) s.name = p.name;
  if (s.k8s_namespace.empty()) s.k8s_namespace = p.k8s_namespace;
  if (s.service_account.empty()) s.service_account = p.service_account;
  if (s.uid.empty()) s.uid = p.uid;
  return s;
}

bool Mesh::in_mesh(const PodInfo& p, const PodSpec& s) const {
  if (auto l = s.labels.find("warren.io/dataplane-mode"); l != s.labels.end()) {
    if (l->second == "none") return false;
    if (l->second == "enabled") return true;
  }
  for (auto& o : o_.opted_out)
    if (o == p.name) return false;
  for (auto& ns : o_.enrolled_namespaces)
    if (ns == s.k8s_namespace) return true;
  return false;
}

json Mesh::make_bootstrap(int node) const {
  json cfg = make_config(node);
  for (const char* k : {"certificates", "namespaces", "workloads", "services", "policies",
                        "peerAuthentications"})
    cfg.erase(k);
  // Pods are enrolled through warren-cni only: the /proc scan matches pods by
  // IP host-wide and would also find other clusters' pods (every cluster uses
  // the same addresses).
  cfg["capture"]["scanProc"] = false;
  cfg["controller"] = {{"address", ctl_->address()},
                       {"tokenFile", ctl_->token_file(node)},
                       {"caFile", ctl_->ca_file()}};
  return cfg;
}

void Mesh::write_manifests() {
  std::set<std::string> enrolled(o_.enrolled_namespaces.begin(), o_.enrolled_namespaces.end());
  std::set<std::string> all = enrolled;
  std::vector<json> pods;
  for (auto& p : c_.all_pods()) {
    if (waypoint_slot(p.name)) continue;
    PodSpec s = spec_of(p);
    all.insert(s.k8s_namespace);
    if (s.labels.empty()) s.labels["app"] = s.name;
    for (auto& o : o_.opted_out)
      if (o == p.name) s.labels["warren.io/dataplane-mode"] = "none";
    for (auto& svc : o_.services)
      for (auto& e : svc.endpoints)
        if (e == p.name) s.labels["service.warren.test/" + svc.name] = "true";
    pods.push_back(pod_manifest(c_, p, s));
  }
  std::vector<json> nss;
  for (auto& ns : all) nss.push_back(namespace_manifest(ns, enrolled.count(ns) != 0));
  std::vector<json> svcs;
  for (auto& svc : o_.services)
    svcs.push_back(service_manifest(svc.name, "default", svc.vip, svc.port, svc.target_port,
                                    {{"service.warren.test/" + svc.name, "true"}}));
  std::vector<json> pols;
  for (auto* list : {&o_.policies, &o_.peer_authentications})
    for (auto& p : *list) pols.push_back(p);
  ctl_->write_manifest("00-namespaces.yaml", to_yaml_documents(nss));
  ctl_->write_manifest("10-pods.yaml", to_yaml_documents(pods));
  if (!svcs.empty()) ctl_->write_manifest("20-services.yaml", to_yaml_documents(svcs));
  if (!pols.empty()) ctl_->write_manifest("30-policies.yaml", to_yaml_documents(pols));
}

void Mesh::start_controller_mode() {
  if (!o_.waypoint_slots.empty())
    o_.controller_options.waypoint_launcher =
        std::string(WARREN_NETNS_BIN_DIR) + "/warren-netns-waypoint " + waypoint_state_path();
  ctl_ = std::make_unique<Controller>(c_, o_.controller_options);
  if (!o_.waypoint_slots.empty()) write_waypoint_state();
  if (!o_.manifests_from.empty()) {
    for (auto& e : std::filesystem::directory_iterator(o_.manifests_from)) {
      auto ext = e.path().extension().string();
      if (e.is_regular_file() && (ext == ".yaml" || ext == ".yml" || ext == ".json"))
        ctl_->write_manifest(e.path().filename().string(), e2e::read_file(e.path().string()));
    }
  }
  if (o_.generate_manifests) write_manifests();
  ctl_->start();
  for (auto& n : c_.nodes()) write_config(n.index, make_bootstrap(n.index));
  if (!o_.start_nodes) return;
  for (auto& n : c_.nodes()) start_node(n.index);
  if (!o_.enroll_pods) return;
  for (auto& p : c_.all_pods()) {
    if (waypoint_slot(p.name)) continue;
    std::string out;
    if (int rc = cni("ADD", p, &out); rc != 0)
      throw std::runtime_error("warren-cni ADD " + p.name + ": " + out);
  }
  if (!wait_certificates())
    throw std::runtime_error("the nodes did not get their certificates from the controller:\n" +
                             controller_status(1).dump(2) + "\n" + ctl_->log());
}

// ---- waypoints (MeshOptions::waypoint_slots) ----

bool Mesh::waypoint_slot(const std::string& pod) const {
  for (const auto& s : o_.waypoint_slots)
    if (s == pod) return true;
  return false;
}

void Mesh::write_waypoint_state() {
  json slots = json::array();
  for (const auto& name : o_.waypoint_slots)
    for (auto& p : c_.all_pods())
      if (p.name == name)
        slots.push_back({{"pod", p.name},
                         {"netnsPath", p.netns_path},
                         {"cgroup", p.cgroup},
                         {"ip", p.ip},
                         {"node", c_.node(p.node).name}});
  if (slots.size() != o_.waypoint_slots.size()) throw std::runtime_error("waypoint_slots names a pod the cluster lacks");
  std::string dir = ctl_->dir() + "/waypoints";
  std::filesystem::create_directories(dir);
  json st = {{"controller", ctl_->address()},
             {"caFile", ctl_->ca_file()},
             {"tokensFile", ctl_->tokens_file()},
             {"manifestsDir", ctl_->manifests_dir()},
             {"dir", dir},
             {"logDir", c_.dir()},
             {"tag", c_.tag()},
             {"nsexec", nsexec_path()},
             {"waypointBin", e2e::bin("/waypoint/warren-waypoint")},
             {"logLevel", o_.controller_options.log_level},
             {"slots", slots},
             {"running", json::object()}};
  std::ofstream(waypoint_state_path()) << st.dump(2);
}

json Mesh::waypoint(const std::string& ns, const std::string& gateway) const {
  auto st = json::parse(e2e::read_file(waypoint_state_path()), nullptr, false);
  if (!st.is_object() || !st.contains("running") || !st["running"].contains(ns + "/" + gateway)) return json();
  return st["running"][ns + "/" + gateway];
}

json Mesh::waypoint_config_dump(const std::string& ns, const std::string& gateway) {
  json w = waypoint(ns, gateway);
  if (w.is_null()) return json();
  auto body = http_get_in(w.value("netnsPath", ""), "127.0.0.1", 15000, "/config_dump");
  auto j = json::parse(body, nullptr, false);
  return j.is_discarded() ? json() : j;
}

bool Mesh::wait_waypoint_ready(const std::string& ns, const std::string& gateway, std::chrono::milliseconds timeout) {
  return e2e::wait_until(
      [&] {
        json w = waypoint(ns, gateway);
        return !w.is_null() && !http_get_in(w.value("netnsPath", ""), "127.0.0.1", 15000, "/healthz/ready").empty();
      },
      timeout, 50ms);
}

std::string Mesh::waypoint_log(const std::string& ns, const std::string& gateway) const {
  return e2e::read_file(c_.log_path("waypoint-" + ns + "-" + gateway + ".log"));
}

json Mesh::controller_status(int node) {
  auto d = config_dump(node);
  return d.is_object() && d.contains("controller") ? d["controller"] : json::object();
}

bool Mesh::wait_certificates(std::chrono::milliseconds timeout) {
  if (!ctl_) return true;
  return e2e::wait_until(
      [&] {
        for (auto& n : c_.nodes()) {
          std::set<std::string> want;
          for (auto& p : n.pods) {
            if (!o_.generate_manifests && !o_.pod_specs.count(p.name)) continue;
            if (waypoint_slot(p.name)) continue;
            PodSpec s = spec_of(p);
            if (!in_mesh(p, s)) continue;  // plain TCP: no certificate
            want.insert("spiffe://cluster.local/ns/" + s.k8s_namespace + "/sa/" + s.service_account);
          }
          auto st = controller_status(n.index);
          if (!st.contains("certificates")) return false;
          for (auto& id : st["certificates"].value("identities", json::array()))
            if (id.value("installed", false) && !id.value("inFlight", false))
              want.erase(id.value("identity", ""));
          if (!want.empty()) return false;
        }
        return true;
      },
      timeout, 50ms);
}

std::string Mesh::config_path(int node) const {
  return c_.dir() + "/node-" + std::to_string(node) + ".json";
}

std::string Mesh::pin_dir(int node) const {
  return "/sys/fs/bpf/warren/t-" + c_.tag() + "-n" + std::to_string(node);
}

json Mesh::make_config(int node) const {
  const auto& me = c_.node(node);
  json cfg;
  cfg["node"] = {{"name", me.name}, {"address", me.ip}};
  cfg["listeners"] = {{"socks5", "127.0.0.1:15080"},
                      {"admin", "127.0.0.1:15000"},
                      {"metrics", me.ip + ":15020"},
                      {"readiness", me.ip + ":15021"}};
  cfg["certificates"] = {{"rootCert", ca_dir_ + "/root-cert.pem"}, {"dir", certs_dir_}};
  cfg["capture"] = {{"mode", "inpod"},
                    {"cgroup", me.cgroup},
                    {"bpfPinDir", pin_dir(node)},
                    {"cniSocket", c_.dir() + "/cni-" + std::to_string(node) + ".sock"},
                    {"fastPath", o_.fast_path},
                    {"scanProc", true}};
  json nss = json::array();
  for (auto& ns : o_.enrolled_namespaces)
    nss.push_back({{"name", ns}, {"labels", {{"warren.io/dataplane-mode", "enabled"}}}});
  cfg["namespaces"] = nss;
  json ws = json::array();
  for (auto& p : c_.all_pods()) {
    json labels = {{"app", p.name}};
    for (auto& o : o_.opted_out)
      if (o == p.name) labels["warren.io/dataplane-mode"] = "none";
    ws.push_back({{"uid", p.uid},
                  {"name", p.name},
                  {"namespace", p.k8s_namespace},
                  {"serviceAccount", p.service_account},
                  {"node", c_.node(p.node).name},
                  {"ips", {p.ip}},
                  {"labels", labels}});
  }
  cfg["workloads"] = ws;
  json svcs = json::array();
  for (auto& s : o_.services) {
    json eps = json::array();
    for (auto& e : s.endpoints)
      for (auto& p : c_.all_pods())
        if (p.name == e) eps.push_back(p.uid);
    svcs.push_back({{"name", s.name},
                    {"namespace", "default"},
                    {"vips", {s.vip}},
                    {"ports", {{{"port", s.port}, {"targetPort", s.target_port}}}},
                    {"endpoints", eps}});
  }
  cfg["services"] = svcs;
  cfg["policies"] = o_.policies;
  cfg["peerAuthentications"] = o_.peer_authentications;
  return cfg;
}

json Mesh::config(int node) const { return json::parse(e2e::read_file(config_path(node))); }

void Mesh::write_config(int node, const json& cfg) {
  e2e::write_file_atomic(config_path(node), cfg.dump(2));
}

void Mesh::update_configs(const std::function<void(json&)>& fn) {
  for (auto& n : c_.nodes()) {
    auto dump = config_dump(n.index);
    versions_[n.index] = dump.is_object() ? dump.value("version", 0ull) : 0;
    json cfg = config(n.index);
    fn(cfg);
    write_config(n.index, cfg);
  }
}

bool Mesh::wait_config_applied(std::chrono::milliseconds timeout) {
  if (ctl_) return ctl_->wait_acked(c_.nodes().size(), 0, timeout);
  return e2e::wait_until(
      [&] {
        for (auto& n : c_.nodes()) {
          auto d = config_dump(n.index);
          if (!d.is_object() || d.value("version", 0ull) <= versions_[n.index]) return false;
        }
        return true;
      },
      timeout, 50ms);
}

void Mesh::start_node(int node) {
  auto& p = nodes_[node];
  if (p) p->stop();
  p = c_.spawn_in_node(node,
                       {e2e::bin("/nodeproxy/warren-node"), "-c", config_path(node), "--access-log",
                        c_.dir() + "/access-" + std::to_string(node) + ".log"},
                       "node-" + std::to_string(node) + ".log");
  bool up = e2e::wait_until(
      [&] { return !http_get_in(c_.node(node).netns_path, "127.0.0.1", 15000, "/healthz/ready").empty() || !p->alive(); },
      10s);
  if (!up || !p->alive())
    throw std::runtime_error("warren-node " + std::to_string(node) + " did not start:\n" + p->log());
}

void Mesh::stop_node(int node) {
  if (auto& p = nodes_[node]) p->stop();
}

void Mesh::kill_node(int node) {
  if (auto& p = nodes_[node]) {
    p->signal(SIGKILL);
    p->wait_exit(5s);
  }
}

bool Mesh::node_alive(int node) { return nodes_[node] && nodes_[node]->alive(); }

std::string Mesh::node_log(int node) const {
  auto it = nodes_.find(node);
  return it != nodes_.end() && it->second ? it->second->log() : "";
}

int Mesh::cni(const std::string& command, const PodInfo& p, std::string* out) {
  json ip = json::object();
  ip["address"] = p.ip + "/24";
  json prev = json::object();
  prev["cniVersion"] = "1.0.0";
  prev["ips"] = json::array({ip});
  json conf = json::object();
  conf["cniVersion"] = "1.0.0";
  conf["name"] = "k8s-pod-network";
  conf["type"] = "warren-cni";
  conf["socketPath"] = c_.dir() + "/cni-" + std::to_string(p.node) + ".sock";
  conf["prevResult"] = prev;
  PodSpec s = spec_of(p);
  auto r = e2e::run({"/usr/bin/env", "CNI_COMMAND=" + command, "CNI_CONTAINERID=" + p.uid,
                     "CNI_NETNS=" + p.netns_path, "CNI_IFNAME=eth0", "CNI_PATH=/opt/cni/bin",
                     "CNI_ARGS=K8S_POD_NAMESPACE=" + s.k8s_namespace + ";K8S_POD_NAME=" + s.name +
                         ";K8S_POD_UID=" + s.uid,
                     e2e::bin("/cni/warren-cni")},
                    conf.dump());
  if (out) *out = r.output;
  return r.exit_code;
}

json Mesh::config_dump(int node) {
  auto body = http_get_in(c_.node(node).netns_path, "127.0.0.1", 15000, "/config_dump");
  if (body.empty()) return json();
  try {
    return json::parse(body);
  } catch (...) {
    return json();
  }
}

bool Mesh::wait_enrolled(const PodInfo& p, bool enrolled, std::chrono::milliseconds timeout) {
  return e2e::wait_until(
      [&] {
        auto d = config_dump(p.node);
        if (!d.is_object() || !d.contains("capture")) return false;
        for (auto& pod : d["capture"]["pods"])
          for (auto& ip : pod["ips"])
            if (ip == p.ip) return pod["enrolled"].get<bool>() == enrolled;
        return !enrolled;
      },
      timeout, 50ms);
}

std::string Mesh::metrics(int node) {
  return http_get_in(c_.node(node).netns_path, c_.node(node).ip, 15020, "/metrics");
}

uint64_t Mesh::bpf_stat(int node, const std::string& name) {
  auto d = config_dump(node);
  if (!d.is_object() || !d.contains("capture")) return 0;
  return d["capture"]["bpfStats"].value(name, 0ull);
}

double Mesh::metric(int node, const std::string& name, const std::map<std::string, std::string>& match) {
  return e2e::metric_sum(e2e::parse_metrics(metrics(node)), name, match);
}

}  // namespace warren::netns
