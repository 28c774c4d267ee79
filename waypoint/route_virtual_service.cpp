// Istio VirtualService → RouteTable entries (Istio semantics: first matching
// http element wins; gateways other than "mesh" do not apply here).
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

// Istio HeaderOperations {set: {k: v}, add: {k: v}, remove: [k]}.
HeaderOps istio_header_ops(const json& j, const std::string& p) {
  object(j, p);
  HeaderOps ops;
  for (const char* k : {"set", "add"}) {
    auto* m = get(j, k);
    if (!m) continue;
    for (auto& [name, v] : object(*m, p_(p, k)).items()) {
      std::string q = p_(p, k) + "/" + spec::escape(name);
      check_header_name(name, q);
      (k[0] == 's' ? ops.set : ops.add).push_back({name, string(v, q)});
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

void istio_headers(const json* j, const std::string& p, HeaderOps& req, HeaderOps& resp) {
  if (!j) return;
  object(*j, p);
  if (auto* r = get(*j, "request")) req = istio_header_ops(*r, p_(p, "request"));
  if (auto* r = get(*j, "response")) resp = istio_header_ops(*r, p_(p, "response"));
}

RouteDestination istio_destination(const json& j, const std::string& p, const Meta& m,
                                   const RouteContext& ctx) {
  object(j, p);
  RouteDestination d;
  auto* host = get(j, "host");
  if (!host) fail(p_(p, "host"), "is required");
  d.host = spec::resolve_host(nonempty(*host, p_(p, "host")), m.ns, ctx);
  if (auto* s = get(j, "subset")) d.subset = string(*s, p_(p, "subset"));
  if (auto* pt = get(j, "port")) {
    object(*pt, p_(p, "port"));
    if (auto* n = get(*pt, "number")) d.port = port(*n, p_(p_(p, "port"), "number"));
  }
  return d;
}

int grpc_code(const std::string& s, const std::string& p) {
  static const char* kNames[] = {"OK",
                                 "CANCELLED",
                                 "UNKNOWN",
                                 "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED",
                                 "NOT_FOUND",
                                 "ALREADY_EXISTS",
                                 "PERMISSION_DENIED",
                                 "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION",
                                 "ABORTED",
                                 "OUT_OF_RANGE",
                                 "UNIMPLEMENTED",
                                 "INTERNAL",
                                 "UNAVAILABLE",
                                 "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  for (int i = 0; i < 17; i++)
    if (s == kNames[i] || s == std::to_string(i)) return i;
  fail(p, json(s).dump() + " is not a gRPC status code name");
}

FaultPolicy istio_fault(const json& j, const std::string& p) {
  object(j, p);
  FaultPolicy f;
  auto* delay = get(j, "delay");
  auto* abort = get(j, "abort");
  if (!delay && !abort) fail(p, "one of delay or abort is required");
  if (delay) {
    std::string q = p_(p, "delay");
    object(*delay, q);
    auto* fixed = get(*delay, "fixedDelay");
    if (!fixed)
      fail(p_(q, "fixedDelay"),
           get(*delay, "exponentialDelay") ? "exponentialDelay is not supported" : "is required");
    f.delay = duration(*fixed, p_(q, "fixedDelay"));
    if (auto* pc = get(*delay, "percentage"))
      f.delay_percent = percentage(*pc, p_(q, "percentage"));
    else if (auto* pi = get(*delay, "percent"))
      f.delay_percent =
          static_cast<double>(integer(*pi, p_(q, "percent"), 0, 100, "an integer 0-100"));
  }
  if (abort) {
    std::string q = p_(p, "abort");
    object(*abort, q);
    if (auto* h = get(*abort, "httpStatus"))
      f.abort_http_status =
          static_cast<int>(integer(*h, p_(q, "httpStatus"), 200, 599, "an HTTP status 200-599"));
    else if (auto* g = get(*abort, "grpcStatus"))
      f.abort_grpc_status = grpc_code(string(*g, p_(q, "grpcStatus")), p_(q, "grpcStatus"));
    else
      fail(q, "one of httpStatus or grpcStatus is required");
    if (auto* pc = get(*abort, "percentage"))
      f.abort_percent = percentage(*pc, p_(q, "percentage"));
  }
  return f;
}

RetryPolicy istio_retries(const json& j, const std::string& p) {
  object(j, p);
  RetryPolicy r;
  auto* a = get(j, "attempts");
  // Istio: attempts absent or 0 disables retries.
  r.attempts = a ? static_cast<uint32_t>(
                       integer(*a, p_(p, "attempts"), 0, INT32_MAX, "a non-negative integer"))
                 : 0;
  if (auto* t = get(j, "perTryTimeout")) r.per_try_timeout = duration(*t, p_(p, "perTryTimeout"));
  if (auto* on = get(j, "retryOn")) {
    auto s = string(*on, p_(p, "retryOn"));
    if (!s.empty()) {
      auto res = parse_retry_on(s, r);
      if (!res) fail(p_(p, "retryOn"), res.error().message);
    }
  }
  return r;
}

std::string base64_decode(const std::string& in, const std::string& p) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    const char* kAlpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char* f = c ? std::strchr(kAlpha, c) : nullptr;
    if (!f) fail(p, "is not valid base64");
    acc = (acc << 6) | static_cast<uint32_t>(f - kAlpha);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

bool for_mesh(const std::vector<std::string>& gateways) {
  return gateways.empty() || std::find(gateways.begin(), gateways.end(), "mesh") != gateways.end();
}

// One `http` element; nullopt when every match block names only non-mesh gateways.
std::optional<HttpRoute> istio_http(const json& j, const std::string& p, const Meta& m,
                                    const RouteContext& ctx) {
  object(j, p);
  HttpRoute r;
  if (auto* n = get(j, "name")) r.name = string(*n, p_(p, "name"));
  if (get(j, "delegate")) fail(p_(p, "delegate"), "delegate is not supported by the waypoint");
  auto match = compile_route_match(get(j, "match") ? j["match"] : json(), p_(p, "match"));
  if (!match) fail("", match.error().message);
  bool had_blocks = !match->blocks.empty();
  for (auto& b : match->blocks)
    if (for_mesh(b.gateways)) r.match.blocks.push_back(std::move(b));
  if (had_blocks && r.match.blocks.empty()) return std::nullopt;
  for (const auto& b : r.match.blocks)
    r.block_prefixes.push_back(b.uri && b.uri->kind == StringMatch::Kind::kPrefix ? b.uri->value
                                                                                  : "");
  if (auto* rt = get(j, "route")) {
    std::string q = p_(p, "route");
    for (size_t i = 0; i < list(*rt, q).size(); i++) {
      std::string qi = p_(q, i);
      auto* dst = get(object((*rt)[i], qi), "destination");
      if (!dst) fail(p_(qi, "destination"), "is required");
      auto d = istio_destination(*dst, p_(qi, "destination"), m, ctx);
      auto* w = get((*rt)[i], "weight");
      d.weight = w ? static_cast<uint32_t>(
                         integer(*w, p_(qi, "weight"), 0, INT32_MAX, "a non-negative integer"))
                   : 0;
      istio_headers(get((*rt)[i], "headers"), p_(qi, "headers"), d.request, d.response);
      r.destinations.push_back(std::move(d));
    }
    if (r.destinations.size() == 1) r.destinations[0].weight = 100;  // weight ignored
  }
  if (auto* rd = get(j, "redirect")) {
    std::string q = p_(p, "redirect");
    object(*rd, q);
    Redirect x;
    if (auto* v = get(*rd, "uri")) x.uri = string(*v, p_(q, "uri"));
    if (auto* v = get(*rd, "authority")) x.authority = string(*v, p_(q, "authority"));
    if (auto* v = get(*rd, "scheme")) x.scheme = string(*v, p_(q, "scheme"));
    if (auto* v = get(*rd, "port")) x.port = port(*v, p_(q, "port"));
    if (auto* v = get(*rd, "derivePort")) {
      auto s = string(*v, p_(q, "derivePort"));
      if (s != "FROM_PROTOCOL_DEFAULT" && s != "FROM_REQUEST_PORT")
        fail(p_(q, "derivePort"), "must be FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT");
      x.port_from_request = s == "FROM_REQUEST_PORT";
    }
    if (auto* v = get(*rd, "redirectCode")) {
      x.code = static_cast<int>(integer(*v, p_(q, "redirectCode"), 300, 399, "a redirect status"));
      if (x.code != 301 && x.code != 302 && x.code != 303 && x.code != 307 && x.code != 308)
        fail(p_(q, "redirectCode"), "must be one of 301, 302, 303, 307, 308");
    }
    r.redirect = std::move(x);
  }
  if (auto* dr = get(j, "directResponse")) {
    std::string q = p_(p, "directResponse");
    object(*dr, q);
    DirectResponse x;
    auto* st = get(*dr, "status");
    if (!st) fail(p_(q, "status"), "is required");
    x.status = static_cast<int>(integer(*st, p_(q, "status"), 200, 599, "an HTTP status 200-599"));
    if (auto* body = get(*dr, "body")) {
      object(*body, p_(q, "body"));
      if (auto* s = get(*body, "string"))
        x.body = string(*s, p_(p_(q, "body"), "string"));
      else if (auto* b = get(*body, "bytes"))
        x.body = base64_decode(string(*b, p_(p_(q, "body"), "bytes")), p_(p_(q, "body"), "bytes"));
    }
    r.direct_response = std::move(x);
  }
  int actions = !r.destinations.empty() + r.redirect.has_value() + r.direct_response.has_value();
  if (actions != 1)
    fail(p, actions ? "only one of route, redirect, directResponse may be set"
                    : "one of route, redirect, directResponse is required");
  if (auto* rw = get(j, "rewrite")) {
    std::string q = p_(p, "rewrite");
    object(*rw, q);
    if (r.redirect) fail(q, "rewrite cannot be used with redirect");
    if (auto* v = get(*rw, "uri")) r.rewrite_uri = string(*v, p_(q, "uri"));
    if (auto* v = get(*rw, "authority")) r.rewrite_authority = string(*v, p_(q, "authority"));
    if (auto* v = get(*rw, "uriRegexRewrite")) {
      std::string qr = p_(q, "uriRegexRewrite");
      if (r.rewrite_uri) fail(qr, "only one of uri and uriRegexRewrite may be set");
      object(*v, qr);
      auto* mt = get(*v, "match");
      if (!mt) fail(p_(qr, "match"), "is required");
      r.rewrite_regex = regex(string(*mt, p_(qr, "match")), p_(qr, "match"));
      auto* sub = get(*v, "rewrite");
      r.rewrite_regex_sub = sub ? string(*sub, p_(qr, "rewrite")) : "";
      std::string why;
      if (!r.rewrite_regex->CheckRewriteString(r.rewrite_regex_sub, &why))
        fail(p_(qr, "rewrite"), why);
    }
  }
  if (auto* t = get(j, "timeout")) r.timeout = duration(*t, p_(p, "timeout"));
  if (auto* rt = get(j, "retries")) r.retries = istio_retries(*rt, p_(p, "retries"));
  if (auto* f = get(j, "fault")) r.fault = istio_fault(*f, p_(p, "fault"));
  istio_headers(get(j, "headers"), p_(p, "headers"), r.request_headers, r.response_headers);
  auto* mirror = get(j, "mirror");
  auto* mirrors = get(j, "mirrors");
  if (mirror && mirrors) fail(p_(p, "mirrors"), "mirror and mirrors cannot both be set");
  if (mirror) {
    Mirror mi{istio_destination(*mirror, p_(p, "mirror"), m, ctx), 100};
    if (auto* mp = get(j, "mirrorPercentage"))
      mi.percent = percentage(*mp, p_(p, "mirrorPercentage"));
    else if (auto* mpi = get(j, "mirrorPercent"))
      mi.percent =
          static_cast<double>(integer(*mpi, p_(p, "mirrorPercent"), 0, 100, "an integer 0-100"));
    r.mirrors.push_back(std::move(mi));
  }
  if (mirrors) {
    for (size_t i = 0; i < list(*mirrors, p_(p, "mirrors")).size(); i++) {
      std::string q = p_(p_(p, "mirrors"), i);
      auto* d = get(object((*mirrors)[i], q), "destination");
      if (!d) fail(p_(q, "destination"), "is required");
      Mirror mi{istio_destination(*d, p_(q, "destination"), m, ctx), 100};
      if (auto* pc = get((*mirrors)[i], "percentage"))
        mi.percent = percentage(*pc, p_(q, "percentage"));
      r.mirrors.push_back(std::move(mi));
    }
  }
  return r;
}

}  // namespace

// A VirtualService; nullopt when it does not apply to the mesh's HTTP traffic.
std::optional<RouteTable::Entry> compile_virtual_service(const json& o, const RouteContext& ctx) {
  Meta m = meta(o);
  auto* sp = get(o, "spec");
  if (!sp) fail("/spec", "is required");
  object(*sp, "/spec");
  if (auto* g = get(*sp, "gateways")) {
    std::vector<std::string> gws;
    for (size_t i = 0; i < list(*g, "/spec/gateways").size(); i++)
      gws.push_back(string((*g)[i], p_("/spec/gateways", i)));
    if (!for_mesh(gws)) return std::nullopt;
  }
  RouteTable::Entry e;
  e.order = m.order;
  auto* hosts = get(*sp, "hosts");
  if (!hosts || list(*hosts, "/spec/hosts").empty())
    fail("/spec/hosts", "at least one host is required");
  for (size_t i = 0; i < hosts->size(); i++) {
    auto h = nonempty((*hosts)[i], p_("/spec/hosts", i));
    if (h.find('*') != std::string::npos && h != "*" &&
        (h.rfind("*.", 0) != 0 || h.find('*', 1) != std::string::npos))
      fail(p_("/spec/hosts", i), "a wildcard must be \"*\" or a leading \"*.\"");
    e.hosts.push_back(spec::resolve_host(h, m.ns, ctx));
  }
  std::string source = "VirtualService " + m.ns + "/" + m.name;
  if (auto* http = get(*sp, "http")) {
    for (size_t i = 0; i < list(*http, "/spec/http").size(); i++)
      if (auto r = istio_http((*http)[i], p_("/spec/http", i), m, ctx))
        e.rules.push_back({std::move(*r), std::nullopt, source});
  }
  if (e.rules.empty()) return std::nullopt;
  return e;
}

}  // namespace warren::waypoint::route_compile
