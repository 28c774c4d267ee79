// Which HTTP version a request goes upstream with, as Istio configures the
// waypoint's clusters (pilot/pkg/networking/core: protocol selection from
// the Service port, setUpstreamProtocol, applyConnectionPool, shouldH2Upgrade).
//
//  - A Service port's protocol comes from its appProtocol when set, else the
//    port name's prefix before '-' ("http2-web", "grpc"), case-insensitive;
//    "grpc-web" is checked first; appProtocol "kubernetes.io/h2c" is HTTP/2,
//    "kubernetes.io/ws" HTTP. Anything else is unknown (sniffed).
//  - HTTP/2 ports (http2, grpc, grpc-web, h2c) get HTTP/2 upstream.
//  - Every other port gets HTTP/1.1, unknown ones included: the waypoint is
//    not a sidecar, and Istio sets use_downstream_protocol only for sidecars.
//  - DestinationRule connectionPool.http: useClientProtocol wins over all
//    (the client's version); else h2UpgradePolicy UPGRADE makes any port
//    HTTP/2 and DO_NOT_UPGRADE keeps HTTP/1.1 (DEFAULT follows the mesh's
//    h2UpgradePolicy, DO_NOT_UPGRADE).
//  - A request without a Service port (a pod addressed directly) keeps the
//    client's version, as Istio's passthrough cluster does.
#pragma once

#include <string_view>

#include "destination_rule.h"

namespace warren::waypoint {

enum class PortProtocol { kUnknown, kHttp, kHttp2, kGrpc, kGrpcWeb, kHttps, kTcp, kTls, kOther };

PortProtocol port_protocol(std::string_view name, std::string_view app_protocol);
bool is_http2(PortProtocol p);  // http2, grpc, grpc-web
bool is_http(PortProtocol p);   // http, http2, grpc, grpc-web

// Whether the upstream request is HTTP/2. `port`: the destination Service
// port's protocol (nullptr: no Service port); `client_h2`: the client spoke
// HTTP/2; `upgrade_request`: an HTTP/1 Upgrade (WebSocket) request, which
// stays HTTP/1.1 (HTTP/2 has no Upgrade).
bool upstream_http2(const PortProtocol* port, const ConnectionPoolLimits& pool, bool client_h2,
                    bool upgrade_request = false);

}  // namespace warren::waypoint
