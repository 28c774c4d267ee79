// L7 AuthorizationPolicy: compile (validate with JSON pointers, fail closed)
// and evaluate. Semantics as Istio's Envoy RBAC filters: rules OR'd; in a
// rule, from/to/when AND'd; sources (operations) OR'd; in one, fields AND'd;
// values of a field OR'd; a not* field must match none of its values.
#include "authz.h"

#include <optional>

#include "request_authn.h"
#include "warren/ip.h"

namespace warren::waypoint {
namespace {

using nlohmann::json;

enum class Action { kAllow, kDeny, kAudit, kCustom };
enum class Attr {
  kPrincipal,
  kRequestPrincipal,
  kNamespace,
  kServiceAccount,
  kSourceIp,
  kRemoteIp,
  kDestIp,
  kHost,
  kPort,
  kMethod,
  kPath,
  kHeader,
  kAudiences,
  kPresenter,
  kClaim,
  kSni,
};

// One field with its not* counterpart.
struct Check {
  Attr attr;
  std::vector<std::string> values, not_values;  // string-like attributes
  std::vector<Cidr> cidrs, not_cidrs;           // IP attributes
  std::vector<uint16_t> ports, not_ports;       // kPort
  std::string header;                           // kHeader
  std::vector<std::string> claim;               // kClaim: nested names
};

struct Rule {
  std::vector<std::vector<Check>> from, to;  // OR'd lists of AND'd checks
  std::vector<Check> when;
  bool poisoned = false;
};

bool is_ip_attr(Attr a) {
  return a == Attr::kSourceIp || a == Attr::kRemoteIp || a == Attr::kDestIp;
}

std::string_view strip_port(std::string_view host) {
  if (!host.empty() && host[0] == '[') {
    auto e = host.find("]:");
    return e == std::string_view::npos ? host : host.substr(0, e + 1);
  }
  auto c = host.find(':');
  if (c == std::string_view::npos || host.find(':', c + 1) != std::string_view::npos) return host;
  return host.substr(0, c);
}

// Istio path templates: "{*}" one non-empty segment, "{**}" the rest (last).
bool is_template(std::string_view p) {
  return p.find('{') != std::string_view::npos;
}

std::vector<std::string_view> split(std::string_view s) {
  std::vector<std::string_view> out;
  size_t b = 0;
  for (;;) {
    auto e = s.find('/', b);
    out.push_back(s.substr(b, e == std::string_view::npos ? e : e - b));
    if (e == std::string_view::npos) return out;
    b = e + 1;
  }
}

bool template_valid(std::string_view p) {
  if (p.empty() || p[0] != '/' || p.find('*') == 0 || p.back() == '*') return false;
  auto segs = split(p);
  for (size_t i = 0; i < segs.size(); ++i) {
    auto s = segs[i];
    if (s == "{*}") continue;
    if (s == "{**}") {
      if (i + 1 != segs.size()) return false;
      continue;
    }
    if (s.find_first_of("{}*") != std::string_view::npos) return false;
  }
  return true;
}

bool template_match(std::string_view pattern, std::string_view path) {
  auto p = split(pattern), s = split(path);
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == "{**}") return s.size() >= i + 1;
    if (i >= s.size()) return false;
    if (p[i] == "{*}" ? s[i].empty() : p[i] != s[i]) return false;
  }
  return p.size() == s.size();
}

bool value_match(const Check& c, std::string_view pattern, std::string_view v) {
  switch (c.attr) {
    case Attr::kHost:
      if (istio_match(pattern, v, true)) return true;
      return pattern.find(':') == std::string_view::npos && strip_port(v) != v &&
             istio_match(pattern, strip_port(v), true);
    case Attr::kPath:
      return is_template(pattern) ? template_match(pattern, v) : istio_match(pattern, v);
    case Attr::kHeader:
      return pattern == "*" || istio_match(pattern, v);  // "*": present, even empty
    default:
      return istio_match(pattern, v);
  }
}

// The attribute's values; false when absent (plaintext peer, no token ...).
bool values_of(const Check& c, const RequestAttrs& r, std::vector<std::string_view>& out,
               std::string& scratch) {
  auto one = [&](std::string_view v) {
    if (v.empty()) return false;
    out.push_back(v);
    return true;
  };
  switch (c.attr) {
    case Attr::kPrincipal:
      return one(r.source_principal);
    case Attr::kNamespace:
      return one(r.source_namespace);
    case Attr::kServiceAccount: {
      auto sa = r.source_principal.find("/sa/");
      if (r.source_namespace.empty() || sa == std::string_view::npos) return false;
      scratch =
          std::string(r.source_namespace) + "/" + std::string(r.source_principal.substr(sa + 4));
      return one(scratch);
    }
    case Attr::kSourceIp:
    case Attr::kRemoteIp:
      return one(r.source_ip);
    case Attr::kDestIp:
      return one(r.destination_ip);
    case Attr::kHost:
      return one(r.host);
    case Attr::kMethod:
      return one(r.method);
    case Attr::kPath:
      return one(r.path);
    case Attr::kSni:
      return one(r.sni);
    case Attr::kPort:
      return true;  // compared as a number
    case Attr::kHeader:
      if (!r.headers || !header_value(*r.headers, c.header, scratch)) return false;
      out.push_back(scratch);
      return true;
    case Attr::kRequestPrincipal:
      return r.auth && one(r.auth->principal);
    case Attr::kPresenter:
      return r.auth && one(r.auth->presenter);
    case Attr::kAudiences:
      if (!r.auth) return false;
      for (const auto& a : r.auth->audiences) out.push_back(a);
      return !out.empty();
    case Attr::kClaim: {
      if (!r.auth) return false;
      const json* j = &r.auth->claims;
      for (const auto& k : c.claim) {
        if (!j->is_object()) return false;
        auto it = j->find(k);
        if (it == j->end()) return false;
        j = &*it;
      }
      if (j->is_string()) out.push_back(j->get_ref<const std::string&>());
      if (j->is_array())
        for (const auto& e : *j)
          if (e.is_string()) out.push_back(e.get_ref<const std::string&>());
      return true;
    }
  }
  return false;
}

// Fields Istio cannot translate for a TCP filter chain.
bool http_only(Attr a) {
  switch (a) {
    case Attr::kRequestPrincipal:
    case Attr::kHost:
    case Attr::kMethod:
    case Attr::kPath:
    case Attr::kHeader:
    case Attr::kAudiences:
    case Attr::kPresenter:
    case Attr::kClaim:
      return true;
    default:
      return false;
  }
}

bool check_ok(const Check& c, const RequestAttrs& r) {
  if (r.tcp && http_only(c.attr)) return true;  // dropped from a DENY/AUDIT rule on TCP
  std::vector<std::string_view> vals;
  std::string scratch;
  bool present = values_of(c, r, vals, scratch);
  auto any = [&](const auto& patterns, auto&& eq) {
    if (!present) return false;
    for (const auto& p : patterns)
      for (auto v : vals)
        if (eq(p, v)) return true;
    return false;
  };
  if (c.attr == Attr::kPort) {
    auto has = [&](const std::vector<uint16_t>& ps) {
      for (auto p : ps)
        if (p == r.destination_port) return true;
      return false;
    };
    return (c.ports.empty() || has(c.ports)) && !has(c.not_ports);
  }
  if (is_ip_attr(c.attr)) {
    std::optional<IpAddr> ip = present ? IpAddr::parse(vals[0]) : std::nullopt;
    present = ip.has_value();
    auto in = [&](const Cidr& b, std::string_view) { return b.contains(*ip); };
    return (c.cidrs.empty() || any(c.cidrs, in)) && !(!c.not_cidrs.empty() && any(c.not_cidrs, in));
  }
  auto m = [&](const std::string& p, std::string_view v) { return value_match(c, p, v); };
  if (!c.values.empty() && !any(c.values, m)) return false;
  return c.not_values.empty() || !any(c.not_values, m);
}

bool all_ok(const std::vector<Check>& cs, const RequestAttrs& r) {
  for (const auto& c : cs)
    if (!check_ok(c, r)) return false;
  return true;
}

bool has_http_only(const Rule& rule) {
  for (const auto* list : {&rule.from, &rule.to})
    for (const auto& cs : *list)
      for (const auto& c : cs)
        if (http_only(c.attr)) return true;
  for (const auto& c : rule.when)
    if (http_only(c.attr)) return true;
  return false;
}

bool rule_matches(const Rule& rule, Action a, const RequestAttrs& r) {
  if (rule.poisoned) return a != Action::kAllow;
  if (r.tcp && a == Action::kAllow && has_http_only(rule)) return false;  // left out on TCP
  for (const auto* list : {&rule.from, &rule.to}) {
    if (list->empty()) continue;
    bool any = false;
    for (const auto& cs : *list) any = any || all_ok(cs, r);
    if (!any) return false;
  }
  return all_ok(rule.when, r);
}

// Compilation, collecting "<pointer>: <reason>" and poisoning the rule.
struct Compiler {
  std::string prefix;  // "AuthorizationPolicy ns/name: "
  std::vector<std::string>* errors;
  Rule* rule = nullptr;
  int failures = 0;

  void fail(const std::string& ptr, const std::string& why) {
    ++failures;
    if (errors) errors->push_back(prefix + ptr + ": " + why);
    if (rule) rule->poisoned = true;
  }
  std::vector<std::string> strings(const json& o, const std::string& ptr, const char* key) {
    std::vector<std::string> out;
    auto it = o.find(key);
    if (it == o.end() || it->is_null()) return out;
    std::string p = ptr + "/" + key;
    if (!it->is_array()) return fail(p, "must be a list of strings"), out;
    for (size_t i = 0; i < it->size(); ++i) {
      if (!(*it)[i].is_string())
        fail(p + "/" + std::to_string(i), "must be a string");
      else
        out.push_back((*it)[i].get<std::string>());
    }
    return out;
  }
  // One field pair into a check (skipped when both are absent or empty).
  void field(const json& o, const std::string& ptr, const char* key, const char* not_key, Attr a,
             std::vector<Check>& out, Check c = {}) {
    c.attr = a;
    auto vs = strings(o, ptr, key), nvs = strings(o, ptr, not_key);
    if (vs.empty() && nvs.empty()) return;
    auto conv = [&](const std::vector<std::string>& in, const char* k, auto& cidrs, auto& ports,
                    auto& strs) {
      for (size_t i = 0; i < in.size(); ++i) {
        std::string p = ptr + "/" + k + "/" + std::to_string(i);
        const std::string& v = in[i];
        if (is_ip_attr(a)) {
          if (auto cidr = Cidr::parse(v))
            cidrs.push_back(*cidr);
          else
            fail(p, "\"" + v + "\" is not an IP address or CIDR");
        } else if (a == Attr::kPort) {
          char* end = nullptr;
          unsigned long n = v.empty() || v.size() > 5 ? 70000 : std::strtoul(v.c_str(), &end, 10);
          if (n > 65535 || (end && *end))
            fail(p, "\"" + v + "\" is not a port");
          else
            ports.push_back(static_cast<uint16_t>(n));
        } else {
          if (a == Attr::kPath && is_template(v) && !template_valid(v))
            fail(p, "\"" + v + "\" is not a valid path template");
          if (a == Attr::kPrincipal && v.rfind("spiffe://", 0) == 0)
            fail(p, "write principals without the \"spiffe://\" prefix");
          if (v.empty()) fail(p, "must not be empty");
          strs.push_back(v);
        }
      }
    };
    conv(vs, key, c.cidrs, c.ports, c.values);
    conv(nvs, not_key, c.not_cidrs, c.not_ports, c.not_values);
    out.push_back(std::move(c));
  }
  bool object(const json& o, const std::string& ptr, std::initializer_list<const char*> keys) {
    if (!o.is_object()) return fail(ptr, "must be an object"), false;
    for (auto it = o.begin(); it != o.end(); ++it) {
      bool known = false;
      for (const char* k : keys) known = known || it.key() == k;
      if (!known) fail(ptr + "/" + it.key(), "unknown field");
    }
    return true;
  }
  // Ports given as numbers (some tools write them so) are taken as strings.
  json ports_as_strings(json o) {
    for (const char* k : {"ports", "notPorts", "values", "notValues"})
      if (auto it = o.find(k); it != o.end() && it->is_array())
        for (auto& v : *it)
          if (v.is_number_integer()) v = std::to_string(v.get<int64_t>());
    return o;
  }
  void when(const json& w, const std::string& ptr) {
    if (!object(w, ptr, {"key", "values", "notValues"})) return;
    auto k = w.find("key");
    if (k == w.end() || !k->is_string()) return fail(ptr + "/key", "must be a string");
    const std::string key = k->get<std::string>();
    Check c;
    std::optional<Attr> a;
    static const std::pair<const char*, Attr> kKeys[] = {
        {"source.ip", Attr::kSourceIp},
        {"remote.ip", Attr::kRemoteIp},
        {"source.namespace", Attr::kNamespace},
        {"source.principal", Attr::kPrincipal},
        {"source.serviceAccount", Attr::kServiceAccount},
        {"request.auth.principal", Attr::kRequestPrincipal},
        {"request.auth.audiences", Attr::kAudiences},
        {"request.auth.presenter", Attr::kPresenter},
        {"destination.ip", Attr::kDestIp},
        {"destination.port", Attr::kPort},
        {"connection.sni", Attr::kSni}};
    for (const auto& [name, attr] : kKeys)
      if (key == name) a = attr;
    auto bracket = [&](std::string_view pre, std::vector<std::string>& names) {
      if (key.rfind(pre, 0) != 0) return false;
      std::string_view rest = std::string_view(key).substr(pre.size());
      while (!rest.empty()) {
        auto close = rest.find(']');
        if (rest[0] != '[' || close == std::string_view::npos || close == 1) return false;
        names.emplace_back(rest.substr(1, close - 1));
        rest = rest.substr(close + 1);
      }
      return !names.empty();
    };
    std::vector<std::string> names;
    if (!a && bracket("request.headers", names) && names.size() == 1) {
      a = Attr::kHeader;
      c.header = names[0];
    } else if (!a && (names.clear(), bracket("request.auth.claims", names))) {
      a = Attr::kClaim;
      c.claim = names;
    }
    if (!a) return fail(ptr + "/key", "unknown condition key \"" + key + "\"");
    std::vector<Check> out;
    json wj = ports_as_strings(w);
    auto given = [&](const char* k) {
      auto it = wj.find(k);
      return it != wj.end() && it->is_array() && !it->empty();
    };
    if (!given("values") && !given("notValues"))
      return fail(ptr, "at least one of values or notValues must be set");
    field(wj, ptr, "values", "notValues", *a, out, c);
    for (auto& x : out) rule->when.push_back(std::move(x));
  }
  void compile_rule(const json& j, const std::string& ptr, Rule& r) {
    rule = &r;
    if (!object(j, ptr, {"from", "to", "when"})) return;
    auto list = [&](const char* key, auto&& each) {
      auto it = j.find(key);
      if (it == j.end() || it->is_null()) return;
      std::string p = ptr + "/" + key;
      if (!it->is_array()) return fail(p, "must be a list");
      for (size_t i = 0; i < it->size(); ++i) each((*it)[i], p + "/" + std::to_string(i));
    };
    list("from", [&](const json& e, const std::string& p) {
      if (!object(e, p, {"source"})) return;
      auto s = e.find("source");
      if (s == e.end()) return fail(p + "/source", "is required");
      std::string sp = p + "/source";
      if (!object(*s, sp,
                  {"principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals",
                   "namespaces", "notNamespaces", "serviceAccounts", "notServiceAccounts",
                   "ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks"}))
        return;
      std::vector<Check> cs;
      field(*s, sp, "principals", "notPrincipals", Attr::kPrincipal, cs);
      field(*s, sp, "requestPrincipals", "notRequestPrincipals", Attr::kRequestPrincipal, cs);
      field(*s, sp, "namespaces", "notNamespaces", Attr::kNamespace, cs);
      field(*s, sp, "serviceAccounts", "notServiceAccounts", Attr::kServiceAccount, cs);
      field(*s, sp, "ipBlocks", "notIpBlocks", Attr::kSourceIp, cs);
      field(*s, sp, "remoteIpBlocks", "notRemoteIpBlocks", Attr::kRemoteIp, cs);
      if (cs.empty()) fail(sp, "must not be empty");
      r.from.push_back(std::move(cs));
    });
    list("to", [&](const json& e, const std::string& p) {
      if (!object(e, p, {"operation"})) return;
      auto o = e.find("operation");
      if (o == e.end()) return fail(p + "/operation", "is required");
      std::string op = p + "/operation";
      if (!object(*o, op,
                  {"hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths",
                   "notPaths"}))
        return;
      json oj = ports_as_strings(*o);
      std::vector<Check> cs;
      field(oj, op, "hosts", "notHosts", Attr::kHost, cs);
      field(oj, op, "ports", "notPorts", Attr::kPort, cs);
      field(oj, op, "methods", "notMethods", Attr::kMethod, cs);
      field(oj, op, "paths", "notPaths", Attr::kPath, cs);
      if (cs.empty()) fail(op, "must not be empty");
      r.to.push_back(std::move(cs));
    });
    list("when", [&](const json& e, const std::string& p) { when(e, p); });
  }
};

std::string str_at(const json& o, const char* k) {
  auto it = o.find(k);
  return it != o.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

struct L7Authz::Policy {
  std::string id;
  Action action = Action::kAllow;
  bool dry_run = false;
  std::string provider;
  Binding binding;
  std::vector<Rule> rules;
  bool applies(const RequestAttrs& r) const {
    return binding.all_services || binding.services.count(std::string(r.service)) > 0;
  }
  bool matches(const RequestAttrs& r) const {
    for (const auto& rule : rules)
      if (rule_matches(rule, action, r)) return true;
    return false;
  }
};

bool istio_match(std::string_view pattern, std::string_view v, bool ic) {
  auto eq = [&](std::string_view a, std::string_view b) { return ic ? iequals(a, b) : a == b; };
  if (pattern == "*") return !v.empty();
  if (pattern.size() > 1 && pattern.back() == '*') {
    auto pre = pattern.substr(0, pattern.size() - 1);
    return v.size() >= pre.size() && eq(v.substr(0, pre.size()), pre);
  }
  if (pattern.size() > 1 && pattern.front() == '*') {
    auto suf = pattern.substr(1);
    return v.size() >= suf.size() && eq(v.substr(v.size() - suf.size()), suf);
  }
  return eq(pattern, v);
}

Binding bind_policy(const json* spec, std::string_view ns, const AuthzScope& scope,
                    bool selectorless) {
  Binding b;
  const json* single = nullptr;
  const json* list = nullptr;
  if (spec && spec->is_object()) {
    if (auto it = spec->find("targetRef"); it != spec->end() && !it->is_null()) single = &*it;
    if (auto it = spec->find("targetRefs"); it != spec->end() && !it->is_null()) list = &*it;
  }
  if (!single && !list) {
    bool has_selector = false;
    if (spec && spec->is_object())
      if (auto s = spec->find("selector"); s != spec->end() && s->is_object())
        if (auto ml = s->find("matchLabels"); ml != s->end() && ml->is_object() && !ml->empty())
          has_selector = true;
    b.here =
        selectorless && !has_selector && (ns == scope.namespace_ || ns == scope.root_namespace);
    b.all_services = b.here;
    return b;
  }
  auto one = [&](const json& t) {
    if (!t.is_object()) return;
    std::string group = str_at(t, "group"), kind = str_at(t, "kind"), name = str_at(t, "name");
    std::string tns = str_at(t, "namespace");
    if (!tns.empty() && tns != ns) return;  // cross-namespace references are not allowed
    bool gw_api = group == "gateway.networking.k8s.io";
    if (kind == "Gateway" && gw_api && ns == scope.namespace_ && name == scope.waypoint)
      b.here = b.all_services = true;
    else if (kind == "GatewayClass" && gw_api && ns == scope.root_namespace &&
             name == scope.gateway_class)
      b.here = b.all_services = true;
    else if (kind == "Service" && (group.empty() || group == "core")) {
      std::string id = std::string(ns) + "/" + name;
      if (scope.services.count(id)) {
        b.here = true;
        b.services.insert(id);
      }
    }
  };
  if (single) one(*single);
  if (list && list->is_array())
    for (const auto& t : *list) one(t);
  return b;
}

L7Authz::L7Authz() : policies_(std::make_shared<const std::vector<Policy>>()) {}
L7Authz::~L7Authz() = default;
L7Authz::L7Authz(const L7Authz&) = default;
L7Authz::L7Authz(L7Authz&&) noexcept = default;
L7Authz& L7Authz::operator=(const L7Authz&) = default;
L7Authz& L7Authz::operator=(L7Authz&&) noexcept = default;
size_t L7Authz::size() const {
  return policies_->size();
}

L7Authz L7Authz::build(const std::vector<json>& objects, const AuthzScope& scope,
                       std::vector<std::string>* errors) {
  auto out = std::make_shared<std::vector<Policy>>();
  std::set<std::string> providers;
  for (const json& j : objects) {
    if (!j.is_object()) continue;
    const json* md = j.contains("metadata") ? &j["metadata"] : nullptr;
    std::string name = md ? str_at(*md, "name") : "", ns = md ? str_at(*md, "namespace") : "";
    const json* spec = j.contains("spec") ? &j["spec"] : nullptr;
    Binding b = bind_policy(spec, ns, scope, false);
    if (!b.here) continue;
    Policy p;
    p.id = ns + "/" + name;
    p.binding = std::move(b);
    Compiler c{"AuthorizationPolicy " + p.id + ": ", errors};
    if (md && md->contains("annotations") && (*md)["annotations"].is_object()) {
      const json& ann = (*md)["annotations"];
      if (auto it = ann.find("istio.io/dry-run"); it != ann.end()) {
        p.dry_run = *it == "true";
        if (!p.dry_run && *it != "false")
          c.fail("/metadata/annotations/istio.io~1dry-run",
                 "must be \"true\" or \"false\"; enforced");
      }
    }
    Rule poison;
    poison.poisoned = true;
    if (spec && !spec->is_object()) {
      c.fail("/spec", "must be an object");
      p.action = Action::kDeny;
      p.rules.push_back(poison);
      out->push_back(std::move(p));
      continue;
    }
    std::string action = spec ? str_at(*spec, "action") : "";
    if (action.empty() || action == "ALLOW")
      p.action = Action::kAllow;
    else if (action == "DENY")
      p.action = Action::kDeny;
    else if (action == "AUDIT")
      p.action = Action::kAudit;
    else if (action == "CUSTOM")
      p.action = Action::kCustom;
    else {
      c.fail("/spec/action", "\"" + action + "\" is not ALLOW, DENY, AUDIT or CUSTOM; denying all");
      p.action = Action::kDeny;
      p.rules.push_back(poison);
    }
    if (p.action == Action::kCustom) {
      const json* prov = spec->contains("provider") ? &(*spec)["provider"] : nullptr;
      p.provider = prov && prov->is_object() ? str_at(*prov, "name") : "";
      if (p.provider.empty()) {
        c.fail("/spec/provider/name", "is required with action CUSTOM; denying all");
        p.action = Action::kDeny;
        p.rules.push_back(poison);
      } else if (!p.dry_run) {
        providers.insert(p.provider);
      }
    }
    if (spec && p.rules.empty()) {
      int before = c.failures;
      c.object(*spec, "/spec",
               {"selector", "targetRef", "targetRefs", "action", "provider", "rules"});
      if (c.failures > before)
        p.rules.push_back(poison);  // an unknown spec field: cannot tell what was meant
      if (auto rs = spec->find("rules"); rs != spec->end() && !rs->is_null()) {
        if (!rs->is_array()) {
          c.fail("/spec/rules", "must be a list");
          p.rules.push_back(poison);
        } else {
          for (size_t i = 0; i < rs->size(); ++i) {
            p.rules.emplace_back();
            c.compile_rule((*rs)[i], "/spec/rules/" + std::to_string(i), p.rules.back());
          }
        }
      }
    }
    out->push_back(std::move(p));
  }
  L7Authz a;
  a.policies_ = std::move(out);
  if (providers.size() > 1) {
    std::string all;
    for (const auto& pr : providers) all += (all.empty() ? "" : ", ") + pr;
    a.custom_conflict_ = "only one CUSTOM provider per waypoint, found " + all;
    if (errors) errors->push_back("AuthorizationPolicy: " + a.custom_conflict_ + "; denying all");
  }
  return a;
}

Decision L7Authz::evaluate(const RequestAttrs& r) const {
  return run(r, true);
}
Decision L7Authz::evaluate_after_custom(const RequestAttrs& r) const {
  return run(r, false);
}

Decision L7Authz::run(const RequestAttrs& r, bool custom) const {
  Decision d;
  // Shadow engine for dry-run policies (DENY then ALLOW) and AUDIT flags.
  bool shadow_allow_applies = false;
  for (const Policy& p : *policies_) {
    if (!p.applies(r)) continue;
    if (p.action == Action::kAudit && !p.dry_run) {
      d.audit_evaluated = true;
      if (!d.audit && p.matches(r)) {
        d.audit = true;
        d.audit_policy = p.id;
      }
    }
    if (!p.dry_run || (p.action != Action::kDeny && p.action != Action::kAllow)) continue;
    d.dry_run.evaluated = true;
    if (p.action == Action::kDeny && !d.dry_run.would_deny && p.matches(r)) {
      d.dry_run.would_deny = true;
      d.dry_run.policy = p.id;
    }
  }
  if (!d.dry_run.would_deny) {
    for (const Policy& p : *policies_) {
      if (!p.applies(r) || !p.dry_run || p.action != Action::kAllow) continue;
      shadow_allow_applies = true;
      if (p.matches(r)) {
        d.dry_run.policy = p.id;
        break;
      }
    }
    if (shadow_allow_applies && d.dry_run.policy.empty()) d.dry_run.would_deny = true;
  }
  auto enforced = [&](const Policy& p, Action a) {
    return p.action == a && !p.dry_run && p.applies(r);
  };
  if (custom && !r.tcp) {
    for (const Policy& p : *policies_) {
      if (!enforced(p, Action::kCustom) || !p.matches(r)) continue;
      if (!custom_conflict_.empty()) {
        d.kind = Decision::kDeny;
        d.reason = custom_conflict_;
        return d;
      }
      d.kind = Decision::kCustom;
      d.policy = p.id;
      d.provider = p.provider;
      d.reason = "CUSTOM policy matched";
      return d;
    }
  }
  for (const Policy& p : *policies_) {
    if (enforced(p, Action::kDeny) && p.matches(r)) {
      d.kind = Decision::kDeny;
      d.policy = p.id;
      d.reason = "DENY policy matched";
      return d;
    }
  }
  bool any_allow = false;
  for (const Policy& p : *policies_) {
    if (!enforced(p, Action::kAllow)) continue;
    any_allow = true;
    if (p.matches(r)) {
      d.policy = p.id;
      d.reason = "ALLOW policy matched";
      return d;
    }
  }
  d.kind = any_allow ? Decision::kDeny : Decision::kAllow;
  d.reason = any_allow ? "no ALLOW policy matched" : "no ALLOW policy applies";
  return d;
}

}  // namespace warren::waypoint
