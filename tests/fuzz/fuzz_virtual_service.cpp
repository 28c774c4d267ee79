// Routing resources: the first line is JSON, either one VirtualService or
// {"vs": [...], "hr": [...], "dr": [...]}; each further line is a request
// "METHOD TARGET header:value..." to reviews.default.svc.cluster.local.
// Compile errors name the object and a JSON pointer; selection is pure and
// its result consistent; rewrites keep the query; weighted picks stay in range.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "destination_rule.h"
#include "path.h"
#include "route_table.h"

using namespace warren::waypoint;
using nlohmann::json;

namespace {

std::vector<json> items(const json& j, const char* k) {
  std::vector<json> out;
  if (j.is_object() && j.contains(k) && j[k].is_array())
    for (const auto& x : j[k]) out.push_back(x);
  return out;
}

void check_errors(const std::vector<std::string>& errors) {
  for (const auto& e : errors) {
    bool kind = e.rfind("VirtualService ", 0) == 0 || e.rfind("HTTPRoute ", 0) == 0 ||
                e.rfind("DestinationRule ", 0) == 0;
    if (!kind || e.find(": /") == std::string::npos) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  size_t nl = in.find('\n');
  auto spec = json::parse(in.substr(0, nl), nullptr, /*allow_exceptions=*/false);
  if (spec.is_discarded()) return 0;
  std::vector<json> vss, hrs, drs;
  if (spec.is_object() && (spec.contains("vs") || spec.contains("hr") || spec.contains("dr"))) {
    vss = items(spec, "vs");
    hrs = items(spec, "hr");
    drs = items(spec, "dr");
  } else {
    vss.push_back(spec);
  }
  std::vector<std::string> errors;
  RouteContext ctx;
  auto table = RouteTable::build(vss, hrs, ctx, &errors);
  auto rules = DestinationRules::build(drs, ctx, &errors);
  check_errors(errors);
  const std::string host = "reviews.default.svc.cluster.local";
  (void)rules.policy(host, "v1", 9080);
  while (nl != std::string_view::npos) {
    size_t start = nl + 1;
    nl = in.find('\n', start);
    std::string_view line = in.substr(start, nl == std::string_view::npos ? nl : nl - start);
    size_t sp = line.find(' ');
    std::string_view method = line.substr(0, sp);
    std::string_view rest = sp == std::string_view::npos ? std::string_view{} : line.substr(sp + 1);
    size_t sp2 = rest.find(' ');
    std::string_view target = rest.substr(0, sp2);
    Headers headers;
    while (sp2 != std::string_view::npos) {
      rest = rest.substr(sp2 + 1);
      sp2 = rest.find(' ');
      auto field = rest.substr(0, sp2);
      auto colon = field.find(':');
      if (colon != std::string_view::npos)
        headers.push_back(
            {std::string(field.substr(0, colon)), std::string(field.substr(colon + 1))});
    }
    auto n = normalize_target(target, method);
    if (!n.ok()) continue;
    RequestView v;
    v.method = method;
    v.authority = "reviews:9080";
    v.path = n->path;
    v.query = n->query;
    v.headers = &headers;
    v.port = 9080;
    auto s = table.select(host, v);
    auto again = table.select(host, v);
    if (s.route != again.route || s.matched_block != again.matched_block) std::abort();
    if (s.route && s.not_found) std::abort();
    if (!s.route) continue;
    const auto& blocks = s.route->match.blocks;
    if (s.matched_block < -1 || s.matched_block >= static_cast<int>(blocks.size())) std::abort();
    if ((s.matched_block == -1) != blocks.empty()) std::abort();
    if (!table.has_routes_for(host)) std::abort();
    const auto& d = s.route->destinations;
    if (!d.empty())
      for (uint32_t r : {0u, 1u, 0x7fffffffu, 0xffffffffu})
        if (pick_weighted(d, r) >= d.size()) std::abort();
    std::string out = rewrite_path(*s.route, s.matched_block, n->target());
    if (n->has_query && out.size() < n->query.size() + 1) std::abort();
    if (n->has_query && out.compare(out.size() - n->query.size(), n->query.size(), n->query) != 0)
      std::abort();
    (void)redirect_location(*s.route, s.matched_block, v);
  }
  return 0;
}
