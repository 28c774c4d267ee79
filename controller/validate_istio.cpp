// Checks of Istio's kinds. AuthorizationPolicy and PeerAuthentication go
// through warren-node's parser; RequestAuthentication, VirtualService and
// DestinationRule are checked on the fields the waypoint will read (types,
// required fields, ranges), not on unknown fields.
#include <map>
#include <sstream>

#include "validate_util.h"
#include "warren/config.h"

namespace warren::controller::detail {

void check_with_node_parser(Checker& c, const json& obj) {
  const char* list = key_of(obj).kind == "PeerAuthentication" ? "peerAuthentications" : "policies";
  json doc = {{"node", {{"name", "validate"}, {"address", "127.0.0.1"}}},
              {"certificates", {{"rootCert", "-"}, {"dir", "-"}}},
              {list, json::array({obj})}};
  auto r = config::parse(doc);
  if (r.ok()) return;
  std::string prefix = std::string("/") + list + "/0";
  std::istringstream in(r.error().message);
  std::string line;
  while (std::getline(in, line)) {
    auto colon = line.find(": ");
    if (line.rfind(prefix, 0) != 0 || colon == std::string::npos) {
      c.err("", line);
      continue;
    }
    std::string pointer = line.substr(prefix.size(), colon - prefix.size());
    c.err(pointer_to_path(obj, pointer), line.substr(colon + 2));
  }
}

void check_request_authentication(Checker& c, const json& obj) {
  const json* spec = c.object(obj, "", "spec");
  if (!spec) return;
  c.workload_selector(*spec, "spec", "selector");
  if (const json* t = Checker::get(*spec, "targetRef")) c.target_ref(*t, "spec.targetRef");
  c.each(*spec, "spec", "targetRefs", [&](const json& t, const std::string& p, size_t) { c.target_ref(t, p); });
  c.each(*spec, "spec", "jwtRules", [&](const json& r, const std::string& rp, size_t) {
    if (!r.is_object()) return c.err(rp, "must be an object, got " + show(r));
    c.string(r, rp, "issuer", true);
    auto uri = c.string(r, rp, "jwksUri");
    if (uri && uri->rfind("https://", 0) != 0 && uri->rfind("http://", 0) != 0)
      c.err(field_path(rp, "jwksUri"), "\"" + *uri + "\" is not an http(s) URL");
    if (auto jwks = c.string(r, rp, "jwks")) {
      json set = json::parse(*jwks, nullptr, false);
      if (set.is_discarded() || !set.is_object() || !set.contains("keys") || !set["keys"].is_array())
        c.err(field_path(rp, "jwks"), "is not a JSON Web Key Set (a JSON object with a \"keys\" array)");
      if (uri) c.err(rp, "only one of jwksUri and jwks may be set");
    }
    c.strings(r, rp, "audiences");
    c.strings(r, rp, "fromParams");
    c.strings(r, rp, "fromCookies");
    c.each(r, rp, "fromHeaders", [&](const json& h, const std::string& hp, size_t) {
      if (!h.is_object()) return c.err(hp, "must be an object, got " + show(h));
      c.string(h, hp, "name", true);
      c.string(h, hp, "prefix");
    });
    c.string(r, rp, "outputPayloadToHeader");
    c.boolean(r, rp, "forwardOriginalToken");
    c.each(r, rp, "outputClaimToHeaders", [&](const json& h, const std::string& hp, size_t) {
      if (!h.is_object()) return c.err(hp, "must be an object, got " + show(h));
      c.string(h, hp, "header", true);
      c.string(h, hp, "claim", true);
    });
    c.duration_field(r, rp, "timeout");
  });
}

namespace {

void percentage(Checker& c, const json& parent, const std::string& path) {
  const json* p = c.object(parent, path, "percentage");
  if (!p) return;
  std::string pp = field_path(path, "percentage");
  const json* v = Checker::get(*p, "value");
  if (v && !(v->is_number() && v->get<double>() >= 0 && v->get<double>() <= 100))
    c.err(field_path(pp, "value"), show(*v) + " is not a percentage (0..100)");
}

void destination(Checker& c, const json& parent, const std::string& path, bool required) {
  const json* d = c.object(parent, path, "destination", required);
  if (!d) return;
  std::string dp = field_path(path, "destination");
  c.string(*d, dp, "host", true);
  c.string(*d, dp, "subset");
  if (const json* port = c.object(*d, dp, "port")) c.port(*port, field_path(dp, "port"), "number");
}

// route: [{destination, weight}] of http, tcp and tls routes.
void routes(Checker& c, const json& parent, const std::string& path, bool required) {
  const json* r = Checker::get(parent, "route");
  if (required && (!r || (r->is_array() && r->empty()))) c.err(field_path(path, "route"), "is required");
  c.each(parent, path, "route", [&](const json& rd, const std::string& rp, size_t) {
    if (!rd.is_object()) return c.err(rp, "must be an object, got " + show(rd));
    destination(c, rd, rp, true);
    c.integer(rd, rp, "weight", 0, 100);
  });
}

void string_match(Checker& c, const json& parent, const std::string& path, std::string_view key) {
  const json* m = c.object(parent, path, key);
  if (!m) return;
  std::string mp = field_path(path, key);
  int n = 0;
  for (const char* f : {"exact", "prefix", "regex"})
    if (c.string(*m, mp, f)) n++;
  if (n > 1) c.err(mp, "only one of exact, prefix and regex may be set");
}

void http_route(Checker& c, const json& h, const std::string& hp) {
  if (!h.is_object()) return c.err(hp, "must be an object, got " + show(h));
  c.string(h, hp, "name");
  c.each(h, hp, "match", [&](const json& m, const std::string& mp, size_t) {
    if (!m.is_object()) return c.err(mp, "must be an object, got " + show(m));
    for (const char* f : {"uri", "scheme", "method", "authority"}) string_match(c, m, mp, f);
    for (const char* f : {"headers", "queryParams", "withoutHeaders"}) {
      if (const json* hs = c.object(m, mp, f))
        for (auto it = hs->begin(); it != hs->end(); ++it) string_match(c, *hs, field_path(mp, f), it.key());
    }
    c.port(m, mp, "port");
    c.string_map(m, mp, "sourceLabels");
    c.boolean(m, mp, "ignoreUriCase");
  });
  bool any = false;
  for (const char* f : {"route", "redirect", "directResponse", "delegate"}) any = any || Checker::get(h, f);
  if (!any) c.err(hp, "one of route, redirect, directResponse and delegate is required");
  if (Checker::get(h, "route") && Checker::get(h, "redirect")) c.err(hp, "route and redirect cannot both be set");
  routes(c, h, hp, false);
  if (const json* r = c.object(h, hp, "redirect")) {
    std::string rp = field_path(hp, "redirect");
    c.string(*r, rp, "uri");
    c.string(*r, rp, "authority");
    c.integer(*r, rp, "redirectCode", 300, 399);
  }
  if (const json* d = c.object(h, hp, "directResponse"))
    c.integer(*d, field_path(hp, "directResponse"), "status", 200, 599, true);
  if (const json* r = c.object(h, hp, "rewrite")) {
    c.string(*r, field_path(hp, "rewrite"), "uri");
    c.string(*r, field_path(hp, "rewrite"), "authority");
  }
  c.duration_field(h, hp, "timeout");
  if (const json* r = c.object(h, hp, "retries")) {
    std::string rp = field_path(hp, "retries");
    c.integer(*r, rp, "attempts", 0, INT32_MAX);
    c.duration_field(*r, rp, "perTryTimeout");
    c.string(*r, rp, "retryOn");
  }
  if (const json* f = c.object(h, hp, "fault")) {
    std::string fp = field_path(hp, "fault");
    if (const json* d = c.object(*f, fp, "delay")) {
      c.duration_field(*d, field_path(fp, "delay"), "fixedDelay");
      percentage(c, *d, field_path(fp, "delay"));
    }
    if (const json* a = c.object(*f, fp, "abort")) {
      c.integer(*a, field_path(fp, "abort"), "httpStatus", 200, 599);
      percentage(c, *a, field_path(fp, "abort"));
    }
  }
  if (Checker::get(h, "mirror")) {
    const json* m = c.object(h, hp, "mirror");
    if (m) c.string(*m, field_path(hp, "mirror"), "host", true);
  }
  if (const json* mp = c.object(h, hp, "mirrorPercentage")) {
    const json* v = Checker::get(*mp, "value");
    if (v && !(v->is_number() && v->get<double>() >= 0 && v->get<double>() <= 100))
      c.err(field_path(field_path(hp, "mirrorPercentage"), "value"), show(*v) + " is not a percentage (0..100)");
  }
}

void traffic_policy(Checker& c, const json& tp, const std::string& path) {
  if (!tp.is_object()) return c.err(path, "must be an object, got " + show(tp));
  if (const json* lb = c.object(tp, path, "loadBalancer")) {
    std::string lp = field_path(path, "loadBalancer");
    c.enumeration(*lb, lp, "simple",
                  {"UNSPECIFIED", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN"});
    if (const json* ch = c.object(*lb, lp, "consistentHash")) {
      std::string cp = field_path(lp, "consistentHash");
      c.string(*ch, cp, "httpHeaderName");
      c.string(*ch, cp, "httpQueryParameterName");
      c.boolean(*ch, cp, "useSourceIp");
      if (const json* ck = c.object(*ch, cp, "httpCookie")) {
        c.string(*ck, field_path(cp, "httpCookie"), "name", true);
        c.duration_field(*ck, field_path(cp, "httpCookie"), "ttl");
      }
    }
    if (Checker::get(*lb, "simple") && Checker::get(*lb, "consistentHash"))
      c.err(lp, "only one of simple and consistentHash may be set");
  }
  if (const json* cp = c.object(tp, path, "connectionPool")) {
    std::string pp = field_path(path, "connectionPool");
    if (const json* tcp = c.object(*cp, pp, "tcp")) {
      c.integer(*tcp, field_path(pp, "tcp"), "maxConnections", 0, INT32_MAX);
      c.duration_field(*tcp, field_path(pp, "tcp"), "connectTimeout");
    }
    if (const json* http = c.object(*cp, pp, "http")) {
      std::string hp = field_path(pp, "http");
      for (const char* f : {"http1MaxPendingRequests", "http2MaxRequests", "maxRequestsPerConnection", "maxRetries",
                            "maxConcurrentStreams"})
        c.integer(*http, hp, f, 0, INT32_MAX);
      c.duration_field(*http, hp, "idleTimeout");
    }
  }
  if (const json* od = c.object(tp, path, "outlierDetection")) {
    std::string op = field_path(path, "outlierDetection");
    for (const char* f : {"consecutive5xxErrors", "consecutiveGatewayErrors", "consecutiveLocalOriginFailures",
                          "consecutiveErrors"})
      c.integer(*od, op, f, 0, INT32_MAX);
    for (const char* f : {"interval", "baseEjectionTime"}) c.duration_field(*od, op, f);
    c.integer(*od, op, "maxEjectionPercent", 0, 100);
    c.integer(*od, op, "minHealthPercent", 0, 100);
  }
  if (const json* tls = c.object(tp, path, "tls"))
    c.enumeration(*tls, field_path(path, "tls"), "mode", {"DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"});
  c.each(tp, path, "portLevelSettings", [&](const json& s, const std::string& sp, size_t) {
    if (!s.is_object()) return c.err(sp, "must be an object, got " + show(s));
    if (const json* port = c.object(s, sp, "port")) c.port(*port, field_path(sp, "port"), "number");
    traffic_policy(c, s, sp);  // the same fields as trafficPolicy, for one port
  });
}

}  // namespace

void check_virtual_service(Checker& c, const json& obj) {
  const json* spec = c.object(obj, "", "spec", true);
  if (!spec) return;
  c.strings(*spec, "spec", "hosts");
  c.strings(*spec, "spec", "gateways");
  c.strings(*spec, "spec", "exportTo");
  c.each(*spec, "spec", "http", [&](const json& h, const std::string& hp, size_t) { http_route(c, h, hp); });
  for (const char* proto : {"tcp", "tls"}) {
    c.each(*spec, "spec", proto, [&](const json& t, const std::string& tp, size_t) {
      if (!t.is_object()) return c.err(tp, "must be an object, got " + show(t));
      c.each(t, tp, "match", [&](const json& m, const std::string& mp, size_t) {
        if (!m.is_object()) return c.err(mp, "must be an object, got " + show(m));
        c.port(m, mp, "port");
        c.strings(m, mp, "destinationSubnets");
        if (std::string_view(proto) == "tls") {
          if (!Checker::get(m, "sniHosts")) c.err(field_path(mp, "sniHosts"), "is required");
          c.strings(m, mp, "sniHosts");
        }
      });
      routes(c, t, tp, true);
    });
  }
}

void check_destination_rule(Checker& c, const json& obj) {
  const json* spec = c.object(obj, "", "spec", true);
  if (!spec) return;
  c.string(*spec, "spec", "host", true);
  c.strings(*spec, "spec", "exportTo");
  c.workload_selector(*spec, "spec", "workloadSelector");
  if (const json* tp = Checker::get(*spec, "trafficPolicy")) traffic_policy(c, *tp, "spec.trafficPolicy");
  std::map<std::string, size_t> seen;
  c.each(*spec, "spec", "subsets", [&](const json& s, const std::string& sp, size_t i) {
    if (!s.is_object()) return c.err(sp, "must be an object, got " + show(s));
    auto name = c.string(s, sp, "name", true);
    if (name && !name->empty() && !dns_label(*name))
      c.err(field_path(sp, "name"), "\"" + *name + "\" is not a valid subset name");
    else if (name && !name->empty() && !seen.emplace(*name, i).second)
      c.err(field_path(sp, "name"), "duplicate subset \"" + *name + "\" (also spec.subsets[" +
                                        std::to_string(seen[*name]) + "])");
    c.string_map(s, sp, "labels");
    if (const json* tp = Checker::get(s, "trafficPolicy")) traffic_policy(c, *tp, field_path(sp, "trafficPolicy"));
  });
}

}  // namespace warren::controller::detail
