#include "upstream_protocol.h"

#include <catch2/catch.hpp>

#include "destination_rule.h"

using namespace warren::waypoint;
using nlohmann::json;

namespace {

ConnectionPoolLimits pool_of(json http, std::string* error = nullptr) {
  json obj = {{"apiVersion", "networking.istio.io/v1"},
              {"kind", "DestinationRule"},
              {"metadata", {{"name", "r"}, {"namespace", "default"}}},
              {"spec", {{"host", "reviews"}, {"trafficPolicy", {{"connectionPool", {{"http", std::move(http)}}}}}}}};
  std::vector<std::string> errors;
  RouteContext ctx;
  auto rules = DestinationRules::build({obj}, ctx, &errors);
  if (error) *error = errors.empty() ? "" : errors[0];
  return rules.policy("reviews.default.svc.cluster.local", "", 80).pool;
}

}  // namespace

TEST_CASE("upstream protocol: a Service port's protocol from appProtocol or its name",
          "[upstream_protocol]") {
  CHECK(port_protocol("", "") == PortProtocol::kUnknown);
  CHECK(port_protocol("web", "") == PortProtocol::kUnknown);
  CHECK(port_protocol("http", "") == PortProtocol::kHttp);
  CHECK(port_protocol("http-api", "") == PortProtocol::kHttp);
  CHECK(port_protocol("HTTP2-api", "") == PortProtocol::kHttp2);
  CHECK(port_protocol("grpc", "") == PortProtocol::kGrpc);
  CHECK(port_protocol("grpc-web", "") == PortProtocol::kGrpcWeb);
  CHECK(port_protocol("grpc-web-ui", "") == PortProtocol::kGrpcWeb);
  CHECK(port_protocol("grpc-backend", "") == PortProtocol::kGrpc);
  CHECK(port_protocol("tcp-db", "") == PortProtocol::kTcp);
  CHECK(port_protocol("https", "") == PortProtocol::kHttps);
  CHECK(port_protocol("httpx", "") == PortProtocol::kUnknown);
  // appProtocol wins over the name, with Kubernetes' standard names.
  CHECK(port_protocol("http", "grpc") == PortProtocol::kGrpc);
  CHECK(port_protocol("grpc", "http") == PortProtocol::kHttp);
  CHECK(port_protocol("web", "kubernetes.io/h2c") == PortProtocol::kHttp2);
  CHECK(port_protocol("web", "kubernetes.io/ws") == PortProtocol::kHttp);
  CHECK(port_protocol("http2", "tcp") == PortProtocol::kTcp);
  CHECK(is_http2(PortProtocol::kGrpcWeb));
  CHECK_FALSE(is_http2(PortProtocol::kHttp));
  CHECK(is_http(PortProtocol::kGrpc));
  CHECK_FALSE(is_http(PortProtocol::kUnknown));
}

TEST_CASE("upstream protocol: Istio's choice for a waypoint cluster", "[upstream_protocol]") {
  ConnectionPoolLimits none;
  PortProtocol unknown = PortProtocol::kUnknown, http = PortProtocol::kHttp,
               h2 = PortProtocol::kHttp2, grpc = PortProtocol::kGrpc, tcp = PortProtocol::kTcp;
  // HTTP/2 ports: always HTTP/2.
  CHECK(upstream_http2(&h2, none, false));
  CHECK(upstream_http2(&grpc, none, true));
  // HTTP and unknown (sniffed) ports: HTTP/1.1, even for an HTTP/2 client.
  CHECK_FALSE(upstream_http2(&http, none, true));
  CHECK_FALSE(upstream_http2(&unknown, none, true));
  CHECK_FALSE(upstream_http2(&tcp, none, true));
  // No Service port (a pod addressed directly): the client's version.
  CHECK(upstream_http2(nullptr, none, true));
  CHECK_FALSE(upstream_http2(nullptr, none, false));
  // h2UpgradePolicy.
  ConnectionPoolLimits up;
  up.h2_upgrade = H2Upgrade::kUpgrade;
  CHECK(upstream_http2(&http, up, false));
  CHECK(upstream_http2(&unknown, up, false));
  CHECK_FALSE(upstream_http2(&http, up, false, /*upgrade_request=*/true));  // WebSocket stays HTTP/1.1
  ConnectionPoolLimits keep;
  keep.h2_upgrade = H2Upgrade::kDoNotUpgrade;
  CHECK_FALSE(upstream_http2(&http, keep, true));
  CHECK(upstream_http2(&h2, keep, false));  // DO_NOT_UPGRADE does not downgrade an HTTP/2 port
  // useClientProtocol wins over everything.
  ConnectionPoolLimits client;
  client.use_client_protocol = true;
  client.h2_upgrade = H2Upgrade::kUpgrade;
  CHECK(upstream_http2(&unknown, client, true));
  CHECK_FALSE(upstream_http2(&h2, client, false));
}

TEST_CASE("upstream protocol: DestinationRule h2UpgradePolicy and useClientProtocol parse",
          "[upstream_protocol][destination_rule]") {
  CHECK(pool_of({{"h2UpgradePolicy", "UPGRADE"}}).h2_upgrade == H2Upgrade::kUpgrade);
  CHECK(pool_of({{"h2UpgradePolicy", "DO_NOT_UPGRADE"}}).h2_upgrade == H2Upgrade::kDoNotUpgrade);
  CHECK(pool_of({{"h2UpgradePolicy", "DEFAULT"}}).h2_upgrade == H2Upgrade::kDefault);
  CHECK(pool_of({{"useClientProtocol", true}}).use_client_protocol);
  CHECK_FALSE(pool_of(json::object()).use_client_protocol);
  std::string err;
  (void)pool_of({{"h2UpgradePolicy", "SOMETIMES"}}, &err);
  CHECK(err.find("/spec/trafficPolicy/connectionPool/http/h2UpgradePolicy") != std::string::npos);
  CHECK(err.find("must be one of DEFAULT, DO_NOT_UPGRADE, UPGRADE") != std::string::npos);
  (void)pool_of({{"useClientProtocol", "yes"}}, &err);
  CHECK(err.find("/spec/trafficPolicy/connectionPool/http/useClientProtocol: must be a boolean") !=
        std::string::npos);
}
