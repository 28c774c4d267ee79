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

namespace headers_detail {
bool iequals_n(const char* a, const char* b, size_t n);
// RFC 9110 tchar, by byte.
struct TcharTable {
  bool v[256] = {};
  constexpr TcharTable() {
    for (int c = '0'; c <= '9'; ++c) v[c] = true;
    for (int c = 'a'; c <= 'z'; ++c) v[c] = true;
    for (int c = 'A'; c <= 'Z'; ++c) v[c] = true;
    for (unsigned char c : std::string_view("!#$%&'*+-.^_`|~")) v[c] = true;
  }
};
inline constexpr TcharTable kTchar{};
}  // namespace headers_detail

// ASCII case-insensitive equality (header names, methods, codings). Inline:
// most calls compare names of different lengths.
inline bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && headers_detail::iequals_n(a.data(), b.data(), a.size());
}
bool istarts_with(std::string_view s, std::string_view prefix);
std::string to_lower(std::string_view s);

// RFC 9110 token character (header names, methods, transfer-codings).
inline bool is_tchar(unsigned char c) { return headers_detail::kTchar.v[c]; }

// All values of `name` (case-insensitive) joined with "," into `out`, as
// Envoy does for matching; false when the header is absent.
bool header_value(const Headers& h, std::string_view name, std::string& out);

}  // namespace warren::waypoint
