// Gateway API HTTPRoute (GAMMA: parentRefs naming Services) → route rules
// ordered by the Gateway API precedence.
#include "route_compile.h"

#include <re2/re2.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>

namespace warren::waypoint::route_compile {

using nlohmann::json;
using namespace spec;

namespace {

HeaderOps gateway_header_ops(const json& j, const std::string& p) {
  object(j, p);
  HeaderOps ops;
  for (const char* k : {"set", "add"}) {
    auto* l = get(j, k);
    if (!l) continue;
    for (size_t i = 0; i < list(*l, p_(p, k)).size(); i++) {
      std::string q = p_(p_(p, k), i);
      object((*l)[i], q);
      auto* n = get((*l)[i], "name");
      if (!n) fail(p_(q, "name"), "is required");
      auto name = string(*n, p_(q, "name"));
      check_header_name(name, p_(q, "name"));
      auto* v = get((*l)[i], "value");
      (k[0] == 's' ? ops.set : ops.add).push_back({name, v ? string(*v, p_(q, "value")) : ""});
    }
  }
  if (auto* r = get(j, "remove")) {
    for (size_t i = 0; i < list(*r, p_(p, "remove")).size(); i++) {
      auto n = string((*r)[i], p_(p_(p, "remove"), i));
      check_header_name(n, p_(p_(p, "remove"), i));
      ops.remove.push_back(to_lower(n));
    }
  }
  return ops;
}

// A backendRef naming a Service (GAMMA); other kinds are not supported.
RouteDestination gateway_backend(const json& j, const std::string& p, const Meta& m,
                                 const RouteContext& ctx) {
  object(j, p);
  std::string group = get(j, "group") ? string(j["group"], p_(p, "group")) : "";
  std::string kind = get(j, "kind") ? string(j["kind"], p_(p, "kind")) : "Service";
  if ((group != "" && group != "core") || kind != "Service")
    fail(p_(p, "kind"), "only Service backends are supported");
  auto* name = get(j, "name");
  if (!name) fail(p_(p, "name"), "is required");
  std::string ns = get(j, "namespace") ? nonempty(j["namespace"], p_(p, "namespace")) : m.ns;
  RouteDestination d;
  d.host = to_lower(nonempty(*name, p_(p, "name"))) + "." + ns + ".svc." + ctx.cluster_domain;
  auto* pt = get(j, "port");
  if (!pt) fail(p_(p, "port"), "is required for a Service backend");
  d.port = port(*pt, p_(p, "port"));
  auto* w = get(j, "weight");
  d.weight =
      w ? static_cast<uint32_t>(integer(*w, p_(p, "weight"), 0, 1000000, "an integer 0-1000000"))
        : 1;
  return d;
}

// HTTPPathModifier {type, replaceFullPath | replacePrefixMatch}: (value, is_prefix).
std::pair<std::string, bool> gateway_path_modifier(const json& j, const std::string& p) {
  object(j, p);
  auto* t = get(j, "type");
  if (!t) fail(p_(p, "type"), "is required");
  auto type = string(*t, p_(p, "type"));
  const char* field = type == "ReplaceFullPath"      ? "replaceFullPath"
                      : type == "ReplacePrefixMatch" ? "replacePrefixMatch"
                                                     : nullptr;
  if (!field) fail(p_(p, "type"), "must be ReplaceFullPath or ReplacePrefixMatch");
  auto* v = get(j, field);
  if (!v) fail(p_(p, field), "is required");
  return {string(*v, p_(p, field)), field[7] == 'P'};
}

StringMatch gateway_string_match(const json& j, const std::string& p, const char* exact_name) {
  std::string type = get(j, "type") ? string(j["type"], p_(p, "type")) : exact_name;
  auto* v = get(j, "value");
  if (!v) fail(p_(p, "value"), "is required");
  StringMatch s;
  s.value = string(*v, p_(p, "value"));
  if (type == exact_name) {
    s.kind = StringMatch::Kind::kExact;
  } else if (type == "RegularExpression") {
    s.kind = StringMatch::Kind::kRegex;
    s.re = regex(s.value, p_(p, "value"));
  } else {
    fail(p_(p, "type"), std::string("must be ") + exact_name + " or RegularExpression");
  }
  return s;
}

// One HTTPRouteMatch as a MatchBlock, its prefix (for rewrites) and precedence.
MatchBlock gateway_match(const json& j, const std::string& p, std::string& prefix, int& rank,
                         int64_t& len) {
  object(j, p);
  MatchBlock b;
  std::string type = "PathPrefix", value = "/";
  if (auto* path = get(j, "path")) {
    object(*path, p_(p, "path"));
    if (auto* t = get(*path, "type")) type = string(*t, p_(p_(p, "path"), "type"));
    if (auto* v = get(*path, "value")) value = string(*v, p_(p_(p, "path"), "value"));
  }
  std::string vp = p_(p_(p, "path"), "value");
  StringMatch s;
  s.value = value;
  if (type == "Exact" || type == "PathPrefix") {
    if (value.empty() || value[0] != '/') fail(vp, "must start with /");
    rank = type == "Exact" ? 0 : 2;
    len = -static_cast<int64_t>(value.size());
    if (type == "Exact") {
      s.kind = StringMatch::Kind::kExact;
    } else {
      // Path elements: /foo matches /foo, /foo/ and /foo/bar, not /foobar.
      while (value.size() > 1 && value.back() == '/') value.pop_back();
      prefix = value;
      if (value == "/") {
        s.kind = StringMatch::Kind::kPrefix;
      } else {
        s.kind = StringMatch::Kind::kRegex;
        s.re = regex(re2::RE2::QuoteMeta(value) + "(/.*)?", vp);
      }
    }
  } else if (type == "RegularExpression") {
    rank = 1;
    len = -static_cast<int64_t>(value.size());
    s.kind = StringMatch::Kind::kRegex;
    s.re = regex(value, vp);
  } else {
    fail(p_(p_(p, "path"), "type"), "must be Exact, PathPrefix or RegularExpression");
  }
  b.uri = std::move(s);
  for (const char* k : {"headers", "queryParams"}) {
    auto* l = get(j, k);
    if (!l) continue;
    for (size_t i = 0; i < list(*l, p_(p, k)).size(); i++) {
      std::string q = p_(p_(p, k), i);
      object((*l)[i], q);
      auto* n = get((*l)[i], "name");
      if (!n) fail(p_(q, "name"), "is required");
      auto name = nonempty(*n, p_(q, "name"));
      auto m = gateway_string_match((*l)[i], q, "Exact");
      (k[0] == 'h' ? b.headers : b.query_params)
          .push_back({k[0] == 'h' ? to_lower(name) : name, std::move(m)});
    }
  }
  if (auto* mt = get(j, "method")) {
    StringMatch s2;
    s2.kind = StringMatch::Kind::kExact;
    s2.value = nonempty(*mt, p_(p, "method"));
    b.method = std::move(s2);
  }
  return b;
}

// The rule's filters onto `r` (matches are set by the caller).
void gateway_filters(const json& l, const std::string& p, HttpRoute& r, const Meta& m,
                     const RouteContext& ctx) {
  for (size_t i = 0; i < list(l, p).size(); i++) {
    std::string q = p_(p, i);
    const json& f = object(l[i], q);
    auto* t = get(f, "type");
    if (!t) fail(p_(q, "type"), "is required");
    auto type = string(*t, p_(q, "type"));
    auto body = [&](const char* k) -> const json& {
      if (!get(f, k)) fail(p_(q, k), "is required for type " + type);
      return f[k];
    };
    if (type == "RequestHeaderModifier") {
      r.request_headers =
          gateway_header_ops(body("requestHeaderModifier"), p_(q, "requestHeaderModifier"));
    } else if (type == "ResponseHeaderModifier") {
      r.response_headers =
          gateway_header_ops(body("responseHeaderModifier"), p_(q, "responseHeaderModifier"));
    } else if (type == "RequestRedirect" || type == "URLRewrite") {
      bool redirect = type == "RequestRedirect";
      const char* k = redirect ? "requestRedirect" : "urlRewrite";
      std::string qk = p_(q, k);
      const json& j = object(body(k), qk);
      Redirect rd;
      rd.code = 302;
      if (auto* h = get(j, "hostname"))
        (redirect ? rd.authority : r.rewrite_authority.emplace()) =
            nonempty(*h, p_(qk, "hostname"));
      if (auto* pm = get(j, "path")) {
        auto [v, is_prefix] = gateway_path_modifier(*pm, p_(qk, "path"));
        if (redirect) {
          rd.uri = v;
          rd.uri_is_prefix = is_prefix;
        } else {
          r.rewrite_uri = v;
          r.rewrite_full_path = !is_prefix;
        }
      }
      if (!redirect) continue;
      if (auto* s = get(j, "scheme")) {
        rd.scheme = string(*s, p_(qk, "scheme"));
        if (rd.scheme != "http" && rd.scheme != "https")
          fail(p_(qk, "scheme"), "must be http or https");
      }
      if (auto* pt = get(j, "port")) rd.port = port(*pt, p_(qk, "port"));
      if (auto* sc = get(j, "statusCode")) {
        rd.code = static_cast<int>(integer(*sc, p_(qk, "statusCode"), 301, 302, "301 or 302"));
      }
      r.redirect = std::move(rd);
    } else if (type == "RequestMirror") {
      std::string qk = p_(q, "requestMirror");
      const json& j = object(body("requestMirror"), qk);
      auto* br = get(j, "backendRef");
      if (!br) fail(p_(qk, "backendRef"), "is required");
      Mirror mi{gateway_backend(*br, p_(qk, "backendRef"), m, ctx), 100};
      mi.dest.weight = 100;
      if (auto* pc = get(j, "percent")) {
        mi.percent =
            static_cast<double>(integer(*pc, p_(qk, "percent"), 0, 100, "an integer 0-100"));
      } else if (auto* fr = get(j, "fraction")) {
        std::string qf = p_(qk, "fraction");
        object(*fr, qf);
        auto* num = get(*fr, "numerator");
        if (!num) fail(p_(qf, "numerator"), "is required");
        int64_t n = integer(*num, p_(qf, "numerator"), 0, INT32_MAX, "a non-negative integer");
        int64_t d = get(*fr, "denominator") ? integer((*fr)["denominator"], p_(qf, "denominator"),
                                                      1, INT32_MAX, "a positive integer")
                                            : 100;
        if (n > d) fail(qf, "numerator must not exceed denominator");
        mi.percent = 100.0 * static_cast<double>(n) / static_cast<double>(d);
      }
      r.mirrors.push_back(std::move(mi));
    } else if (type == "CORS") {
      // Accepted; the waypoint does not answer preflights itself.
    } else {
      fail(p_(q, "type"), json(type).dump() + " filters are not supported");
    }
  }
}

}  // namespace

std::vector<GatewayRule> compile_http_route(const json& o, const RouteContext& ctx) {
  Meta m = meta(o);
  auto* sp = get(o, "spec");
  if (!sp) fail("/spec", "is required");
  object(*sp, "/spec");
  // Parents: Services (GAMMA). Routes attached to Gateways are not ours.
  std::vector<std::pair<std::string, std::optional<uint16_t>>> parents;
  if (auto* prs = get(*sp, "parentRefs")) {
    for (size_t i = 0; i < list(*prs, "/spec/parentRefs").size(); i++) {
      std::string q = p_("/spec/parentRefs", i);
      const json& pr = object((*prs)[i], q);
      // The API server defaults group to gateway.networking.k8s.io; an absent
      // group beside kind Service (objects not from the API server) means core.
      std::string group = get(pr, "group") ? string(pr["group"], p_(q, "group")) : "";
      std::string kind = get(pr, "kind") ? string(pr["kind"], p_(q, "kind")) : "Gateway";
      if (kind != "Service" || (group != "" && group != "core")) continue;
      auto* name = get(pr, "name");
      if (!name) fail(p_(q, "name"), "is required");
      std::string ns = get(pr, "namespace") ? nonempty(pr["namespace"], p_(q, "namespace")) : m.ns;
      std::optional<uint16_t> pt;
      if (auto* x = get(pr, "port")) pt = port(*x, p_(q, "port"));
      parents.emplace_back(
          to_lower(nonempty(*name, p_(q, "name"))) + "." + ns + ".svc." + ctx.cluster_domain, pt);
    }
  }
  std::vector<GatewayRule> out;
  std::string source = "HTTPRoute " + m.ns + "/" + m.name;
  auto* rules = get(*sp, "rules");
  json implicit = json::array({json::object()});
  const json& rl = rules ? list(*rules, "/spec/rules") : implicit;
  for (size_t ri = 0; ri < rl.size(); ri++) {
    std::string p = p_("/spec/rules", ri);
    const json& rule = object(rl[ri], p);
    HttpRoute base;
    base.gateway_api = true;
    if (auto* n = get(rule, "name")) base.name = string(*n, p_(p, "name"));
    if (auto* fs = get(rule, "filters")) gateway_filters(*fs, p_(p, "filters"), base, m, ctx);
    if (auto* brs = get(rule, "backendRefs")) {
      for (size_t i = 0; i < list(*brs, p_(p, "backendRefs")).size(); i++) {
        std::string q = p_(p_(p, "backendRefs"), i);
        auto d = gateway_backend((*brs)[i], q, m, ctx);
        if (auto* fs = get((*brs)[i], "filters")) {
          HttpRoute tmp;
          gateway_filters(*fs, p_(q, "filters"), tmp, m, ctx);
          d.request = std::move(tmp.request_headers);
          d.response = std::move(tmp.response_headers);
        }
        base.destinations.push_back(std::move(d));
      }
    }
    bool any_weight = std::any_of(base.destinations.begin(), base.destinations.end(),
                                  [](const RouteDestination& d) { return d.weight > 0; });
    if (base.redirect) {
      base.destinations.clear();
    } else if (!any_weight) {
      base.destinations.clear();
      base.direct_response = DirectResponse{500, {}};  // no usable backend
    }
    if (auto* to = get(rule, "timeouts")) {
      object(*to, p_(p, "timeouts"));
      if (auto* t = get(*to, "request"))
        base.timeout = duration(*t, p_(p_(p, "timeouts"), "request"));
      if (auto* t = get(*to, "backendRequest"))
        base.retries.emplace(default_retry_policy()).per_try_timeout =
            duration(*t, p_(p_(p, "timeouts"), "backendRequest"));
    }
    if (auto* rt = get(rule, "retry")) {
      std::string q = p_(p, "retry");
      object(*rt, q);
      RetryPolicy& rp = base.retries ? *base.retries : base.retries.emplace(default_retry_policy());
      if (auto* a = get(*rt, "attempts"))
        rp.attempts = static_cast<uint32_t>(
            integer(*a, p_(q, "attempts"), 0, INT32_MAX, "a non-negative integer"));
      if (auto* b = get(*rt, "backoff")) rp.backoff_base = duration(*b, p_(q, "backoff"));
      if (auto* c = get(*rt, "codes")) {
        rp.retriable_status_codes.clear();
        for (size_t i = 0; i < list(*c, p_(q, "codes")).size(); i++)
          rp.retriable_status_codes.push_back(static_cast<int>(
              integer((*c)[i], p_(p_(q, "codes"), i), 400, 599, "an HTTP status 400-599")));
      }
    }
    auto* ms = get(rule, "matches");
    json all = json::array({json::object()});
    const json& ml = ms && !ms->empty() ? list(*ms, p_(p, "matches")) : all;
    for (size_t mi = 0; mi < ml.size(); mi++) {
      std::string prefix;
      int rank = 2;
      int64_t len = -1;
      HttpRoute r = base;
      r.match.blocks.push_back(gateway_match(ml[mi], p_(p_(p, "matches"), mi), prefix, rank, len));
      r.block_prefixes.push_back(prefix);
      const MatchBlock& b = r.match.blocks[0];
      GatewayKey key{rank,
                     len,
                     b.method ? 0 : 1,
                     -static_cast<int64_t>(b.headers.size()),
                     -static_cast<int64_t>(b.query_params.size()),
                     m.order,
                     ri,
                     mi};
      for (const auto& [host, pt] : parents) out.push_back({host, {r, pt, source}, key});
    }
  }
  return out;
}

}  // namespace warren::waypoint::route_compile
