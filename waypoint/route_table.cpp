// RouteTable: selection and the per-request helpers; RouteTable::build runs
// the compilers (route_virtual_service.cpp, route_http_route.cpp) per object,
// so one bad object rejects only itself.
#include "route_table.h"

#include <algorithm>
#include <iterator>
#include <map>

#include "route_compile.h"

namespace warren::waypoint {

using nlohmann::json;
using spec::SpecError;

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

// ---------------------------------------------------------------- table

RouteTable RouteTable::build(const std::vector<json>& vss, const std::vector<json>& hrs,
                             const RouteContext& ctx, std::vector<std::string>* errors) {
  RouteTable t;
  auto report = [&](const char* kind, const json& o, const SpecError& e) {
    if (errors) errors->push_back(std::string(kind) + " " + spec::object_id(o) + ": " + e.text());
  };
  for (const auto& o : vss) {
    try {
      if (auto e = route_compile::compile_virtual_service(o, ctx)) t.entries_.push_back(std::move(*e));
    } catch (const SpecError& e) {
      report("VirtualService", o, e);
    }
  }
  std::stable_sort(t.entries_.begin(), t.entries_.end(),
                   [](const Entry& a, const Entry& b) { return a.order < b.order; });
  // HTTPRoute rules, merged per parent Service in Gateway API precedence.
  std::vector<route_compile::GatewayRule> gw;
  for (const auto& o : hrs) {
    try {
      auto rules = route_compile::compile_http_route(o, ctx);
      std::move(rules.begin(), rules.end(), std::back_inserter(gw));
    } catch (const SpecError& e) {
      report("HTTPRoute", o, e);
    }
  }
  std::stable_sort(gw.begin(), gw.end(),
                   [](const route_compile::GatewayRule& a, const route_compile::GatewayRule& b) { return a.key < b.key; });
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
