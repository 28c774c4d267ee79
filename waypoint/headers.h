// Header fields as the waypoint passes them around: an ordered list of
// name/value pairs, names as received (HTTP/1) or lower case (HTTP/2).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace warren::waypoint {

struct Header {
  std::string name;
  std::string value;
  bool operator==(const Header&) const = default;
};
using Headers = std::vector<Header>;

// ASCII case-insensitive equality (header names, methods, codings).
bool iequals(std::string_view a, std::string_view b);
bool istarts_with(std::string_view s, std::string_view prefix);
std::string to_lower(std::string_view s);

// RFC 9110 token character (header names, methods, transfer-codings).
bool is_tchar(unsigned char c);

// All values of `name` (case-insensitive) joined with "," into `out`, as
// Envoy does for matching; false when the header is absent.
bool header_value(const Headers& h, std::string_view name, std::string& out);

}  // namespace warren::waypoint
