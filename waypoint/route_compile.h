// Internal to the route table: the compilers of VirtualService
// (route_virtual_service.cpp) and Gateway API HTTPRoute (route_http_route.cpp)
// that RouteTable::build (route_table.cpp) runs per object. Both throw
// spec::SpecError.
#pragma once

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "route_table.h"
#include "spec_json.h"

namespace warren::waypoint::route_compile {

// Gateway API precedence: exact path, then regex, then the longest prefix;
// method; most headers; most query params; oldest route, ns/name; rule order.
using GatewayKey = std::tuple<int, int64_t, int, int64_t, int64_t, std::string, size_t, size_t>;
struct GatewayRule {
  std::string host;
  RouteTable::Rule rule;
  GatewayKey key;
};

// nullopt when the VirtualService does not apply to the mesh (gateways).
std::optional<RouteTable::Entry> compile_virtual_service(const nlohmann::json& o, const RouteContext& ctx);
// One rule per (parent Service host, rule).
std::vector<GatewayRule> compile_http_route(const nlohmann::json& o, const RouteContext& ctx);

}  // namespace warren::waypoint::route_compile
