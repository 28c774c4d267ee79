#include "controller_mesh.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "mesh.h"

namespace warren::netns {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

std::string random_hex(size_t bytes) {
  std::vector<unsigned char> b(bytes);
  RAND_bytes(b.data(), static_cast<int>(b.size()));
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (unsigned char c : b) {
    s += hex[c >> 4];
    s += hex[c & 15];
  }
  return s;
}

void write_private(const std::string& path, const std::string& data) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot write " + tmp);
  bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
  ::close(fd);
  if (!ok) throw std::runtime_error("cannot write " + tmp);
  fs::rename(tmp, path);
}

}  // namespace

// ---- Controller ---------------------------------------------------------------------------

Controller::Controller(Cluster& c, ControllerOptions o) : c_(c), o_(std::move(o)) {
  dir_ = c_.dir() + "/controller";
  fs::create_directories(manifests_dir());
  fs::create_directories(state_dir());
  std::string lines;
  for (auto& n : c_.nodes()) {
    tokens_[n.index] = random_hex(16);
    write_private(token_file(n.index), tokens_[n.index] + "\n");
    lines += tokens_[n.index] + " " + n.name + "\n";
  }
  write_private(tokens_file(), lines);
  // The controller's own netns on the fabric bridge.
  std::string ns = netns();
  auto r = e2e::run({"/usr/sbin/ip", "netns", "add", ns});
  if (r.exit_code != 0) throw std::runtime_error("ip netns add " + ns + ": " + r.output);
  ip_batch(c_.fabric_netns(), {"link add name ctl0 type veth peer name eth0 netns " + ns,
                               "link set ctl0 master br0", "link set ctl0 up"});
  std::vector<std::string> cmds{"link set lo up", std::string("addr add ") + kIp + "/24 dev eth0",
                                "link set eth0 up"};
  // Pods' networks through their node: waypoints run in pod netns and reach
  // the controller from their pod IP.
  for (auto& n : c_.nodes()) cmds.push_back("route add " + n.pod_cidr + " via " + n.ip);
  ip_batch(ns, cmds);
}

Controller::~Controller() {
  if (proc_) proc_->stop();
}

std::string Controller::token_file(int node) const {
  return dir_ + "/token-node-" + std::to_string(node);
}

std::string Controller::token(int node) const { return tokens_.at(node); }

std::string Controller::log_path() const { return c_.log_path(log_name_); }

std::vector<std::string> Controller::argv() const {
  std::vector<std::string> a{e2e::bin("/controller/warren-controller"),
                             "--manifests", manifests_dir(),
                             "--state-dir", state_dir(),
                             "--bootstrap-tokens", tokens_file(),
                             "--listen", address(),
                             "--monitoring", monitoring(),
                             "--log-level", o_.log_level};
  if (!o_.cert_ttl.empty()) a.insert(a.end(), {"--cert-ttl", o_.cert_ttl});
  if (!o_.waypoint_launcher.empty()) a.insert(a.end(), {"--waypoint-launcher", o_.waypoint_launcher});
  return a;
}

void Controller::start(std::chrono::milliseconds timeout) {
  if (proc_ && proc_->alive()) throw std::runtime_error("warren-controller already runs");
  std::vector<std::string> cmd{nsexec_path(), "--netns", netns_path(), "--"};
  auto a = argv();
  cmd.insert(cmd.end(), a.begin(), a.end());
  // controller.log, then controller-2.log ... after restarts.
  starts_++;
  log_name_ = starts_ == 1 ? "controller.log" : "controller-" + std::to_string(starts_) + ".log";
  proc_ = std::make_unique<e2e::Process>(cmd, log_path());
  bool up = e2e::wait_until(
      [&] { return !get("/healthz/ready").empty() || !proc_->alive(); }, timeout);
  if (!up || !proc_->alive())
    throw std::runtime_error("warren-controller did not become ready:\n" + proc_->log());
}

void Controller::stop() {
  if (proc_) proc_->stop();
}

void Controller::kill() {
  if (!proc_) return;
  proc_->signal(SIGKILL);
  proc_->wait_exit(5s);
}

bool Controller::alive() { return proc_ && proc_->alive(); }

std::string Controller::log() const { return proc_ ? proc_->log() : ""; }

void Controller::write_manifest(const std::string& rel, const std::string& text) {
  fs::path p = fs::path(manifests_dir()) / rel;
  fs::create_directories(p.parent_path());
  fs::path tmp = p.parent_path() / ("." + p.filename().string() + ".tmp");
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << text;
    if (!f.flush()) throw std::runtime_error("cannot write " + tmp.string());
  }
  fs::rename(tmp, p);
}

void Controller::remove_manifest(const std::string& rel) {
  std::error_code ec;
  fs::remove(fs::path(manifests_dir()) / rel, ec);
}

std::string Controller::read_manifest(const std::string& rel) const {
  return e2e::read_file((fs::path(manifests_dir()) / rel).string());
}

std::string Controller::get(const std::string& path) {
  return http_get_in(netns_path(), kIp, kMonitoringPort, path);
}

json Controller::debug_nodes() {
  auto body = get("/debug/nodes");
  if (body.empty()) return json();
  auto j = json::parse(body, nullptr, false);
  return j.is_discarded() ? json() : j;
}

uint64_t Controller::version() {
  auto j = debug_nodes();
  return j.is_object() ? j.value("version", 0ull) : 0;
}

bool Controller::wait_acked(size_t nodes, uint64_t min_version, std::chrono::milliseconds timeout) {
  return e2e::wait_until(
      [&] {
        auto j = debug_nodes();
        if (!j.is_object() || !j.contains("nodes")) return false;
        uint64_t v = j.value("version", 0ull);
        if (v == 0 || v < min_version) return false;
        size_t ok = 0;
        for (auto& n : j["nodes"])
          if (n.value("connected", false) && n.value("acked", 0ull) == v) ok++;
        return ok >= nodes;
      },
      timeout, 20ms);
}

double Controller::metric(const std::string& name, const std::map<std::string, std::string>& match) {
  return e2e::metric_sum(e2e::parse_metrics(get("/metrics")), name, match);
}

// ---- manifests ----------------------------------------------------------------------------

namespace {

// A string YAML would read as something else (or not at all) is quoted.
std::string scalar(const json& v) {
  if (!v.is_string()) return v.dump();
  const std::string& s = v.get_ref<const std::string&>();
  if (s.empty()) return "\"\"";
  // A number, true, false, null ... as JSON; YAML 1.1's yes/no/on/off too.
  bool quote = !json::parse(s, nullptr, false).is_discarded();
  std::string l;
  for (char c : s) l += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* w : {"yes", "no", "on", "off", "y", "n", "~", "null", "true", "false"})
    if (l == w) quote = true;
  if (s.find_first_of(":#{}[],&*!|>'\"%@`\n") != std::string::npos) quote = true;
  if (s.front() == ' ' || s.back() == ' ' || s.front() == '-' || s.front() == '?') quote = true;
  return quote ? json(s).dump() : s;
}

void yaml_into(const json& j, std::ostream& o, int indent, bool in_list) {
  std::string pad(static_cast<size_t>(indent), ' ');
  if (j.is_object()) {
    bool first = true;
    for (auto& [k, v] : j.items()) {
      o << (first && in_list ? "" : pad) << scalar(json(k)) << ":";
      if (v.is_primitive() || v.empty()) {
        o << " " << (v.is_primitive() ? scalar(v) : v.is_array() ? "[]" : "{}") << "\n";
      } else {
        o << "\n";
        yaml_into(v, o, v.is_array() ? indent : indent + 2, false);
      }
      first = false;
    }
  } else if (j.is_array()) {
    for (auto& v : j) {
      o << pad << "- ";
      if (v.is_primitive() || v.empty())
        o << (v.is_primitive() ? scalar(v) : v.is_array() ? "[]" : "{}") << "\n";
      else if (v.is_object())
        yaml_into(v, o, indent + 2, true);
      else {
        o << "\n";
        yaml_into(v, o, indent + 2, false);
      }
    }
  } else {
    o << pad << scalar(j) << "\n";
  }
}

// Kubernetes order for the top-level keys (nlohmann::json sorts them).
nlohmann::ordered_json k8s_order(const json& j) {
  nlohmann::ordered_json o = nlohmann::ordered_json::object();
  for (const char* k : {"apiVersion", "kind", "metadata", "spec", "status"})
    if (j.contains(k)) o[k] = j[k];
  for (auto& [k, v] : j.items())
    if (!o.contains(k)) o[k] = v;
  return o;
}

}  // namespace

std::string to_yaml(const json& j) {
  std::ostringstream o;
  if (j.is_object() && j.contains("kind")) {
    // Keep apiVersion, kind, metadata, spec, status in that order.
    auto ord = k8s_order(j);
    for (auto& [k, v] : ord.items()) {
      json one = json::object();
      one[k] = json::parse(v.dump());
      yaml_into(one, o, 0, false);
    }
  } else {
    yaml_into(j, o, 0, false);
  }
  return o.str();
}

std::string to_yaml_documents(const std::vector<json>& docs) {
  std::string s;
  for (size_t i = 0; i < docs.size(); i++) {
    if (i) s += "---\n";
    s += to_yaml(docs[i]);
  }
  return s;
}

json pod_manifest(const Cluster& c, const PodInfo& p, const PodSpec& s) {
  json labels = json::object();
  if (s.labels.empty()) labels["app"] = s.name.empty() ? p.name : s.name;
  for (auto& [k, v] : s.labels) labels[k] = v;
  json md = {{"name", s.name.empty() ? p.name : s.name},
             {"namespace", s.k8s_namespace.empty() ? p.k8s_namespace : s.k8s_namespace},
             {"uid", s.uid.empty() ? p.uid : s.uid},
             {"labels", labels}};
  json container = {{"name", "app"},
                    {"image", "warren-podtool"},
                    {"ports", json::array({{{"containerPort", s.port}}})}};
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata", md},
          {"spec",
           {{"nodeName", c.node(p.node).name},
            {"serviceAccountName", s.service_account.empty() ? p.service_account : s.service_account},
            {"containers", json::array({container})}}},
          {"status", {{"phase", "Running"}, {"podIP", p.ip}}}};
}

json namespace_manifest(const std::string& name, bool enrolled) {
  json md = {{"name", name}};
  if (enrolled) md["labels"] = {{"warren.io/dataplane-mode", "enabled"}};
  return {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", md}};
}

json service_manifest(const std::string& name, const std::string& ns, const std::string& vip,
                      uint16_t port, uint16_t target_port,
                      const std::map<std::string, std::string>& selector) {
  json sel = json::object();
  for (auto& [k, v] : selector) sel[k] = v;
  return {{"apiVersion", "v1"},
          {"kind", "Service"},
          {"metadata", {{"name", name}, {"namespace", ns}}},
          {"spec",
           {{"clusterIP", vip},
            {"selector", sel},
            {"ports", json::array({{{"port", port}, {"targetPort", target_port}, {"protocol", "TCP"}}})}}}};
}

}  // namespace warren::netns
