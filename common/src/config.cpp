// Node config: JSON (or YAML) → validated, immutable Snapshot. Every problem is
// collected as "<json pointer>: <reason>"; unknown fields are errors because a
// typo in security config must never be silently ignored (STYLE.md §4).
#include "warren/config.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <string_view>
#include <unordered_set>

namespace warren::config {
namespace {

using json = nlohmann::json;

std::string esc(std::string_view key) {  // RFC 6901 escaping of one token
  std::string out;
  for (char c : key) {
    if (c == '~') out += "~0";
    else if (c == '/') out += "~1";
    else out += c;
  }
  return out;
}

std::string sub(const std::string& path, std::string_view key) { return path + "/" + esc(key); }
std::string sub(const std::string& path, size_t i) { return path + "/" + std::to_string(i); }

// A value for an error message: scalars as JSON, containers by kind (never
// dumped: they may be arbitrarily deep).
std::string show(const json& v) {
  if (v.is_object()) return "an object";
  if (v.is_array()) return "an array";
  return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::optional<uint16_t> port_of(const json& v) {
  uint64_t n = 0;
  if (v.is_number_unsigned()) {
    n = v.get<uint64_t>();
  } else if (v.is_number_integer()) {
    int64_t i = v.get<int64_t>();
    if (i < 0) return std::nullopt;
    n = static_cast<uint64_t>(i);
  } else if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (s.empty() || s.size() > 5 || ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  } else {
    return std::nullopt;
  }
  if (n == 0 || n > 65535) return std::nullopt;
  return static_cast<uint16_t>(n);
}

// Kubernetes-style names used in identities: non-empty, [a-z0-9.-], ≤ 253.
bool k8s_name(const std::string& s) {
  if (s.empty() || s.size() > 253) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.')) return false;
  return true;
}

// Condition keys Istio defines. L4 ones are evaluated here; the others only
// exist for HTTP (or TLS SNI) and are marked l7_only.
enum class KeyKind { kL4, kL7, kUnknown };
KeyKind key_kind(const std::string& k) {
  static const char* l4[] = {"source.ip",        "source.namespace", "source.principal",
                             "source.serviceAccount", "destination.ip", "destination.port"};
  for (const char* s : l4)
    if (k == s) return KeyKind::kL4;
  if (k.rfind("request.", 0) == 0 && k.size() > 8) return KeyKind::kL7;
  if (k == "remote.ip" || k == "connection.sni") return KeyKind::kL7;
  if (k.rfind("experimental.envoy.filters.", 0) == 0) return KeyKind::kL7;
  return KeyKind::kUnknown;
}

class Parser {
 public:
  std::vector<std::string> errors;

  void err(const std::string& path, const std::string& msg) {
    errors.push_back((path.empty() ? std::string("/") : path) + ": " + msg);
  }

  // `j` must be an object with only the `known` fields.
  bool object(const json& j, const std::string& path, std::initializer_list<std::string_view> known) {
    if (!j.is_object()) {
      err(path, "must be an object, got " + show(j));
      return false;
    }
    for (auto it = j.begin(); it != j.end(); ++it) {
      bool ok = false;
      for (auto k : known) ok = ok || k == it.key();
      if (!ok) err(path, "unknown field \"" + it.key() + "\"");
    }
    return true;
  }

  // The field, or nullptr when absent or null (YAML's "key:" with no value).
  static const json* get(const json& obj, std::string_view key) {
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }

  std::string str(const json& obj, const std::string& path, std::string_view key, bool required,
                  std::string def = "") {
    const json* v = get(obj, key);
    if (!v) {
      if (required) err(sub(path, key), "is required");
      return def;
    }
    if (!v->is_string()) {
      err(sub(path, key), "must be a string, got " + show(*v));
      return def;
    }
    if (required && v->get_ref<const std::string&>().empty()) err(sub(path, key), "must not be empty");
    return v->get<std::string>();
  }

  // Calls fn(element, element_path, index) for each element of an array field.
  template <typename Fn>
  void each(const json& obj, const std::string& path, std::string_view key, Fn fn) {
    const json* v = get(obj, key);
    if (!v) return;
    std::string p = sub(path, key);
    if (!v->is_array()) {
      err(p, "must be an array, got " + show(*v));
      return;
    }
    for (size_t i = 0; i < v->size(); i++) fn((*v)[i], sub(p, i), i);
  }

  std::vector<std::string> strs(const json& obj, const std::string& path, std::string_view key) {
    std::vector<std::string> out;
    each(obj, path, key, [&](const json& e, const std::string& p, size_t) {
      if (!e.is_string()) return err(p, "must be a string, got " + show(e));
      if (e.get_ref<const std::string&>().empty()) return err(p, "must not be empty");
      out.push_back(e.get<std::string>());
    });
    return out;
  }

  std::vector<IpAddr> ips(const json& obj, const std::string& path, std::string_view key) {
    std::vector<IpAddr> out;
    each(obj, path, key, [&](const json& e, const std::string& p, size_t) {
      auto ip = e.is_string() ? IpAddr::parse(e.get_ref<const std::string&>()) : std::nullopt;
      if (!ip) return err(p, show(e) + " is not an IP address");
      out.push_back(*ip);
    });
    return out;
  }

  std::vector<Cidr> cidrs(const json& obj, const std::string& path, std::string_view key) {
    std::vector<Cidr> out;
    each(obj, path, key, [&](const json& e, const std::string& p, size_t) {
      auto c = e.is_string() ? Cidr::parse(e.get_ref<const std::string&>()) : std::nullopt;
      if (!c) return err(p, show(e) + " is not a CIDR or IP address");
      out.push_back(*c);
    });
    return out;
  }

  std::vector<uint16_t> ports(const json& obj, const std::string& path, std::string_view key) {
    std::vector<uint16_t> out;
    each(obj, path, key, [&](const json& e, const std::string& p, size_t) {
      auto port = port_of(e);
      if (!port) return err(p, show(e) + " is not a port");
      out.push_back(*port);
    });
    return out;
  }

  std::map<std::string, std::string> labels(const json& obj, const std::string& path,
                                            std::string_view key) {
    std::map<std::string, std::string> out;
    const json* v = get(obj, key);
    if (!v) return out;
    std::string p = sub(path, key);
    if (!v->is_object()) {
      err(p, "must be an object, got " + show(*v));
      return out;
    }
    for (auto it = v->begin(); it != v->end(); ++it) {
      if (!it->is_string()) err(sub(p, it.key()), "must be a string, got " + show(*it));
      else out[it.key()] = it->get<std::string>();
    }
    return out;
  }

  SockAddr sockaddr(const json& obj, const std::string& path, std::string_view key, SockAddr def) {
    const json* v = get(obj, key);
    if (!v) return def;
    auto a = v->is_string() ? SockAddr::parse(v->get_ref<const std::string&>()) : std::nullopt;
    if (!a) {
      err(sub(path, key), show(*v) + " is not an address (ip:port or [ipv6]:port)");
      return def;
    }
    return *a;
  }

  template <typename E>
  E enumeration(const json& obj, const std::string& path, std::string_view key, E def,
                std::initializer_list<std::pair<const char*, E>> names) {
    const json* v = get(obj, key);
    if (!v) return def;
    if (v->is_string())
      for (auto& [n, e] : names)
        if (v->get_ref<const std::string&>() == n) return e;
    std::string all;
    for (auto& [n, e] : names) all += (all.empty() ? "" : ", ") + std::string(n);
    err(sub(path, key), show(*v) + " is not one of " + all);
    return def;
  }

  // Kubernetes metadata; returns {name, namespace, dry-run}.
  void metadata(const json& obj, const std::string& path, std::string& name, std::string& ns,
                bool* dry_run) {
    const json* m = get(obj, "metadata");
    std::string p = sub(path, "metadata");
    if (!m) return err(p, "is required");
    if (!object(*m, p, {"name", "namespace", "annotations", "labels", "uid", "resourceVersion",
                        "generation", "creationTimestamp"}))
      return;
    name = str(*m, p, "name", true);
    ns = str(*m, p, "namespace", true);
    labels(*m, p, "labels");
    auto ann = labels(*m, p, "annotations");
    auto it = ann.find("istio.io/dry-run");
    if (it != ann.end() && dry_run) {
      if (it->second == "true") *dry_run = true;
      else if (it->second != "false")
        err(sub(sub(p, "annotations"), it->first), "must be \"true\" or \"false\"");
    }
  }

  void type_meta(const json& j, const std::string& path, const char* kind) {
    const json* av = get(j, "apiVersion");
    if (av && !(av->is_string() && (*av == "security.istio.io/v1" || *av == "security.istio.io/v1beta1")))
      err(sub(path, "apiVersion"), show(*av) + " is not security.istio.io/v1 or v1beta1");
    const json* k = get(j, "kind");
    if (k && *k != kind) err(sub(path, "kind"), show(*k) + " is not " + kind);
  }

  std::map<std::string, std::string> selector(const json& spec, const std::string& path, bool& has) {
    const json* s = get(spec, "selector");
    if (!s) return {};
    std::string p = sub(path, "selector");
    if (!object(*s, p, {"matchLabels"})) return {};
    auto l = labels(*s, p, "matchLabels");
    has = !l.empty();
    return l;
  }

  StringMatch string_match(const json& src, const std::string& path, const char* key,
                           const char* not_key) {
    return StringMatch{strs(src, path, key), strs(src, path, not_key)};
  }

  void capture(const json& doc, Snapshot& s);
  Workload workload(const json& j, const std::string& p);
  Service service(const json& j, const std::string& p);
  AuthorizationPolicy policy(const json& j, const std::string& p);
  Rule rule(const json& j, const std::string& p);
  PeerAuthentication peer_auth(const json& j, const std::string& p);
  std::shared_ptr<Snapshot> snapshot(const json& doc);
};

Workload Parser::workload(const json& j, const std::string& p) {
  Workload w;
  if (!object(j, p, {"uid", "name", "namespace", "serviceAccount", "node", "ips", "protocol",
                     "labels", "waypoint", "gateway", "annotations"}))
    return w;
  w.uid = str(j, p, "uid", true);
  w.name = str(j, p, "name", true);
  w.namespace_ = str(j, p, "namespace", true);
  w.service_account = str(j, p, "serviceAccount", false, "default");
  if (!w.namespace_.empty() && !k8s_name(w.namespace_))
    err(sub(p, "namespace"), "\"" + w.namespace_ + "\" is not a valid namespace name");
  if (!k8s_name(w.service_account))
    err(sub(p, "serviceAccount"), "\"" + w.service_account + "\" is not a valid service account name");
  w.node = str(j, p, "node", false);
  w.ips = ips(j, p, "ips");
  w.protocol = enumeration(j, p, "protocol", Protocol::kHbone,
                           {{"HBONE", Protocol::kHbone}, {"NONE", Protocol::kNone}});
  WorkloadMeta meta;
  meta.labels = labels(j, p, "labels");
  w.waypoint = str(j, p, "waypoint", false);
  w.gateway = str(j, p, "gateway", false);
  if (!w.gateway.empty() && !k8s_name(w.gateway))
    err(sub(p, "gateway"), "\"" + w.gateway.str() + "\" is not a valid Gateway name");
  meta.annotations = labels(j, p, "annotations");
  w.canonical_name = w.name.view();
  for (const char* k : {"app", "app.kubernetes.io/name", "service.istio.io/canonical-name"})
    if (auto it = meta.labels.find(k); it != meta.labels.end() && !it->second.empty()) w.canonical_name = it->second;
  w.canonical_revision = "latest";
  for (const char* k : {"version", "app.kubernetes.io/version", "service.istio.io/canonical-revision"})
    if (auto it = meta.labels.find(k); it != meta.labels.end() && !it->second.empty())
      w.canonical_revision = it->second;
  if (auto it = meta.annotations.find(kExcludeOutboundPorts); it != meta.annotations.end()) {
    std::string_view rest = it->second;
    while (!rest.empty()) {
      auto comma = rest.find(',');
      std::string tok(rest.substr(0, comma));
      rest = comma == std::string_view::npos ? "" : rest.substr(comma + 1);
      tok.erase(0, tok.find_first_not_of(' '));
      tok.erase(tok.find_last_not_of(' ') + 1);
      auto port = port_of(json(tok));
      if (!port)
        err(sub(sub(p, "annotations"), kExcludeOutboundPorts), "\"" + tok + "\" is not a port");
      else
        meta.excluded_outbound_ports.push_back(*port);
    }
  }
  if (!meta.labels.empty() || !meta.annotations.empty() || !meta.excluded_outbound_ports.empty())
    w.meta = std::make_unique<WorkloadMeta>(std::move(meta));
  return w;
}

Service Parser::service(const json& j, const std::string& p) {
  Service s;
  if (!object(j, p, {"name", "namespace", "hostname", "vips", "ports", "endpoints", "waypoint"})) return s;
  s.name = str(j, p, "name", true);
  s.namespace_ = str(j, p, "namespace", true);
  s.hostname = str(j, p, "hostname", false, s.name + "." + s.namespace_ + ".svc.cluster.local");
  s.vips = ips(j, p, "vips");
  each(j, p, "ports", [&](const json& e, const std::string& pp, size_t) {
    if (!object(e, pp, {"port", "targetPort", "name", "appProtocol"})) return;
    ServicePort sp;
    const json* port = get(e, "port");
    if (!port) err(sub(pp, "port"), "is required");
    else if (auto v = port_of(*port)) sp.port = *v;
    else err(sub(pp, "port"), show(*port) + " is not a port");
    if (const json* tp = get(e, "targetPort")) {
      if (auto v = port_of(*tp)) sp.target_port = *v;
      else err(sub(pp, "targetPort"), show(*tp) + " is not a port");
    }
    sp.name = str(e, pp, "name", false);
    sp.app_protocol = str(e, pp, "appProtocol", false);
    s.ports.push_back(sp);
  });
  {
    auto eps = strs(j, p, "endpoints");
    size_t bytes = 0;
    for (const auto& e : eps) bytes += e.size();
    s.endpoints.reserve(eps.size(), bytes);
    for (const auto& e : eps) s.endpoints.push_back(e);
  }
  s.waypoint = str(j, p, "waypoint", false);
  if (!s.waypoint.empty() && !k8s_name(s.waypoint))
    err(sub(p, "waypoint"), "\"" + s.waypoint + "\" is not a valid Gateway name");
  return s;
}

Rule Parser::rule(const json& j, const std::string& p) {
  Rule r;
  if (!object(j, p, {"from", "to", "when"})) return r;
  auto non_empty_list = [&](const char* key) {
    const json* v = get(j, key);
    if (v && v->is_array() && v->empty()) err(sub(p, key), "must not be empty");
  };
  non_empty_list("from");
  non_empty_list("to");
  non_empty_list("when");
  each(j, p, "from", [&](const json& e, const std::string& pp, size_t) {
    if (!object(e, pp, {"source"})) return;
    const json* s = get(e, "source");
    std::string sp = sub(pp, "source");
    if (!s) return err(sp, "is required");
    if (!object(*s, sp, {"principals", "notPrincipals", "namespaces", "notNamespaces",
                         "serviceAccounts", "notServiceAccounts", "ipBlocks", "notIpBlocks",
                         "requestPrincipals", "notRequestPrincipals", "remoteIpBlocks",
                         "notRemoteIpBlocks"}))
      return;
    if (s->empty()) return err(sp, "must not be empty");
    Source src;
    src.principals = string_match(*s, sp, "principals", "notPrincipals");
    for (const char* k : {"principals", "notPrincipals"})
      each(*s, sp, k, [&](const json& v, const std::string& vp, size_t) {
        if (v.is_string() && v.get_ref<const std::string&>().rfind("spiffe://", 0) == 0)
          err(vp, "write principals without the \"spiffe://\" prefix (Istio matches them stripped)");
      });
    src.namespaces = string_match(*s, sp, "namespaces", "notNamespaces");
    src.service_accounts = string_match(*s, sp, "serviceAccounts", "notServiceAccounts");
    for (const char* k : {"serviceAccounts", "notServiceAccounts"})
      each(*s, sp, k, [&](const json& v, const std::string& vp, size_t) {
        if (v.is_string() && v.get_ref<const std::string&>().find('/') == std::string::npos)
          err(vp, show(v) + " is not <namespace>/<serviceAccount>");
      });
    src.ip_blocks = cidrs(*s, sp, "ipBlocks");
    src.not_ip_blocks = cidrs(*s, sp, "notIpBlocks");
    bool l7 = !strs(*s, sp, "requestPrincipals").empty();
    l7 = !strs(*s, sp, "notRequestPrincipals").empty() || l7;
    l7 = !cidrs(*s, sp, "remoteIpBlocks").empty() || l7;
    l7 = !cidrs(*s, sp, "notRemoteIpBlocks").empty() || l7;
    src.has_l7_only = l7;
    r.from.push_back(std::move(src));
  });
  each(j, p, "to", [&](const json& e, const std::string& pp, size_t) {
    if (!object(e, pp, {"operation"})) return;
    const json* o = get(e, "operation");
    std::string op = sub(pp, "operation");
    if (!o) return err(op, "is required");
    if (!object(*o, op, {"ports", "notPorts", "hosts", "notHosts", "methods", "notMethods", "paths",
                         "notPaths"}))
      return;
    if (o->empty()) return err(op, "must not be empty");
    Operation oper;
    oper.ports = ports(*o, op, "ports");
    oper.not_ports = ports(*o, op, "notPorts");
    for (const char* k : {"hosts", "notHosts", "methods", "notMethods", "paths", "notPaths"})
      oper.has_l7_only = !strs(*o, op, k).empty() || oper.has_l7_only;
    r.to.push_back(std::move(oper));
  });
  each(j, p, "when", [&](const json& e, const std::string& pp, size_t) {
    if (!object(e, pp, {"key", "values", "notValues"})) return;
    Condition c;
    c.key = str(e, pp, "key", true);
    c.values = strs(e, pp, "values");
    c.not_values = strs(e, pp, "notValues");
    if (c.values.empty() && c.not_values.empty())
      err(pp, "at least one of values or notValues must be set");
    KeyKind kind = key_kind(c.key);
    if (kind == KeyKind::kUnknown && !c.key.empty())
      err(sub(pp, "key"), "unknown condition key \"" + c.key + "\"");
    c.l7_only = kind == KeyKind::kL7;
    if (c.key == "source.ip" || c.key == "destination.ip") {
      cidrs(e, pp, "values");
      cidrs(e, pp, "notValues");
    } else if (c.key == "destination.port") {
      ports(e, pp, "values");
      ports(e, pp, "notValues");
    }
    r.when.push_back(std::move(c));
  });
  return r;
}

AuthorizationPolicy Parser::policy(const json& j, const std::string& p) {
  AuthorizationPolicy ap;
  ap.raw = j.dump();
  if (!object(j, p, {"apiVersion", "kind", "metadata", "spec", "status"})) return ap;
  type_meta(j, p, "AuthorizationPolicy");
  metadata(j, p, ap.name, ap.namespace_, &ap.dry_run);
  const json* spec = get(j, "spec");
  if (!spec) return ap;  // like `spec: {}`: ALLOW nothing
  std::string sp = sub(p, "spec");
  if (!object(*spec, sp, {"selector", "targetRef", "targetRefs", "action", "provider", "rules"}))
    return ap;
  ap.selector = selector(*spec, sp, ap.has_selector);
  auto target_ref = [&](const json& t, const std::string& tp) {
    if (!object(t, tp, {"group", "kind", "name", "namespace"})) return;
    str(t, tp, "kind", true);
    str(t, tp, "name", true);
    ap.waypoint_only = true;
  };
  if (const json* t = get(*spec, "targetRef")) target_ref(*t, sub(sp, "targetRef"));
  each(*spec, sp, "targetRefs", [&](const json& t, const std::string& tp, size_t) { target_ref(t, tp); });
  if (ap.waypoint_only && get(*spec, "selector"))
    err(sp, "only one of selector and targetRef(s) may be set");
  ap.action = enumeration(*spec, sp, "action", PolicyAction::kAllow,
                          {{"ALLOW", PolicyAction::kAllow}, {"DENY", PolicyAction::kDeny},
                           {"AUDIT", PolicyAction::kAudit}, {"CUSTOM", PolicyAction::kCustom}});
  if (const json* prov = get(*spec, "provider")) {
    if (object(*prov, sub(sp, "provider"), {"name"})) str(*prov, sub(sp, "provider"), "name", true);
    if (ap.action != PolicyAction::kCustom) err(sub(sp, "provider"), "only allowed with action CUSTOM");
  } else if (ap.action == PolicyAction::kCustom) {
    err(sub(sp, "provider"), "is required with action CUSTOM");
  }
  each(*spec, sp, "rules", [&](const json& r, const std::string& rp, size_t) {
    ap.rules.push_back(rule(r, rp));
  });
  return ap;
}

PeerAuthentication Parser::peer_auth(const json& j, const std::string& p) {
  PeerAuthentication pa;
  pa.raw = j.dump();
  if (!object(j, p, {"apiVersion", "kind", "metadata", "spec", "status"})) return pa;
  type_meta(j, p, "PeerAuthentication");
  metadata(j, p, pa.name, pa.namespace_, nullptr);
  const json* spec = get(j, "spec");
  if (!spec) return pa;
  std::string sp = sub(p, "spec");
  if (!object(*spec, sp, {"selector", "mtls", "portLevelMtls"})) return pa;
  pa.selector = selector(*spec, sp, pa.has_selector);
  auto mode = [&](const json& obj, const std::string& mp) {
    if (!object(obj, mp, {"mode"})) return PeerAuthMode::kUnset;
    return enumeration(obj, mp, "mode", PeerAuthMode::kUnset,
                       {{"UNSET", PeerAuthMode::kUnset}, {"STRICT", PeerAuthMode::kStrict},
                        {"PERMISSIVE", PeerAuthMode::kPermissive}, {"DISABLE", PeerAuthMode::kDisable}});
  };
  if (const json* m = get(*spec, "mtls")) pa.mode = mode(*m, sub(sp, "mtls"));
  if (const json* plm = get(*spec, "portLevelMtls")) {
    std::string pp = sub(sp, "portLevelMtls");
    if (!plm->is_object()) {
      err(pp, "must be an object, got " + show(*plm));
    } else {
      if (!pa.has_selector) err(pp, "requires a workload selector");
      for (auto it = plm->begin(); it != plm->end(); ++it) {
        auto port = port_of(json(it.key()));
        if (!port) err(sub(pp, it.key()), "\"" + it.key() + "\" is not a port");
        PeerAuthMode m = mode(*it, sub(pp, it.key()));
        if (port) pa.port_modes[*port] = m;
      }
    }
  }
  return pa;
}

void Parser::capture(const json& doc, Snapshot& s) {
  const json* c = get(doc, "capture");
  if (!c || !object(*c, "/capture", {"mode", "cgroup", "bpfPinDir", "fastPath", "cniSocket", "scanProc"}))
    return;
  auto& cc = s.capture;
  cc.mode = enumeration(*c, "/capture", "mode", CaptureMode::kNone,
                        {{"none", CaptureMode::kNone}, {"inpod", CaptureMode::kInPod}});
  cc.cgroup = str(*c, "/capture", "cgroup", false, cc.cgroup);
  cc.pin_dir = str(*c, "/capture", "bpfPinDir", false, cc.pin_dir);
  cc.cni_socket = str(*c, "/capture", "cniSocket", false, cc.cni_socket);
  for (auto [key, field] : {std::pair{"fastPath", &cc.fast_path}, std::pair{"scanProc", &cc.scan_proc}}) {
    if (const json* v = get(*c, key)) {
      if (v->is_boolean()) *field = v->get<bool>();
      else err(sub("/capture", key), "must be true or false, got " + show(*v));
    }
  }
  for (auto [key, v] : {std::pair{"cgroup", &cc.cgroup}, std::pair{"bpfPinDir", &cc.pin_dir},
                        std::pair{"cniSocket", &cc.cni_socket}})
    if (!v->empty() && (*v)[0] != '/') err(sub("/capture", key), "\"" + *v + "\" must be an absolute path");
}

std::shared_ptr<Snapshot> Parser::snapshot(const json& doc) {
  auto s = std::make_shared<Snapshot>();
  if (!object(doc, "", {"node", "trustDomain", "rootNamespace", "listeners", "certificates", "controller",
                        "workloads", "services", "policies", "peerAuthentications", "capture",
                        "namespaces"}))
    return s;
  if (const json* n = get(doc, "node"); n && object(*n, "/node", {"name", "address"})) {
    s->node_name = str(*n, "/node", "name", true);
    const json* a = get(*n, "address");
    auto ip = a && a->is_string() ? IpAddr::parse(a->get_ref<const std::string&>()) : std::nullopt;
    if (!a) err("/node/address", "is required");
    else if (!ip) err("/node/address", show(*a) + " is not an IP address");
    else s->node_address = *ip;
  } else if (!n) {
    err("/node", "is required");
  }
  s->trust_domain = str(doc, "", "trustDomain", false, s->trust_domain);
  if (s->trust_domain.empty() || s->trust_domain.find('/') != std::string::npos)
    err("/trustDomain", "\"" + s->trust_domain + "\" is not a valid trust domain");
  s->root_namespace = str(doc, "", "rootNamespace", false, s->root_namespace);
  if (!k8s_name(s->root_namespace)) err("/rootNamespace", "is not a valid namespace name");
  if (const json* l = get(doc, "listeners");
      l && object(*l, "/listeners", {"socks5", "admin", "metrics", "readiness", "hbonePort"})) {
    auto& ls = s->listeners;
    ls.socks5 = sockaddr(*l, "/listeners", "socks5", ls.socks5);
    ls.admin = sockaddr(*l, "/listeners", "admin", ls.admin);
    ls.metrics = sockaddr(*l, "/listeners", "metrics", ls.metrics);
    ls.readiness = sockaddr(*l, "/listeners", "readiness", ls.readiness);
    if (const json* hp = get(*l, "hbonePort")) {
      if (auto port = port_of(*hp)) ls.hbone_port = *port;
      else err("/listeners/hbonePort", show(*hp) + " is not a port");
    }
  }
  if (const json* c = get(doc, "certificates"); c && object(*c, "/certificates", {"rootCert", "dir"})) {
    s->certificates.root_cert = str(*c, "/certificates", "rootCert", true);
    s->certificates.dir = str(*c, "/certificates", "dir", true);
  }
  if (const json* c = get(doc, "controller");
      c && object(*c, "/controller", {"address", "tokenFile", "caFile"})) {
    auto& cc = s->controller;
    if (const json* a = get(*c, "address")) {
      bool ok = a->is_string() && (SockAddr::parse(a->get_ref<const std::string&>()) ||
                                   parse_host_port(a->get_ref<const std::string&>()));
      if (!ok) err("/controller/address", show(*a) + " is not IP:port or NAME:port");
      else cc.address = a->get<std::string>();
    } else {
      err("/controller/address", "is required");
    }
    cc.token_file = str(*c, "/controller", "tokenFile", true);
    cc.ca_file = str(*c, "/controller", "caFile", true);
  }
  if (!get(doc, "certificates") && !get(doc, "controller"))
    err("/certificates", "is required (or /controller, to get certificates from warren-controller)");

  capture(doc, *s);
  if (s->capture.pin_dir.empty() && !s->node_name.empty())
    s->capture.pin_dir = "/sys/fs/bpf/warren/" + s->node_name;
  each(doc, "", "namespaces", [&](const json& e, const std::string& p, size_t) {
    if (!object(e, p, {"name", "labels"})) return;
    std::string name = str(e, p, "name", true);
    if (!name.empty() && !k8s_name(name)) err(sub(p, "name"), "\"" + name + "\" is not a valid namespace name");
    if (s->namespaces.count(name)) err(sub(p, "name"), "duplicate namespace \"" + name + "\"");
    s->namespaces[name] = labels(e, p, "labels");
  });
  // Duplicates are reported with their pointers; the compact index is built
  // after.
  std::unordered_map<std::string_view, size_t> uids;
  std::unordered_map<IpAddr, size_t> ips_seen;
  each(doc, "", "workloads", [&](const json& e, const std::string& p, size_t i) {
    Workload parsed = workload(e, p);
    parsed.identity = "spiffe://" + s->trust_domain + "/ns/" + parsed.namespace_ + "/sa/" + parsed.service_account;
    auto wp = std::make_shared<const Workload>(std::move(parsed));
    const Workload& w = *wp;  // uids keys view the stored uid
    if (!w.uid.empty() && !uids.emplace(w.uid, s->workloads.size()).second)
      err(sub(p, "uid"), "duplicate uid \"" + w.uid + "\"");
    for (size_t k = 0; k < w.ips.size(); k++) {
      auto [it, fresh] = ips_seen.emplace(w.ips[k], s->workloads.size());
      if (!fresh && it->second != s->workloads.size())
        err(sub(sub(p, "ips"), k), w.ips[k].to_string() + " is also used by workload \"" +
                                       s->workloads[it->second]->uid + "\"");
      else if (!fresh)
        err(sub(sub(p, "ips"), k), w.ips[k].to_string() + " is listed twice");
    }
    s->workloads.push_back(std::move(wp));
  });
  s->index_workloads();
  auto sidx = std::make_shared<Snapshot::ServiceIndex>();
  s->sindex_ = sidx;
  each(doc, "", "services", [&](const json& e, const std::string& p, size_t i) {
    Service sv = service(e, p);
    for (size_t k = 0; k < sv.endpoints.size(); k++)
      if (!uids.count(sv.endpoints[k]))
        err(sub(sub(p, "endpoints"), k), "unknown workload uid \"" + std::string(sv.endpoints[k]) + "\"");
    for (size_t k = 0; k < sv.vips.size(); k++) {
      auto [it, fresh] = sidx->by_vip.emplace(sv.vips[k], s->services.size());
      if (!fresh && it->second != s->services.size())
        err(sub(sub(p, "vips"), k), sv.vips[k].to_string() + " is also the VIP of service \"" +
                                        s->services[it->second]->hostname + "\"");
      else if (!fresh)
        err(sub(sub(p, "vips"), k), sv.vips[k].to_string() + " is listed twice");
    }
    if (!sv.name.empty() && !sv.namespace_.empty() &&
        !sidx->by_host.emplace(sv.hostname, s->services.size()).second)
      err(sub(p, "hostname"), "duplicate hostname \"" + sv.hostname + "\"");
    s->services.push_back(std::make_shared<const Service>(std::move(sv)));
  });
  std::map<std::string, std::string> seen;
  each(doc, "", "policies", [&](const json& e, const std::string& p, size_t) {
    AuthorizationPolicy ap = policy(e, p);
    std::string id = ap.namespace_ + "/" + ap.name;
    if (!ap.name.empty() && !seen.emplace(id, p).second)
      err(sub(sub(p, "metadata"), "name"), "duplicate policy \"" + id + "\" (also " + seen[id] + ")");
    s->policies.push_back(std::make_shared<const AuthorizationPolicy>(std::move(ap)));
  });
  seen.clear();
  each(doc, "", "peerAuthentications", [&](const json& e, const std::string& p, size_t) {
    PeerAuthentication pa = peer_auth(e, p);
    std::string id = pa.namespace_ + "/" + pa.name;
    if (!pa.name.empty() && !seen.emplace(id, p).second)
      err(sub(sub(p, "metadata"), "name"), "duplicate PeerAuthentication \"" + id + "\" (also " + seen[id] + ")");
    s->peer_authentications.push_back(std::move(pa));
  });
  return s;
}

std::atomic<uint64_t> g_version{0};

Result<std::shared_ptr<Snapshot>> parse_mutable(const json& doc) {
  Parser p;
  std::shared_ptr<Snapshot> s;
  try {
    s = p.snapshot(doc);
  } catch (const std::exception& e) {  // a bug here must not take the node down
    return make_error(Errc::kInternal, std::string("config parser: ") + e.what());
  }
  if (!p.errors.empty()) {
    std::string msg;
    for (auto& e : p.errors) msg += (msg.empty() ? "" : "\n") + e;
    return make_error(Errc::kInvalidArgument, msg);
  }
  s->version = ++g_version;
  return s;
}

}  // namespace

namespace {
uint32_t v4_host(const IpAddr& ip) {
  const auto& b = ip.bytes();
  return uint32_t(b[0]) << 24 | uint32_t(b[1]) << 16 | uint32_t(b[2]) << 8 | b[3];
}
const std::map<std::string, std::string> kNoLabels;
const std::vector<uint16_t> kNoPorts;
}  // namespace

Workload::Workload(const Workload& o)
    : uid(o.uid),
      name(o.name),
      namespace_(o.namespace_),
      service_account(o.service_account),
      node(o.node),
      waypoint(o.waypoint),
      gateway(o.gateway),
      identity(o.identity),
      canonical_name(o.canonical_name),
      canonical_revision(o.canonical_revision),
      ips(o.ips),
      protocol(o.protocol),
      meta(o.meta ? std::make_unique<WorkloadMeta>(*o.meta) : nullptr) {}

Workload& Workload::operator=(const Workload& o) {
  if (this != &o) {
    Workload copy(o);
    *this = std::move(copy);
  }
  return *this;
}

const std::map<std::string, std::string>& Workload::labels() const { return meta ? meta->labels : kNoLabels; }
const std::map<std::string, std::string>& Workload::annotations() const {
  return meta ? meta->annotations : kNoLabels;
}
const std::vector<uint16_t>& Workload::excluded_outbound_ports() const {
  return meta ? meta->excluded_outbound_ports : kNoPorts;
}

void Snapshot::index_workloads(bool uid_sorted) {
  auto idx = std::make_shared<WorkloadIndex>();
  idx->by_uid.reserve(workloads.size());
  idx->by_v4.reserve(workloads.size());
  for (uint32_t i = 0; i < workloads.size(); ++i) {
    const Workload& w = *workloads[i];
    if (!w.uid.empty()) idx->by_uid.push_back(i);
    if (!w.gateway.empty()) idx->waypoints.push_back(i);
    for (const auto& ip : w.ips) {
      if (ip.is_v4()) idx->by_v4.emplace_back(v4_host(ip), i);
      else idx->by_v6.emplace_back(ip, i);
    }
  }
  if (!uid_sorted)
    std::sort(idx->by_uid.begin(), idx->by_uid.end(),
              [&](uint32_t a, uint32_t b) { return workloads[a]->uid < workloads[b]->uid; });
  std::sort(idx->by_v4.begin(), idx->by_v4.end());
  std::sort(idx->by_v6.begin(), idx->by_v6.end());
  idx->by_v4.shrink_to_fit();
  windex_ = std::move(idx);
}

const Workload* Snapshot::workload_by_ip(const IpAddr& ip) const {
  const auto& x = *windex_;
  if (ip.is_v4()) {
    uint32_t a = v4_host(ip);
    auto it = std::lower_bound(x.by_v4.begin(), x.by_v4.end(), a,
                               [](const std::pair<uint32_t, uint32_t>& e, uint32_t v) { return e.first < v; });
    return it != x.by_v4.end() && it->first == a ? workloads[it->second].get() : nullptr;
  }
  auto it = std::lower_bound(x.by_v6.begin(), x.by_v6.end(), ip,
                             [](const std::pair<IpAddr, uint32_t>& e, const IpAddr& v) { return e.first < v; });
  return it != x.by_v6.end() && it->first == ip ? workloads[it->second].get() : nullptr;
}

std::vector<const Workload*> Snapshot::waypoint_pods(std::string_view ns, std::string_view gateway) const {
  std::vector<const Workload*> out;
  for (uint32_t pos : windex_->waypoints) {
    const Workload* w = workloads[pos].get();
    if (w->namespace_ == ns && w->gateway == gateway) out.push_back(w);
  }
  return out;
}

const Workload* Snapshot::workload_by_uid(std::string_view uid) const {
  const auto& x = windex_->by_uid;
  auto it = std::lower_bound(x.begin(), x.end(), uid,
                             [&](uint32_t pos, std::string_view v) { return workloads[pos]->uid < v; });
  return it != x.end() && workloads[*it]->uid == uid ? workloads[*it].get() : nullptr;
}

const Service* Snapshot::service_by_vip(const IpAddr& ip) const {
  auto it = sindex_->by_vip.find(ip);
  return it == sindex_->by_vip.end() ? nullptr : services[it->second].get();
}

const Service* Snapshot::service_by_hostname(const std::string& host) const {
  auto it = sindex_->by_host.find(host);
  return it == sindex_->by_host.end() ? nullptr : services[it->second].get();
}

std::optional<std::pair<std::string, uint16_t>> parse_host_port(std::string_view s) {
  auto colon = s.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon > 253) return std::nullopt;
  std::string_view host = s.substr(0, colon), port = s.substr(colon + 1);
  if (port.empty() || port.size() > 5) return std::nullopt;
  uint32_t p = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return std::nullopt;
    p = p * 10 + static_cast<uint32_t>(c - '0');
  }
  if (p == 0 || p > 65535) return std::nullopt;
  // RFC 1123 labels: letters, digits, '-' inside, 1-63 characters each.
  size_t label = 0;
  for (size_t i = 0; i < host.size(); ++i) {
    char c = host[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (c == '.') {
      if (label == 0 || host[i - 1] == '-') return std::nullopt;
      label = 0;
    } else if (alnum || (c == '-' && label > 0)) {
      if (++label > 63) return std::nullopt;
    } else {
      return std::nullopt;
    }
  }
  if (label == 0 || host.back() == '-') return std::nullopt;
  return std::make_pair(std::string(host), static_cast<uint16_t>(p));
}

bool Snapshot::enrolled(const Workload& w) const {
  if (w.protocol != Protocol::kHbone) return false;
  if (!w.gateway.empty()) return false;  // a waypoint pod serves HBONE itself
  const auto& wl = w.labels();
  auto pl = wl.find(kDataplaneModeLabel);
  if (pl != wl.end()) {
    if (pl->second == "none") return false;
    if (pl->second == "enabled") return true;
  }
  auto ns = namespaces.find(w.namespace_);
  if (ns == namespaces.end()) return false;
  auto l = ns->second.find(kDataplaneModeLabel);
  return l != ns->second.end() && l->second == "enabled";
}

std::vector<const Workload*> Snapshot::local_workloads() const {
  std::vector<const Workload*> out;
  for (const auto& w : workloads)
    if (w->node == node_name) out.push_back(w.get());
  return out;
}

Result<SnapshotPtr> parse(const nlohmann::json& doc) {
  auto r = parse_mutable(doc);
  if (!r) return r.error();
  return SnapshotPtr(std::move(r.value()));
}

const char* to_string(PeerAuthMode m) {
  switch (m) {
    case PeerAuthMode::kStrict: return "STRICT";
    case PeerAuthMode::kPermissive: return "PERMISSIVE";
    case PeerAuthMode::kDisable: return "DISABLE";
    case PeerAuthMode::kUnset: break;
  }
  return "UNSET";
}

const char* to_string(PolicyAction a) {
  switch (a) {
    case PolicyAction::kDeny: return "DENY";
    case PolicyAction::kAudit: return "AUDIT";
    case PolicyAction::kCustom: return "CUSTOM";
    case PolicyAction::kAllow: break;
  }
  return "ALLOW";
}

nlohmann::json to_json(const Snapshot& s) {
  using json = nlohmann::json;
  auto ips = [](const auto& v) {
    json a = json::array();
    for (auto& ip : v) a.push_back(ip.to_string());
    return a;
  };
  json doc;
  doc["node"] = {{"name", s.node_name}, {"address", s.node_address.to_string()}};
  doc["trustDomain"] = s.trust_domain;
  doc["rootNamespace"] = s.root_namespace;
  doc["listeners"] = {{"socks5", s.listeners.socks5.to_string()},
                      {"admin", s.listeners.admin.to_string()},
                      {"metrics", s.listeners.metrics.to_string()},
                      {"readiness", s.listeners.readiness.to_string()},
                      {"hbonePort", s.listeners.hbone_port}};
  if (!s.certificates.dir.empty())
    doc["certificates"] = {{"rootCert", s.certificates.root_cert}, {"dir", s.certificates.dir}};
  if (!s.controller.address.empty())
    doc["controller"] = {{"address", s.controller.address},
                         {"tokenFile", s.controller.token_file},
                         {"caFile", s.controller.ca_file}};
  json ws = json::array();
  for (const auto& wp : s.workloads) {
    const Workload& w = *wp;
    ws.push_back({{"uid", w.uid}, {"name", w.name}, {"namespace", w.namespace_},
                  {"serviceAccount", w.service_account}, {"node", w.node}, {"ips", ips(w.ips)},
                  {"protocol", w.protocol == Protocol::kHbone ? "HBONE" : "NONE"},
                  {"labels", w.labels().empty() ? json::object() : json(w.labels())},
                  {"waypoint", w.waypoint},
                  {"gateway", w.gateway},
                  {"annotations", w.annotations().empty() ? json::object() : json(w.annotations())}});
  }
  doc["workloads"] = ws;
  json ss = json::array();
  for (const auto& svp : s.services) {
    const Service& sv = *svp;
    json ports = json::array();
    for (auto& p : sv.ports) {
      json jp = {{"port", p.port}};
      if (p.target_port) jp["targetPort"] = p.target_port;
      if (!p.name.empty()) jp["name"] = p.name;
      if (!p.app_protocol.empty()) jp["appProtocol"] = p.app_protocol;
      ports.push_back(jp);
    }
    ss.push_back({{"name", sv.name}, {"namespace", sv.namespace_}, {"hostname", sv.hostname},
                  {"vips", ips(sv.vips)}, {"ports", ports}, {"endpoints", std::vector<std::string_view>(sv.endpoints.begin(), sv.endpoints.end())},
                  {"waypoint", sv.waypoint}});
  }
  doc["services"] = ss;
  json ps = json::array();
  for (const auto& p : s.policies) ps.push_back(json::parse(p->raw));
  doc["policies"] = ps;
  json pas = json::array();
  for (const auto& p : s.peer_authentications) pas.push_back(json::parse(p.raw));
  doc["peerAuthentications"] = pas;
  doc["capture"] = {{"mode", s.capture.mode == CaptureMode::kInPod ? "inpod" : "none"},
                    {"cgroup", s.capture.cgroup},
                    {"bpfPinDir", s.capture.pin_dir},
                    {"fastPath", s.capture.fast_path},
                    {"cniSocket", s.capture.cni_socket},
                    {"scanProc", s.capture.scan_proc}};
  json nss = json::array();
  for (const auto& [name, labels] : s.namespaces)
    nss.push_back({{"name", name}, {"labels", labels.empty() ? json::object() : json(labels)}});
  doc["namespaces"] = nss;
  return doc;
}

namespace {
bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

Result<SnapshotPtr> load_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(Errc::kNotFound, path + ": cannot read: " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return make_error(Errc::kSystem, path + ": read failed");
  std::string text = ss.str();

  nlohmann::json doc;
  if (ends_with(path, ".yaml") || ends_with(path, ".yml")) {
    auto y = yaml_to_json(text);
    if (!y) return y.error().wrap(path);
    doc = std::move(y.value());
  } else {
    try {
      doc = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
      std::string what = e.what();  // "[json.exception.parse_error.101] parse error at line ..."
      auto close = what.find("] ");
      if (close != std::string::npos) what = what.substr(close + 2);
      return make_error(Errc::kInvalidArgument, path + ": " + what);
    }
  }
  auto r = parse_mutable(doc);
  if (!r) {
    std::string msg, line;
    std::istringstream lines(r.error().message);
    while (std::getline(lines, line)) msg += (msg.empty() ? "" : "\n") + path + ": " + line;
    return Error{r.error().code, msg, 0};
  }
  auto s = std::move(r.value());
  // Relative certificate paths are relative to the config file.
  auto base = std::filesystem::path(path).parent_path();
  for (std::string* p : {&s->certificates.root_cert, &s->certificates.dir,
                         &s->controller.token_file, &s->controller.ca_file})
    if (!p->empty() && std::filesystem::path(*p).is_relative() && !base.empty())
      *p = (base / *p).lexically_normal().string();
  return SnapshotPtr(std::move(s));
}

// ---- SnapshotBuilder ----------------------------------------------------------------------

SnapshotBuilder::SnapshotBuilder(const Snapshot& bootstrap) : base_(bootstrap) {
  base_.workloads.clear();
  base_.services.clear();
  base_.policies.clear();
  base_.peer_authentications.clear();
  base_.namespaces.clear();
  base_.windex_ = std::make_shared<const Snapshot::WorkloadIndex>();
  base_.sindex_ = std::make_shared<const Snapshot::ServiceIndex>();
}

size_t SnapshotBuilder::size() const {
  merge_pending();
  return staged_.size() + services_.size() + policies_.size() + peer_auths_.size() + namespaces_.size();
}

void SnapshotBuilder::clear() {
  check_all_ = true;
  keys_changed_ = true;
  staged_.clear();
  staged_.shrink_to_fit();
  pending_.clear();
  services_.clear();
  policies_.clear();
  peer_auths_.clear();
  namespaces_.clear();
}

void SnapshotBuilder::remove(const std::string& id) {
  if (id.rfind("workload/", 0) == 0) {
    pending_.push_back({nullptr, id.substr(9)});
    return;
  }
  services_.erase(id) || policies_.erase(id) || peer_auths_.erase(id) || namespaces_.erase(id);
  changed_services_.insert(id);
}

// Upserts and removes are queued (one pointer each, in one block that is
// freed whole, so a 100,000-workload snapshot leaves no holes in the heap)
// and merged into the uid-sorted list when it is next read.
void SnapshotBuilder::merge_pending() const {
  if (pending_.empty()) return;
  auto key = [](const PendingWorkload& p) -> std::string_view { return p.w ? std::string_view(p.w->uid) : p.removed; };
  std::stable_sort(pending_.begin(), pending_.end(),
                   [&](const PendingWorkload& a, const PendingWorkload& b) { return key(a) < key(b); });
  // The last operation on a uid wins.
  size_t out = 0;
  for (size_t i = 0; i < pending_.size(); ++i) {
    if (i + 1 < pending_.size() && key(pending_[i]) == key(pending_[i + 1])) continue;
    if (out != i) pending_[out] = std::move(pending_[i]);
    ++out;
  }
  pending_.resize(out);
  auto by_uid = [](const WorkloadPtr& w, std::string_view uid) { return w->uid < uid; };
  // Only replacements of present workloads: in place.
  std::vector<size_t> at;
  at.reserve(pending_.size());
  for (const auto& p : pending_) {
    auto it = std::lower_bound(staged_.begin(), staged_.end(), key(p), by_uid);
    if (!p.w || it == staged_.end() || (*it)->uid != key(p)) break;
    at.push_back(static_cast<size_t>(it - staged_.begin()));
  }
  if (at.size() == pending_.size()) {
    for (size_t k = 0; k < at.size(); ++k) {
      WorkloadPtr& slot = staged_[at[k]];
      if (slot->ips != pending_[k].w->ips || slot->gateway != pending_[k].w->gateway) keys_changed_ = true;
      slot = std::move(pending_[k].w);
    }
  } else {
    std::vector<WorkloadPtr> merged;
    merged.reserve(staged_.size() + pending_.size());
    size_t i = 0;
    for (auto& p : pending_) {
      std::string_view k = key(p);
      while (i < staged_.size() && staged_[i]->uid < k) merged.push_back(std::move(staged_[i++]));
      bool present = i < staged_.size() && staged_[i]->uid == k;
      if (present && !p.w) {
        uids_removed_.emplace_back(staged_[i]->uid.view());
        keys_changed_ = true;
        ++i;
      } else if (present) {
        if (staged_[i]->ips != p.w->ips || staged_[i]->gateway != p.w->gateway) keys_changed_ = true;
        merged.push_back(std::move(p.w));
        ++i;
      } else if (p.w) {
        keys_changed_ = true;
        merged.push_back(std::move(p.w));
      }
    }
    while (i < staged_.size()) merged.push_back(std::move(staged_[i++]));
    staged_.swap(merged);
  }
  pending_.clear();
  pending_.shrink_to_fit();
}

Result<void> SnapshotBuilder::upsert(const std::string& id, const nlohmann::json& body) {
  auto prefixed = [&](const char* p) { return id.rfind(p, 0) == 0; };
  Parser p;
  auto fail = [&]() -> Result<void> {
    std::string msg;
    for (auto& e : p.errors) msg += (msg.empty() ? "" : "\n") + e;
    return make_error(Errc::kInvalidArgument, msg);
  };
  try {
    if (prefixed("workload/")) {
      Workload w = p.workload(body, "");
      if (p.errors.empty() && id.compare(9, std::string::npos, w.uid) != 0)
        p.err("/uid", "\"" + w.uid + "\" does not match the id " + id);
      if (!p.errors.empty()) return fail();
      w.identity = "spiffe://" + base_.trust_domain + "/ns/" + w.namespace_ + "/sa/" + w.service_account;
      // Another node's pod: selectors and enrollment only ever look at local
      // ones (see WorkloadMeta).
      if (!keep_all_meta_ && !w.node.empty() && w.node != base_.node_name) w.meta.reset();
      pending_.push_back({std::make_shared<const Workload>(std::move(w)), {}});
    } else if (prefixed("service/")) {
      Service sv = p.service(body, "");
      if (!p.errors.empty()) return fail();
      services_[id] = std::make_shared<const Service>(std::move(sv));
      changed_services_.insert(id);
    } else if (prefixed("policy/")) {
      AuthorizationPolicy ap = p.policy(body, "");
      if (!p.errors.empty()) return fail();
      policies_[id] = std::make_shared<const AuthorizationPolicy>(std::move(ap));
    } else if (prefixed("peerauth/")) {
      PeerAuthentication pa = p.peer_auth(body, "");
      if (!p.errors.empty()) return fail();
      peer_auths_[id] = std::make_shared<const PeerAuthentication>(std::move(pa));
    } else if (prefixed("namespace/")) {
      if (!p.object(body, "", {"name", "labels"})) return fail();
      std::string name = p.str(body, "", "name", true);
      if (!name.empty() && !k8s_name(name)) p.err("/name", "\"" + name + "\" is not a valid namespace name");
      auto labels = p.labels(body, "", "labels");
      // The namespace's name is the id's suffix; keep both in step.
      if (p.errors.empty() && id != "namespace/" + name)
        p.err("/name", "\"" + name + "\" does not match the id " + id);
      if (!p.errors.empty()) return fail();
      namespaces_[id] = std::move(labels);
    } else {
      return make_error(Errc::kInvalidArgument, "unknown resource kind in id \"" + id + "\"");
    }
  } catch (const std::exception& e) {
    return make_error(Errc::kInternal, std::string("config parser: ") + e.what());
  }
  return {};
}

SnapshotPtr SnapshotBuilder::build(std::map<std::string, std::string>* rejected) const {
  merge_pending();
  auto s = std::make_shared<Snapshot>(base_);
  bool workload_rejected = false;
  auto reject = [&](const std::string& id, const std::string& why) {
    if (rejected) (*rejected)[id] = why;
  };
  if (last_ && !keys_changed_ && !last_workload_rejected_) {
    // Only contents changed (same uids and IPs, nothing refused last time):
    // same positions, the last index still holds.
    s->workloads = staged_;
    s->windex_ = last_->windex_;
  } else {
    // uids are unique (they are the ids); an IP used twice refuses the later
    // workload (in uid order). Clashes are rare: found by sorting, then
    // settled one workload at a time.
    s->workloads = staged_;
    s->index_workloads(true);
    const auto& x = *s->windex_;
    bool clash = false;
    for (size_t i = 1; !clash && i < x.by_v4.size(); ++i) clash = x.by_v4[i].first == x.by_v4[i - 1].first;
    for (size_t i = 1; !clash && i < x.by_v6.size(); ++i) clash = x.by_v6[i].first == x.by_v6[i - 1].first;
    if (clash) {
      std::unordered_map<IpAddr, size_t> taken;
      std::vector<WorkloadPtr> accepted;
      accepted.reserve(staged_.size());
      for (const auto& w : staged_) {
        std::string why;
        for (size_t k = 0; why.empty() && k < w->ips.size(); ++k) {
          auto it = taken.find(w->ips[k]);
          if (it != taken.end())
            why = "/ips: " + w->ips[k].to_string() + " is also used by workload \"" + accepted[it->second]->uid + "\"";
          for (size_t j = 0; why.empty() && j < k; ++j)
            if (w->ips[j] == w->ips[k]) why = "/ips: " + w->ips[k].to_string() + " is listed twice";
        }
        if (!why.empty()) {
          reject("workload/" + w->uid, why);
          workload_rejected = true;
          continue;
        }
        for (const auto& ip : w->ips) taken.emplace(ip, accepted.size());
        accepted.push_back(w);
      }
      s->workloads = std::move(accepted);
      s->index_workloads(true);
    }
  }
  keys_changed_ = false;
  // Endpoints name workload uids. A uid that came can only make a refused
  // service good again (those are checked again below); one that went is
  // looked for in every service's endpoints; a refused workload, or a clear,
  // checks everything.
  bool check_all = check_all_ || workload_rejected || last_workload_rejected_ || !last_;
  std::unordered_set<std::string_view> removed(uids_removed_.begin(), uids_removed_.end());
  if (!check_all && removed.empty() && changed_services_.empty() && last_bad_services_.empty()) {
    // No service changed and every one was accepted last time: same list,
    // same index.
    s->services = last_->services;
    s->sindex_ = last_->sindex_;
  } else {
    auto sidx = std::make_shared<Snapshot::ServiceIndex>();
    s->services.reserve(services_.size());
    std::set<std::string> prev_bad;
    prev_bad.swap(last_bad_services_);
    for (const auto& [id, sv] : services_) {
      std::string why;
      bool check = check_all || changed_services_.count(id) || prev_bad.count(id);
      for (size_t k = 0; !check && !removed.empty() && k < sv->endpoints.size(); ++k)
        check = removed.count(sv->endpoints[k]) > 0;
      for (size_t k = 0; check && k < sv->endpoints.size(); ++k)
        if (!s->workload_by_uid(sv->endpoints[k])) {
          why = "/endpoints: unknown workload uid \"" + std::string(sv->endpoints[k]) + "\"";
          break;
        }
      for (const auto& vip : sv->vips)
        if (why.empty() && sidx->by_vip.count(vip))
          why = "/vips: " + vip.to_string() + " is also the VIP of service \"" +
                s->services[sidx->by_vip.at(vip)]->hostname + "\"";
      if (why.empty() && sidx->by_host.count(sv->hostname))
        why = "/hostname: duplicate hostname \"" + sv->hostname + "\"";
      if (!why.empty()) {
        reject(id, why);
        last_bad_services_.insert(id);  // checked again next time
        continue;
      }
      size_t i = s->services.size();
      for (const auto& vip : sv->vips) sidx->by_vip.emplace(vip, i);
      sidx->by_host.emplace(sv->hostname, i);
      s->services.push_back(sv);
    }
    s->sindex_ = std::move(sidx);
  }
  last_workload_rejected_ = workload_rejected;
  check_all_ = false;
  uids_removed_.clear();
  uids_removed_.shrink_to_fit();
  changed_services_.clear();
  for (const auto& [id, ap] : policies_) s->policies.push_back(ap);
  for (const auto& [id, pa] : peer_auths_) s->peer_authentications.push_back(*pa);
  for (const auto& [id, labels] : namespaces_) s->namespaces[id.substr(10)] = labels;
  s->version = ++g_version;
  last_ = s;
  return s;
}

}  // namespace warren::config
