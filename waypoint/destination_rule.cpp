#include "destination_rule.h"

#include "spec_json.h"

#include <algorithm>
#include <set>

namespace warren::waypoint {

using nlohmann::json;
using namespace spec;

namespace {

// One policy level as written: absent sections stay absent for the merge.
struct Sections {
  std::optional<LbPolicy> lb;
  std::optional<ConnectionPoolLimits> pool;
  std::optional<OutlierPolicy> outlier;
  std::optional<RetryBudgetPolicy> retry_budget;  // trafficPolicy level only
};
struct RawPolicy {
  Sections top;
  std::map<uint16_t, Sections> ports;
};

LbPolicy load_balancer(const json& j, const std::string& p) {
  object(j, p);
  LbPolicy lb;
  auto* simple = get(j, "simple");
  auto* ch = get(j, "consistentHash");
  if (simple && ch) fail(p, "only one of simple and consistentHash may be set");
  if (simple) {
    auto s = string(*simple, p_(p, "simple"));
    if (s == "UNSPECIFIED" || s == "LEAST_REQUEST" || s == "LEAST_CONN")
      lb.kind = LbKind::kLeastRequest;
    else if (s == "ROUND_ROBIN")
      lb.kind = LbKind::kRoundRobin;
    else if (s == "RANDOM")
      lb.kind = LbKind::kRandom;
    else if (s == "PASSTHROUGH")
      lb.kind = LbKind::kPassthrough;
    else
      fail(p_(p, "simple"),
           "must be one of UNSPECIFIED, ROUND_ROBIN, LEAST_REQUEST, RANDOM, PASSTHROUGH");
  }
  if (!ch) return lb;
  std::string q = p_(p, "consistentHash");
  object(*ch, q);
  lb.kind = LbKind::kConsistentHash;
  auto& h = lb.hash;
  int keys = 0;
  if (auto* v = get(*ch, "httpHeaderName")) {
    h.source = ConsistentHashPolicy::Source::kHeader;
    h.name = to_lower(string(*v, p_(q, "httpHeaderName")));
    if (h.name.empty()) fail(p_(q, "httpHeaderName"), "must not be empty");
    keys++;
  }
  if (auto* v = get(*ch, "httpCookie")) {
    std::string qc = p_(q, "httpCookie");
    object(*v, qc);
    h.source = ConsistentHashPolicy::Source::kCookie;
    auto* n = get(*v, "name");
    if (!n || string(*n, p_(qc, "name")).empty()) fail(p_(qc, "name"), "is required");
    h.name = n->get<std::string>();
    if (auto* path = get(*v, "path")) h.cookie_path = string(*path, p_(qc, "path"));
    if (auto* ttl = get(*v, "ttl")) h.cookie_ttl = duration(*ttl, p_(qc, "ttl"), false);
    keys++;
  }
  if (auto* v = get(*ch, "useSourceIp")) {
    if (!v->is_boolean()) fail(p_(q, "useSourceIp"), "must be a boolean");
    if (v->get<bool>()) {
      h.source = ConsistentHashPolicy::Source::kSourceIp;
      keys++;
    }
  }
  if (auto* v = get(*ch, "httpQueryParameterName")) {
    h.source = ConsistentHashPolicy::Source::kQueryParam;
    h.name = string(*v, p_(q, "httpQueryParameterName"));
    if (h.name.empty()) fail(p_(q, "httpQueryParameterName"), "must not be empty");
    keys++;
  }
  if (keys != 1)
    fail(q,
         "exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName is "
         "required");
  auto ring = [&](const json& v, const std::string& qq) {
    h.minimum_ring_size =
        static_cast<uint64_t>(integer(v, qq, 1, 8'388'608, "an integer 1-8388608"));
  };
  if (auto* v = get(*ch, "minimumRingSize")) ring(*v, p_(q, "minimumRingSize"));
  if (auto* rh = get(*ch, "ringHash")) {
    if (auto* v = get(object(*rh, p_(q, "ringHash")), "minimumRingSize"))
      ring(*v, p_(p_(q, "ringHash"), "minimumRingSize"));
  }
  if (auto* mg = get(*ch, "maglev")) {
    object(*mg, p_(q, "maglev"));
    if (get(*ch, "ringHash")) fail(p_(q, "maglev"), "only one of ringHash and maglev may be set");
    h.maglev = true;
  }
  return lb;
}

// An int32 limit where 0 (or absent) keeps the default.
void limit(const json& parent, const char* k, const std::string& p, uint32_t& dst) {
  if (auto* v = get(parent, k)) {
    auto n = integer(*v, p_(p, k), 0, INT32_MAX, "a non-negative integer");
    if (n > 0) dst = static_cast<uint32_t>(n);
  }
}

ConnectionPoolLimits connection_pool(const json& j, const std::string& p) {
  object(j, p);
  ConnectionPoolLimits c;
  if (auto* tcp = get(j, "tcp")) {
    std::string q = p_(p, "tcp");
    object(*tcp, q);
    limit(*tcp, "maxConnections", q, c.max_connections);
    if (auto* v = get(*tcp, "connectTimeout"))
      c.connect_timeout = duration(*v, p_(q, "connectTimeout"), true);
  }
  if (auto* http = get(j, "http")) {
    std::string q = p_(p, "http");
    object(*http, q);
    limit(*http, "http1MaxPendingRequests", q, c.max_pending_requests);
    limit(*http, "http2MaxRequests", q, c.max_requests);
    limit(*http, "maxRequestsPerConnection", q, c.max_requests_per_connection);
    limit(*http, "maxRetries", q, c.max_retries);
    if (auto* v = get(*http, "idleTimeout"))
      c.idle_timeout = duration(*v, p_(q, "idleTimeout"), true);
    if (auto* v = get(*http, "h2UpgradePolicy")) {
      auto s = string(*v, p_(q, "h2UpgradePolicy"));
      if (s == "DEFAULT")
        c.h2_upgrade = H2Upgrade::kDefault;
      else if (s == "DO_NOT_UPGRADE")
        c.h2_upgrade = H2Upgrade::kDoNotUpgrade;
      else if (s == "UPGRADE")
        c.h2_upgrade = H2Upgrade::kUpgrade;
      else
        fail(p_(q, "h2UpgradePolicy"), "must be one of DEFAULT, DO_NOT_UPGRADE, UPGRADE");
    }
    if (auto* v = get(*http, "useClientProtocol")) {
      if (!v->is_boolean()) fail(p_(q, "useClientProtocol"), "must be a boolean");
      c.use_client_protocol = v->get<bool>();
    }
  }
  return c;
}

OutlierPolicy outlier_detection(const json& j, const std::string& p) {
  object(j, p);
  OutlierPolicy o;
  o.enabled = true;
  auto count = [&](const char* k, uint32_t& dst) {
    if (auto* v = get(j, k))
      dst = static_cast<uint32_t>(integer(*v, p_(p, k), 0, UINT32_MAX, "a non-negative integer"));
  };
  count("consecutive5xxErrors", o.consecutive_5xx);
  count("consecutiveGatewayErrors", o.consecutive_gateway);
  if (auto* v = get(j, "interval")) o.interval = duration(*v, p_(p, "interval"), true);
  if (auto* v = get(j, "baseEjectionTime"))
    o.base_ejection_time = duration(*v, p_(p, "baseEjectionTime"), true);
  auto pct = [&](const char* k, uint32_t& dst) {
    if (auto* v = get(j, k))
      dst = static_cast<uint32_t>(integer(*v, p_(p, k), 0, 100, "an integer 0-100"));
  };
  pct("maxEjectionPercent", o.max_ejection_percent);
  pct("minHealthPercent", o.min_health_percent);
  return o;
}

RetryBudgetPolicy retry_budget(const json& j, const std::string& p) {
  object(j, p);
  RetryBudgetPolicy b;
  if (auto* v = get(j, "percent"))
    b.percent = v->is_object() ? percentage(*v, p_(p, "percent")) : percent_value(*v, p_(p, "percent"));
  if (auto* v = get(j, "minRetryConcurrency")) {
    auto n = integer(*v, p_(p, "minRetryConcurrency"), 0, UINT32_MAX, "a non-negative integer");
    if (n > 0) b.min_retry_concurrency = static_cast<uint32_t>(n);
  }
  if (auto* v = get(j, "budgetInterval")) b.interval = duration(*v, p_(p, "budgetInterval"), false);
  return b;
}

Sections sections(const json& j, const std::string& p) {
  Sections s;
  if (auto* v = get(j, "loadBalancer")) s.lb = load_balancer(*v, p_(p, "loadBalancer"));
  if (auto* v = get(j, "connectionPool")) s.pool = connection_pool(*v, p_(p, "connectionPool"));
  if (auto* v = get(j, "outlierDetection"))
    s.outlier = outlier_detection(*v, p_(p, "outlierDetection"));
  return s;
}

RawPolicy traffic_policy(const json* j, const std::string& p) {
  RawPolicy r;
  if (!j) return r;
  object(*j, p);
  r.top = sections(*j, p);
  if (auto* v = get(*j, "retryBudget")) r.top.retry_budget = retry_budget(*v, p_(p, "retryBudget"));
  if (auto* pls = get(*j, "portLevelSettings")) {
    std::string q = p_(p, "portLevelSettings");
    for (size_t i = 0; i < list(*pls, q).size(); i++) {
      std::string qi = p_(q, i);
      object((*pls)[i], qi);
      auto* pt = get((*pls)[i], "port");
      auto* num = pt ? get(object(*pt, p_(qi, "port")), "number") : nullptr;
      if (!num) fail(p_(p_(qi, "port"), "number"), "is required");
      auto n = static_cast<uint16_t>(
          integer(*num, p_(p_(qi, "port"), "number"), 1, 65535, "a port number 1-65535"));
      r.ports.emplace(n, sections((*pls)[i], qi));  // the first setting for a port wins
    }
  }
  return r;
}

TrafficPolicy resolve(const Sections& s) {
  TrafficPolicy t;
  if (s.lb) t.lb = *s.lb;
  if (s.pool) t.pool = *s.pool;
  if (s.outlier) t.outlier = *s.outlier;
  t.retry_budget = s.retry_budget;
  return t;
}

// Istio's MergeTrafficPolicy: the top level (with its port-level settings for
// `port` applied, which replace every section, absent ones by defaults), then
// the subset's sections that are set, then the subset's port-level settings.
Sections merged(const RawPolicy& top, const RawPolicy* subset, std::optional<uint16_t> port) {
  Sections s = top.top;
  // Port-level settings replace the sections they carry; retryBudget has none.
  auto port_level = [&](const Sections& ps) {
    auto rb = s.retry_budget;
    s = ps;
    s.retry_budget = rb;
  };
  if (port)
    if (auto it = top.ports.find(*port); it != top.ports.end()) port_level(it->second);
  if (!subset) return s;
  if (subset->top.lb) s.lb = subset->top.lb;
  if (subset->top.pool) s.pool = subset->top.pool;
  if (subset->top.outlier) s.outlier = subset->top.outlier;
  if (subset->top.retry_budget) s.retry_budget = subset->top.retry_budget;
  if (port)
    if (auto it = subset->ports.find(*port); it != subset->ports.end()) port_level(it->second);
  return s;
}

void fill(const RawPolicy& top, const RawPolicy* sub, TrafficPolicy& base,
          std::map<uint16_t, TrafficPolicy>& by_port) {
  base = resolve(merged(top, sub, std::nullopt));
  std::set<uint16_t> ports;
  for (const auto& [p, s] : top.ports) ports.insert(p);
  if (sub)
    for (const auto& [p, s] : sub->ports) ports.insert(p);
  for (uint16_t p : ports) by_port[p] = resolve(merged(top, sub, p));
}

DestinationRules::Rule compile(const json& o, const RouteContext& ctx) {
  const json* md = get(o, "metadata");
  if (!md) fail("/metadata", "is required");
  object(*md, "/metadata");
  auto* name = get(*md, "name");
  if (!name || string(*name, "/metadata/name").empty()) fail("/metadata/name", "is required");
  std::string ns =
      get(*md, "namespace") ? string((*md)["namespace"], "/metadata/namespace") : "default";
  if (ns.empty()) ns = "default";
  auto* ts = get(*md, "creationTimestamp");
  auto* sp = get(o, "spec");
  if (!sp) fail("/spec", "is required");
  object(*sp, "/spec");
  auto* host = get(*sp, "host");
  if (!host || string(*host, "/spec/host").empty()) fail("/spec/host", "is required");
  DestinationRules::Rule r;
  r.host = spec::resolve_host(host->get<std::string>(), ns, ctx);
  r.order = (ts ? string(*ts, "/metadata/creationTimestamp") : "") + " " + ns + "/" +
            name->get<std::string>();
  RawPolicy top = traffic_policy(get(*sp, "trafficPolicy"), "/spec/trafficPolicy");
  fill(top, nullptr, r.policy, r.port_policies);
  if (auto* subs = get(*sp, "subsets")) {
    for (size_t i = 0; i < list(*subs, "/spec/subsets").size(); i++) {
      std::string q = p_("/spec/subsets", i);
      const json& sj = object((*subs)[i], q);
      Subset s;
      auto* sn = get(sj, "name");
      if (!sn || string(*sn, p_(q, "name")).empty()) fail(p_(q, "name"), "is required");
      s.name = sn->get<std::string>();
      for (const auto& other : r.subsets)
        if (other.name == s.name)
          fail(p_(q, "name"), "duplicate subset name " + json(s.name).dump());
      if (auto* l = get(sj, "labels"))
        for (auto& [k, v] : object(*l, p_(q, "labels")).items())
          s.labels[k] = string(v, p_(q, "labels") + "/" + spec::escape(k));
      RawPolicy sub = traffic_policy(get(sj, "trafficPolicy"), p_(q, "trafficPolicy"));
      fill(top, &sub, s.policy, s.port_policies);
      r.subsets.push_back(std::move(s));
    }
  }
  return r;
}

}  // namespace

bool subset_matches(const Subset& s, const std::map<std::string, std::string>& pod_labels) {
  for (const auto& [k, v] : s.labels) {
    auto it = pod_labels.find(k);
    if (it == pod_labels.end() || it->second != v) return false;
  }
  return true;
}

DestinationRules DestinationRules::build(const std::vector<json>& rules, const RouteContext& ctx,
                                         std::vector<std::string>* errors) {
  std::vector<Rule> compiled;
  for (const auto& o : rules) {
    try {
      compiled.push_back(compile(o, ctx));
    } catch (const SpecError& e) {
      if (!errors) continue;
      const json* md = get(o, "metadata");
      auto s = [&](const char* k) {
        const json* v = md ? get(*md, k) : nullptr;
        return v && v->is_string() ? v->get<std::string>() : std::string();
      };
      std::string ns = s("namespace").empty() ? "default" : s("namespace");
      errors->push_back("DestinationRule " + ns + "/" + s("name") + ": " + e.text());
    }
  }
  std::stable_sort(compiled.begin(), compiled.end(),
                   [](const Rule& a, const Rule& b) { return a.order < b.order; });
  DestinationRules out;
  for (auto& r : compiled) {
    auto it = std::find_if(out.rules_.begin(), out.rules_.end(),
                           [&](const Rule& x) { return x.host == r.host; });
    if (it == out.rules_.end()) {
      out.rules_.push_back(std::move(r));
      continue;
    }
    for (auto& s : r.subsets) {  // later rules add subsets they name first
      bool dup = std::any_of(it->subsets.begin(), it->subsets.end(),
                             [&](const Subset& x) { return x.name == s.name; });
      if (!dup) it->subsets.push_back(std::move(s));
    }
  }
  return out;
}

const DestinationRules::Rule* DestinationRules::find(std::string_view host) const {
  const Rule* best = nullptr;
  size_t best_spec = 0;
  for (const auto& r : rules_) {
    if (!spec::host_matches(r.host, host)) continue;
    size_t s = spec::host_specificity(r.host);
    if (!best || s > best_spec) {
      best = &r;
      best_spec = s;
    }
  }
  return best;
}

const Subset* DestinationRules::subset(std::string_view host, std::string_view name) const {
  const Rule* r = find(host);
  if (!r) return nullptr;
  for (const auto& s : r->subsets)
    if (s.name == name) return &s;
  return nullptr;
}

const TrafficPolicy& DestinationRules::policy(std::string_view host, std::string_view subset_name,
                                              uint16_t port) const {
  static const TrafficPolicy kDefault;
  const Rule* r = find(host);
  if (!r) return kDefault;
  const TrafficPolicy* base = &r->policy;
  const std::map<uint16_t, TrafficPolicy>* ports = &r->port_policies;
  if (!subset_name.empty())
    if (const Subset* s = subset(host, subset_name)) {
      base = &s->policy;
      ports = &s->port_policies;
    }
  auto it = ports->find(port);
  return it == ports->end() ? *base : it->second;
}

}  // namespace warren::waypoint
