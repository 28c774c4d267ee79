// The fields of Istio's MeshConfig.ExtensionProvider.envoyExtAuthzHttp that
// Warren knows, and the value checks both sides use: the controller validates
// a meshConfig with them and the waypoint reads the provider with them, so
// the two cannot disagree.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

namespace warren {

inline constexpr const char* kExtAuthzHttpFields[] = {"service",
                                                      "port",
                                                      "pathPrefix",
                                                      "timeout",
                                                      "failOpen",
                                                      "statusOnError",
                                                      "includeRequestHeadersInCheck",
                                                      "includeAdditionalHeadersInCheck",
                                                      "headersToUpstreamOnAllow",
                                                      "headersToDownstreamOnDeny",
                                                      "headersToDownstreamOnAllow",
                                                      "includeHeadersInCheck",
                                                      "includeRequestBodyInCheck",
                                                      "clearRouteCache"};

namespace ext_authz_text {

// A header value without control characters (tab allowed).
inline bool clean(std::string_view s) {
  for (unsigned char c : s)
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  return true;
}

// An RFC 9110 field name (a token).
inline bool header_name_ok(std::string_view n) {
  constexpr std::string_view kSpecials = "!#$%&'*+-.^_`|~";
  return !n.empty() && std::all_of(n.begin(), n.end(), [&](char c) {
    auto u = static_cast<unsigned char>(c);
    return (u >= '0' && u <= '9') || (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') ||
           kSpecials.find(c) != std::string_view::npos;
  });
}

// Protobuf Duration text as Istio writes timeout: "1.5s", "250ms", "2m", "1h";
// nullopt when not one, or not positive, or absurdly long. Rounded to whole ms.
inline std::optional<std::chrono::milliseconds> duration(const std::string& s) {
  size_t i = 0;
  while (i < s.size() && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.')) ++i;
  if (i == 0 || i > 12) return std::nullopt;
  std::string num = s.substr(0, i), unit = s.substr(i);
  if (std::count(num.begin(), num.end(), '.') > 1 || num == ".") return std::nullopt;
  double v = std::strtod(num.c_str(), nullptr);
  double ms = unit == "ms"  ? v
              : unit == "s" ? v * 1e3
              : unit == "m" ? v * 6e4
              : unit == "h" ? v * 3.6e6
                            : -1;
  if (ms <= 0 || ms > 1e12) return std::nullopt;
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(ms)));
}

}  // namespace ext_authz_text
}  // namespace warren
