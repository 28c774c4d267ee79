// RouteTable: VirtualService and HTTPRoute compilation, selection and the
// per-request helpers. The compilers throw SpecError (file-local) and build()
// catches it per object, so one bad object rejects only itself.
#include "route_table.h"

#include <re2/re2.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <tuple>

namespace warren::waypoint {

using nlohmann::json;

// ---------------------------------------------------------------- helpers

void HeaderOps::apply(Headers& h) const {
  auto erase = [&h](std::string_view name) {
    std::erase_if(h, [&](const Header& x) { return iequals(x.name, name); });
  };
  for (const auto& n : remove) erase(n);
  for (const auto& s : set) {
    erase(s.name);
    h.push_back(s);
  }
  for (const auto& a : add) h.push_back(a);
}

const RetryPolicy& default_retry_policy() {
  static const RetryPolicy kDefault;
  return kDefault;
}

const RetryPolicy& HttpRoute::retry_policy() const {
  return retries ? *retries : default_retry_policy();
}

Result<void> parse_retry_on(std::string_view list, RetryPolicy& p) {
  static const std::pair<std::string_view, uint32_t> kNames[] = {
      {"5xx", kRetryOn5xx},
      {"gateway-error", kRetryOnGatewayError},
      {"reset", kRetryOnReset},
      {"connect-failure", kRetryOnConnectFailure},
      {"retriable-4xx", kRetryOnRetriable4xx},
      {"refused-stream", kRetryOnRefusedStream},
      {"retriable-status-codes", kRetryOnRetriableStatusCodes},
      {"cancelled", kRetryOnGrpcCancelled},
      {"deadline-exceeded", kRetryOnGrpcDeadlineExceeded},
      {"internal", kRetryOnGrpcInternal},
      {"resource-exhausted", kRetryOnGrpcResourceExhausted},
      {"unavailable", kRetryOnGrpcUnavailable},
      {"reset-before-request", kRetryOnResetBeforeRequest},
      // Accepted by Istio, no effect in the waypoint.
      {"envoy-ratelimited", 0},
      {"retriable-headers", 0},
      {"http3-post-connect-failure", 0},
  };
  p.on = 0;
  p.retriable_status_codes.clear();
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = std::min(list.find(',', start), list.size());
    std::string_view t = list.substr(start, comma - start);
    while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
    while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
    start = comma + 1;
    if (t.empty()) continue;
    if (std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      int code = t.size() <= 3 ? std::stoi(std::string(t)) : 0;
      if (code < 100 || code > 599)
        return make_error(Errc::kInvalidArgument, json(t).dump() + " is not an HTTP status code");
      p.retriable_status_codes.push_back(code);
      p.on |= kRetryOnRetriableStatusCodes;
      continue;
    }
    auto it = std::find_if(std::begin(kNames), std::end(kNames),
                           [&](const auto& n) { return n.first == t; });
    if (it == std::end(kNames))
      return make_error(Errc::kInvalidArgument, json(t).dump() + " is not a valid retryOn value");
    p.on |= it->second;
  }
  return {};
}

bool percent_hit(double percent, uint32_t rnd) {
  if (percent <= 0) return false;
  if (percent >= 100) return true;
  return static_cast<double>(rnd) < percent / 100.0 * 4294967296.0;
}

FaultDecision decide_fault(const FaultPolicy& f, uint32_t rnd_delay, uint32_t rnd_abort) {
  FaultDecision d;
  if (f.delay && percent_hit(f.delay_percent, rnd_delay)) d.delay = f.delay;
  if ((f.abort_http_status || f.abort_grpc_status) && percent_hit(f.abort_percent, rnd_abort)) {
    d.http_status = f.abort_http_status;
    d.grpc_status = f.abort_grpc_status;
  }
  return d;
}

size_t pick_weighted(const std::vector<RouteDestination>& d, uint32_t rnd) {
  if (d.size() <= 1) return 0;
  uint64_t total = 0;
  for (const auto& x : d) total += x.weight;
  if (total == 0) return 0;
  // total may exceed 2^32 (several int32 weights): scale in 128 bits.
  auto t = static_cast<uint64_t>((static_cast<unsigned __int128>(rnd) * total) >> 32);
  for (size_t i = 0; i < d.size(); i++) {
    if (t < d[i].weight) return i;
    t -= d[i].weight;
  }
  return d.size() - 1;
}

namespace {

// Gateway API ReplacePrefixMatch: whole path elements, no doubled slash.
std::string replace_prefix_elements(std::string_view path, std::string_view prefix,
                                    std::string_view repl) {
  while (!prefix.empty() && prefix.back() == '/') prefix.remove_suffix(1);
  while (!repl.empty() && repl.back() == '/') repl.remove_suffix(1);
  std::string out(repl);
  out += path.substr(std::min(prefix.size(), path.size()));
  if (out.empty() || out[0] != '/') out.insert(out.begin(), '/');
  return out;
}

std::string new_path(const HttpRoute& r, int block, std::string_view path, const std::string& repl,
                     bool full, bool gateway) {
  std::string_view prefix;
  if (block >= 0 && static_cast<size_t>(block) < r.block_prefixes.size())
    prefix = r.block_prefixes[block];
  if (full || prefix.empty()) return repl;
  if (gateway) return replace_prefix_elements(path, prefix, repl);
  return repl + std::string(path.substr(std::min(prefix.size(), path.size())));
}

}  // namespace

std::string rewrite_path(const HttpRoute& r, int matched_block, std::string_view pq) {
  size_t q = pq.find('?');
  std::string_view path = pq.substr(0, q);
  std::string out;
  if (r.rewrite_regex) {
    out = std::string(path);
    re2::RE2::GlobalReplace(&out, *r.rewrite_regex, r.rewrite_regex_sub);
  } else if (r.rewrite_uri) {
    out = new_path(r, matched_block, path, *r.rewrite_uri, r.rewrite_full_path, r.gateway_api);
  } else {
    return std::string(pq);
  }
  if (q != std::string_view::npos) out += pq.substr(q);
  return out;
}

std::string redirect_location(const HttpRoute& r, int matched_block, const RequestView& req) {
  if (!r.redirect) return {};
  const Redirect& rd = *r.redirect;
  std::string scheme = rd.scheme.empty() ? std::string(req.scheme) : rd.scheme;
  std::string authority = rd.authority.empty() ? std::string(req.authority) : rd.authority;
  if (rd.port || (rd.port_from_request && req.port)) {
    // Strip a port already present (not inside an IPv6 literal), then set ours.
    size_t colon = authority.rfind(':');
    size_t bracket = authority.rfind(']');
    if (colon != std::string::npos && (bracket == std::string::npos || colon > bracket))
      authority.resize(colon);
    authority += ":" + std::to_string(rd.port ? *rd.port : *req.port);
  }
  std::string path(req.path);
  if (!rd.uri.empty())
    path = new_path(r, matched_block, req.path, rd.uri, !rd.uri_is_prefix, r.gateway_api);
  if (path.find('?') == std::string::npos && !req.query.empty())
    path += "?" + std::string(req.query);
  return scheme + "://" + authority + path;
}

// ---------------------------------------------------------------- spec helpers

namespace spec {

Result<std::chrono::milliseconds> parse_duration(std::string_view s) {
  auto bad = [&](const std::string& why) {
    return make_error(Errc::kInvalidArgument, json(s).dump() + " " + why);
  };
  if (s == "0") return std::chrono::milliseconds(0);
  if (s.empty()) return bad("is not a duration");
  if (s[0] == '-') return bad("must not be negative");
  static const std::pair<std::string_view, double> kUnits[] = {
      {"ns", 1},  {"us", 1e3}, {"\xC2\xB5s", 1e3}, {"ms", 1e6},
      {"s", 1e9}, {"m", 60e9}, {"h", 3600e9}};
  double ns = 0;
  size_t i = 0;
  while (i < s.size()) {
    size_t start = i;
    bool digits = false;
    while (i < s.size() && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.')) {
      digits |= s[i] != '.';
      i++;
    }
    std::string num(s.substr(start, i - start));
    if (!digits || std::count(num.begin(), num.end(), '.') > 1)
      return bad("is not a duration (expected e.g. 1.5s, 250ms, 2m)");
    double v = std::strtod(num.c_str(), nullptr);  // no throw; huge values are caught below
    double unit = 0;
    for (const auto& [name, mult] : kUnits) {
      if (s.substr(i, name.size()) == name) {
        unit = mult;
        i += name.size();
        break;
      }
    }
    if (unit == 0) return bad("is not a duration: missing or unknown unit (ns, us, ms, s, m, h)");
    ns += v * unit;
  }
  if (ns > 9e15 * 1e3) return bad("is too large");
  return std::chrono::milliseconds(static_cast<int64_t>(ns / 1e6));
}

std::string resolve_host(std::string_view host, std::string_view ns, const RouteContext& ctx) {
  std::string h = to_lower(host);
  while (!h.empty() && h.back() == '.') h.pop_back();
  if (h.empty() || h[0] == '*') return h;
  size_t dots = std::count(h.begin(), h.end(), '.');
  if (dots == 0) return h + "." + std::string(ns) + ".svc." + ctx.cluster_domain;
  if (dots == 1) return h + ".svc." + ctx.cluster_domain;
  if (dots == 2 && h.size() > 4 && h.compare(h.size() - 4, 4, ".svc") == 0)
    return h + "." + ctx.cluster_domain;
  return h;
}

bool host_matches(std::string_view pattern, std::string_view host) {
  if (pattern == "*") return true;
  if (pattern.size() > 1 && pattern[0] == '*' && pattern[1] == '.') {
    auto suffix = pattern.substr(1);
    return host.size() > suffix.size() && iequals(host.substr(host.size() - suffix.size()), suffix);
  }
  return iequals(pattern, host);
}

size_t host_specificity(std::string_view pattern) {
  if (pattern.empty() || pattern[0] != '*') return SIZE_MAX;
  return pattern.size();
}

std::string escape(std::string_view k) {
  std::string out;
  for (char c : k) {
    if (c == '~')
      out += "~0";
    else if (c == '/')
      out += "~1";
    else
      out += c;
  }
  return out;
}

}  // namespace spec

// ---------------------------------------------------------------- table

namespace {

// A spec error: the JSON pointer (empty when `why` already starts with one).
struct SpecError {
  std::string ptr, why;
  std::string text() const { return ptr.empty() ? why : ptr + ": " + why; }
};
[[noreturn]] void fail(const std::string& ptr, std::string why) {
  throw SpecError{ptr, std::move(why)};
}

const json* get(const json& o, const char* k) {
  if (!o.is_object()) return nullptr;
  auto it = o.find(k);
  return it == o.end() || it->is_null() ? nullptr : &*it;
}
std::string p_(const std::string& p, const char* k) {
  return p + "/" + k;
}
std::string p_(const std::string& p, size_t i) {
  return p + "/" + std::to_string(i);
}

const json& object(const json& v, const std::string& p) {
  if (!v.is_object()) fail(p, "must be an object");
  return v;
}
const json& list(const json& v, const std::string& p) {
  if (!v.is_array()) fail(p, "must be a list");
  return v;
}
std::string string(const json& v, const std::string& p) {
  if (!v.is_string()) fail(p, "must be a string");
  return v.get<std::string>();
}
std::string nonempty(const json& v, const std::string& p) {
  auto s = string(v, p);
  if (s.empty()) fail(p, "must not be empty");
  return s;
}
int64_t integer(const json& v, const std::string& p, int64_t lo, int64_t hi, const char* what) {
  if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi ||
      (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi)))
    fail(p, std::string("must be ") + what);
  return v.get<int64_t>();
}
uint16_t port(const json& v, const std::string& p) {
  return static_cast<uint16_t>(integer(v, p, 1, 65535, "a port number 1-65535"));
}
std::chrono::milliseconds duration(const json& v, const std::string& p) {
  auto d = spec::parse_duration(string(v, p));
  if (!d) fail(p, d.error().message);
  return *d;
}
double percent_value(const json& v, const std::string& p) {
  if (!v.is_number() || v.get<double>() < 0 || v.get<double>() > 100)
    fail(p, "must be a number 0-100");
  return v.get<double>();
}
// Istio Percent: {value: 0..100}.
double percentage(const json& v, const std::string& p) {
  object(v, p);
  auto* x = get(v, "value");
  return x ? percent_value(*x, p_(p, "value")) : 0.0;
}

std::string object_id(const json& o) {
  const json* md = get(o, "metadata");
  auto s = [&](const char* k) {
    const json* v = md ? get(*md, k) : nullptr;
    return v && v->is_string() ? v->get<std::string>() : std::string();
  };
  return (s("namespace").empty() ? "default" : s("namespace")) + "/" + s("name");
}

struct Meta {
  std::string ns, name, order;
};
Meta meta(const json& o) {
  const json* mdp = get(o, "metadata");  // get() is null-safe for non-objects
  if (!mdp) fail("/metadata", "is required");
  const json& md = object(*mdp, "/metadata");
  Meta m;
  auto* name = get(md, "name");
  if (!name) fail("/metadata/name", "is required");
  m.name = nonempty(*name, "/metadata/name");
  auto* ns = get(md, "namespace");
  m.ns = ns ? nonempty(*ns, "/metadata/namespace") : "default";
  auto* ts = get(md, "creationTimestamp");
  m.order = (ts ? string(*ts, "/metadata/creationTimestamp") : "") + " " + m.ns + "/" + m.name;
  return m;
}

void check_header_name(const std::string& n, const std::string& p) {
  if (n.empty()) fail(p, "empty header name");
  if (n[0] == ':' || iequals(n, "host")) fail(p, "cannot modify the " + n + " header");
  for (unsigned char c : n)
    if (!is_tchar(c)) fail(p, "not a valid header name");
}

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

std::shared_ptr<const re2::RE2> regex(const std::string& pattern, const std::string& p) {
  re2::RE2::Options o;
  o.set_log_errors(false);
  auto re = std::make_shared<const re2::RE2>(pattern, o);
  if (!re->ok()) fail(p, json(pattern).dump() + " is not a valid RE2 expression: " + re->error());
  return re;
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

// ------------------------------------------------ Gateway API HTTPRoute (GAMMA)

// Gateway API precedence: exact path, then regex, then the longest prefix;
// method; most headers; most query params; oldest route, ns/name; rule order.
using GatewayKey = std::tuple<int, int64_t, int, int64_t, int64_t, std::string, size_t, size_t>;
struct GatewayRule {
  std::string host;
  RouteTable::Rule rule;
  GatewayKey key;
};

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

}  // namespace

RouteTable RouteTable::build(const std::vector<json>& vss, const std::vector<json>& hrs,
                             const RouteContext& ctx, std::vector<std::string>* errors) {
  RouteTable t;
  auto report = [&](const char* kind, const json& o, const SpecError& e) {
    if (errors) errors->push_back(std::string(kind) + " " + object_id(o) + ": " + e.text());
  };
  for (const auto& o : vss) {
    try {
      if (auto e = compile_virtual_service(o, ctx)) t.entries_.push_back(std::move(*e));
    } catch (const SpecError& e) {
      report("VirtualService", o, e);
    }
  }
  std::stable_sort(t.entries_.begin(), t.entries_.end(),
                   [](const Entry& a, const Entry& b) { return a.order < b.order; });
  // HTTPRoute rules, merged per parent Service in Gateway API precedence.
  std::vector<GatewayRule> gw;
  for (const auto& o : hrs) {
    try {
      auto rules = compile_http_route(o, ctx);
      std::move(rules.begin(), rules.end(), std::back_inserter(gw));
    } catch (const SpecError& e) {
      report("HTTPRoute", o, e);
    }
  }
  std::stable_sort(gw.begin(), gw.end(),
                   [](const GatewayRule& a, const GatewayRule& b) { return a.key < b.key; });
  std::map<std::string, size_t> by_host;
  for (auto& g : gw) {
    auto [it, fresh] = by_host.emplace(g.host, t.entries_.size());
    if (fresh) {
      Entry e;
      e.hosts = {g.host};
      e.virtual_service = false;
      t.entries_.push_back(std::move(e));
    }
    t.entries_[it->second].rules.push_back(std::move(g.rule));
  }
  return t;
}

const RouteTable::Entry* RouteTable::find(std::string_view host) const {
  const Entry* best = nullptr;
  size_t best_spec = 0;
  for (const auto& e : entries_) {
    if (!e.virtual_service) {
      if (best) return best;  // VirtualServices (sorted first) win over HTTPRoutes
      if (iequals(e.hosts[0], host)) return &e;
      continue;
    }
    for (const auto& p : e.hosts) {
      if (!spec::host_matches(p, host)) continue;
      size_t s = spec::host_specificity(p);
      if (!best || s > best_spec) {
        best = &e;
        best_spec = s;
      }
      break;
    }
  }
  return best;
}

RouteSelection RouteTable::select(std::string_view host, const RequestView& r) const {
  RouteSelection s;
  const Entry* e = find(host);
  if (!e) return s;
  bool applicable = false;
  for (const auto& rule : e->rules) {
    if (rule.port && (!r.port || *r.port != *rule.port)) continue;
    if (!applicable) s.source = rule.source;
    applicable = true;
    const auto& blocks = rule.route.match.blocks;
    int hit = blocks.empty() ? -1 : -2;
    for (size_t i = 0; hit == -2 && i < blocks.size(); i++)
      if (matches(blocks[i], r)) hit = static_cast<int>(i);
    if (hit == -2) continue;
    s.route = &rule.route;
    s.matched_block = hit;
    s.source = rule.source;
    return s;
  }
  s.not_found = applicable;
  return s;
}

bool RouteTable::has_routes_for(std::string_view host) const {
  return find(host) != nullptr;
}

}  // namespace warren::waypoint
