#include "plugin.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "enroll_client.h"
#include "enroll_proto.h"

namespace warren::cni {

namespace {

using nlohmann::json;

constexpr const char* kUsage =
    "warren-cni: chained CNI plugin that enrolls pods with warren-node.\n"
    "Run by the container runtime with CNI_COMMAND=ADD|DEL|CHECK|VERSION,\n"
    "CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS and the network config on stdin.\n";

enum Code {
  kIncompatibleVersion = 1,
  kBadEnv = 4,
  kIoFailure = 5,
  kDecodeFailure = 6,
  kInvalidConfig = 7,
  kTryAgainLater = 11,
  kRefused = 100,
};

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

struct Failure {
  int code;
  std::string msg;
  std::string details;
};

PluginOutput error_out(const std::string& version, const Failure& f) {
  json j = {{"cniVersion", version}, {"code", f.code}, {"msg", f.msg}};
  if (!f.details.empty()) j["details"] = f.details;
  return PluginOutput{1, dump(j) + "\n",
                      "warren-cni: " + f.msg + (f.details.empty() ? "" : ": " + f.details) + "\n"};
}

struct NetConf {
  std::string version;
  std::string socket_path = kDefaultSocketPath;
  int timeout_ms = kDefaultTimeoutMs;
  std::optional<json> prev_result;
};

std::optional<Failure> invalid(const std::string& field, const std::string& why) {
  return Failure{kInvalidConfig, "invalid network config: " + field + ": " + why, ""};
}

std::optional<Failure> parse_conf(const json& j, NetConf* c) {
  auto v = j.find("cniVersion");
  if (v == j.end()) return invalid("cniVersion", "missing");
  if (!v->is_string()) return invalid("cniVersion", "must be a string");
  c->version = v->get<std::string>();
  if (std::find(std::begin(kSupportedVersions), std::end(kSupportedVersions), c->version) ==
      std::end(kSupportedVersions)) {
    return Failure{kIncompatibleVersion, "incompatible CNI version " + c->version,
                   "supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0"};
  }
  for (const char* key : {"name", "type"}) {
    auto it = j.find(key);
    if (it == j.end()) return invalid(key, "missing");
    if (!it->is_string() || it->get<std::string>().empty()) {
      return invalid(key, "must be a non-empty string");
    }
  }
  if (auto it = j.find("socketPath"); it != j.end()) {
    if (!it->is_string() || it->get<std::string>().empty() || it->get<std::string>()[0] != '/') {
      return invalid("socketPath", "must be an absolute path");
    }
    c->socket_path = it->get<std::string>();
  }
  if (auto it = j.find("timeoutMs"); it != j.end()) {
    if (!it->is_number_integer() || *it < 1 || *it > 60000) {
      return invalid("timeoutMs", "must be an integer in 1..60000");
    }
    c->timeout_ms = it->get<int>();
  }
  if (auto it = j.find("prevResult"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return invalid("prevResult", "must be an object");
    c->prev_result = *it;
  }
  return std::nullopt;
}

// prevResult.ips[].address is "ip/prefix" (0.3.0 and later).
std::optional<Failure> ips_of(const json& prev, std::vector<IpAddr>* out) {
  auto ips = prev.find("ips");
  if (ips == prev.end()) return std::nullopt;
  if (!ips->is_array()) return invalid("prevResult.ips", "must be an array");
  for (size_t i = 0; i < ips->size(); ++i) {
    std::string field = "prevResult.ips[" + std::to_string(i) + "].address";
    const json& e = (*ips)[i];
    auto a = e.is_object() ? e.find("address") : e.end();
    if (!e.is_object() || a == e.end()) return invalid(field, "missing");
    if (!a->is_string()) return invalid(field, "must be a string");
    std::string s = a->get<std::string>();
    auto ip = IpAddr::parse(s.substr(0, s.find('/')));
    if (!ip || s.find('/') == std::string::npos)
      return invalid(field, "not an address/prefix: " + s);
    if (std::find(out->begin(), out->end(), *ip) == out->end()) out->push_back(*ip);
  }
  return std::nullopt;
}

std::map<std::string, std::string> parse_args(const std::string& args) {
  std::map<std::string, std::string> out;
  size_t start = 0;
  while (start <= args.size()) {
    size_t end = args.find(';', start);
    if (end == std::string::npos) end = args.size();
    std::string kv = args.substr(start, end - start);
    size_t eq = kv.find('=');
    if (eq != std::string::npos) out[kv.substr(0, eq)] = kv.substr(eq + 1);
    start = end + 1;
  }
  return out;
}

Failure call_failure(const Error& e) {
  if (e.code == Errc::kUnavailable || e.code == Errc::kTimeout) {
    return Failure{kTryAgainLater, "warren-node is not reachable", e.message};
  }
  return Failure{kIoFailure, "exchange with warren-node failed", e.message};
}

std::string result_of(const NetConf& c) {
  json r = c.prev_result.value_or(json::object());
  r["cniVersion"] = c.version;
  return dump(r) + "\n";
}

}  // namespace

PluginEnv PluginEnv::from_process() {
  auto get = [](const char* k) {
    const char* v = std::getenv(k);  // NOLINT(concurrency-mt-unsafe): single-threaded main
    return v ? std::string(v) : std::string();
  };
  return PluginEnv{get("CNI_COMMAND"), get("CNI_CONTAINERID"), get("CNI_NETNS"),
                   get("CNI_IFNAME"),  get("CNI_ARGS"),        get("CNI_PATH")};
}

PluginOutput run_plugin(const PluginEnv& env, std::string_view stdin_data) {
  const std::string& cmd = env.command;
  if (cmd.empty()) return PluginOutput{1, "", kUsage};
  if (cmd == "VERSION") {
    json j = {{"cniVersion", "1.0.0"}, {"supportedVersions", json::array()}};
    for (const char* v : kSupportedVersions) j["supportedVersions"].push_back(v);
    return PluginOutput{0, dump(j) + "\n", ""};
  }
  const bool del = cmd == "DEL";
  // DEL must succeed whatever happens, or the runtime can never remove the
  // pod: every failure below is only logged for it.
  auto fail = [&](const std::string& version, const Failure& f) {
    PluginOutput o = error_out(version, f);
    if (del) return PluginOutput{0, "", "warren-cni: DEL (ignored): " + f.msg + "\n"};
    return o;
  };

  json j = json::parse(stdin_data, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return fail("1.0.0",
                Failure{kDecodeFailure, "network config on stdin is not a JSON object", ""});
  }
  NetConf conf;
  if (auto f = parse_conf(j, &conf)) return fail(conf.version.empty() ? "1.0.0" : conf.version, *f);
  const std::string& ver = conf.version;

  if (cmd != "ADD" && !del && cmd != "CHECK") {
    return fail(ver, Failure{kBadEnv, "unsupported CNI_COMMAND " + cmd, ""});
  }
  if (cmd == "CHECK" && (ver == "0.3.0" || ver == "0.3.1")) {
    return fail(ver, Failure{kIncompatibleVersion, "CHECK needs cniVersion 0.4.0 or later", ""});
  }
  if (env.container_id.empty())
    return fail(ver, Failure{kBadEnv, "CNI_CONTAINERID is not set", ""});
  if (!del && env.netns.empty()) return fail(ver, Failure{kBadEnv, "CNI_NETNS is not set", ""});

  auto args = parse_args(env.args);
  if (args["K8S_POD_NAME"].empty() || args["K8S_POD_NAMESPACE"].empty()) {
    // Not a Kubernetes pod: nothing to enroll.
    return PluginOutput{0, cmd == "ADD" ? result_of(conf) : "", ""};
  }

  EnrollRequest req;
  req.op = cmd == "ADD" ? Op::kAdd : del ? Op::kDel : Op::kCheck;
  req.pod_namespace = args["K8S_POD_NAMESPACE"];
  req.name = args["K8S_POD_NAME"];
  req.uid = args["K8S_POD_UID"];
  req.netns = env.netns;
  req.container_id = env.container_id;
  if (!del && !conf.prev_result) {
    return fail(ver, *invalid("prevResult",
                              "missing: warren-cni must be chained after the "
                              "plugin that sets up the pod's interface"));
  }
  if (conf.prev_result) {
    if (auto f = ips_of(*conf.prev_result, &req.ips)) return fail(ver, *f);
  }
  if (req.op == Op::kAdd && req.ips.empty()) {
    return fail(ver, *invalid("prevResult.ips", "no addresses to enroll"));
  }
  if (auto ok = validate(req); !ok) {
    return fail(ver,
                Failure{kBadEnv, "bad pod identity in CNI_ARGS/CNI_NETNS", ok.error().message});
  }

  auto reply = enroll_call(conf.socket_path, req, conf.timeout_ms);
  if (!reply) return fail(ver, call_failure(reply.error()));
  if (!reply->ok) {
    return fail(ver, Failure{kRefused, "warren-node refused " + req.pod_namespace + "/" + req.name,
                             reply->error});
  }
  return PluginOutput{0, cmd == "ADD" ? result_of(conf) : "", ""};
}

}  // namespace warren::cni
