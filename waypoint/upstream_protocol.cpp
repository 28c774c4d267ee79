#include "upstream_protocol.h"

#include <string>

namespace warren::waypoint {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

}  // namespace

PortProtocol port_protocol(std::string_view name, std::string_view app_protocol) {
  std::string n = lower(app_protocol.empty() ? name : app_protocol);
  if (!app_protocol.empty()) {
    // Kubernetes' standard application protocols (appProtocol only).
    if (n == "kubernetes.io/h2c") return PortProtocol::kHttp2;
    if (n == "kubernetes.io/ws") return PortProtocol::kHttp;
    if (n == "kubernetes.io/wss") return PortProtocol::kHttps;
  }
  if (n.rfind("grpc-web", 0) == 0) return PortProtocol::kGrpcWeb;
  if (auto dash = n.find('-'); dash != std::string::npos) n.resize(dash);
  if (n == "http" || n == "http_proxy") return PortProtocol::kHttp;
  if (n == "http2" || n == "h2c") return PortProtocol::kHttp2;
  if (n == "grpc") return PortProtocol::kGrpc;
  if (n == "https") return PortProtocol::kHttps;
  if (n == "tcp") return PortProtocol::kTcp;
  if (n == "tls") return PortProtocol::kTls;
  if (n == "mongo" || n == "redis" || n == "mysql" || n == "udp") return PortProtocol::kOther;
  return PortProtocol::kUnknown;
}

bool is_http2(PortProtocol p) {
  return p == PortProtocol::kHttp2 || p == PortProtocol::kGrpc || p == PortProtocol::kGrpcWeb;
}

bool is_http(PortProtocol p) { return p == PortProtocol::kHttp || is_http2(p); }

bool upstream_http2(const PortProtocol* port, const ConnectionPoolLimits& pool, bool client_h2,
                    bool upgrade_request) {
  if (upgrade_request) return false;
  if (pool.use_client_protocol) return client_h2;
  if (!port) return client_h2;
  if (is_http2(*port)) return true;
  return pool.h2_upgrade == H2Upgrade::kUpgrade;
}

}  // namespace warren::waypoint
