#include "grpc.h"

#include <charconv>

namespace warren::waypoint {

bool is_grpc_content_type(std::string_view ct) {
  if (!istarts_with(ct, "application/grpc")) return false;
  if (ct.size() == 16) return true;
  char next = ct[16];
  return next == '+' || next == ';';
}

bool is_grpc_request(const Headers& h) {
  std::string ct;
  return header_value(h, "content-type", ct) && is_grpc_content_type(ct);
}

int grpc_status_for_http(int http) {
  switch (http) {
    case 400:
      return kGrpcInternal;
    case 401:
      return kGrpcUnauthenticated;
    case 403:
      return kGrpcPermissionDenied;
    case 404:
      return kGrpcUnimplemented;
    case 429:
    case 502:
    case 503:
    case 504:
      return kGrpcUnavailable;
    default:
      return kGrpcUnknown;
  }
}

std::string grpc_message_encode(std::string_view msg) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(msg.size());
  for (unsigned char c : msg) {
    if (c >= 0x20 && c <= 0x7e && c != '%') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::optional<int> grpc_status_of(const Headers& h) {
  std::string v;
  if (!header_value(h, "grpc-status", v) || v.empty()) return std::nullopt;
  int n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || p != v.data() + v.size()) return std::nullopt;
  return n;
}

std::optional<std::chrono::milliseconds> parse_grpc_timeout(std::string_view v) {
  if (v.size() < 2 || v.size() > 9) return std::nullopt;
  uint64_t n = 0;
  for (char c : v.substr(0, v.size() - 1)) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  using namespace std::chrono;
  switch (v.back()) {
    case 'H': return duration_cast<milliseconds>(hours(n));
    case 'M': return duration_cast<milliseconds>(minutes(n));
    case 'S': return duration_cast<milliseconds>(seconds(n));
    case 'm': return milliseconds(n);
    case 'u': return ceil<milliseconds>(microseconds(n));
    case 'n': return ceil<milliseconds>(nanoseconds(n));
    default: return std::nullopt;
  }
}

}  // namespace warren::waypoint
