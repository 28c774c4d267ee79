// gRPC over HTTP/2 as the waypoint sees it: which requests are gRPC, the
// status a local reply carries (Envoy's HTTP-to-gRPC mapping), and the
// percent-encoding of grpc-message.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "headers.h"

namespace warren::waypoint {

// gRPC status codes the waypoint produces itself.
enum GrpcStatus : int {
  kGrpcOk = 0,
  kGrpcUnknown = 2,
  kGrpcDeadlineExceeded = 4,
  kGrpcNotFound = 5,
  kGrpcPermissionDenied = 7,
  kGrpcUnimplemented = 12,
  kGrpcInternal = 13,
  kGrpcUnavailable = 14,
  kGrpcUnauthenticated = 16,
};

// content-type application/grpc, application/grpc+proto, application/grpc;...
bool is_grpc_content_type(std::string_view ct);
bool is_grpc_request(const Headers& h);

// The grpc-status of a local reply with HTTP status `http` (Envoy's
// Grpc::Utility::httpToGrpcStatus): 400 INTERNAL, 401 UNAUTHENTICATED,
// 403 PERMISSION_DENIED, 404 UNIMPLEMENTED, 429/502/503/504 UNAVAILABLE,
// anything else UNKNOWN.
int grpc_status_for_http(int http);

// grpc-message is percent-encoded (gRPC's PROTOCOL-HTTP2: bytes outside
// 0x20-0x7E, and '%', as %XX).
std::string grpc_message_encode(std::string_view msg);

// A grpc-timeout value (gRPC's PROTOCOL-HTTP2: 1-8 ASCII digits and a unit,
// H M S m u n) in milliseconds, sub-millisecond units rounded up as Envoy's
// Grpc::Common::getGrpcTimeout does; nullopt when malformed.
std::optional<std::chrono::milliseconds> parse_grpc_timeout(std::string_view v);

// The grpc-status value of a header list, if one is there and is a number.
std::optional<int> grpc_status_of(const Headers& h);

}  // namespace warren::waypoint
