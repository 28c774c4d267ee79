#include "headers.h"

namespace warren::waypoint {

static char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

namespace headers_detail {
bool iequals_n(const char* a, const char* b, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}
}  // namespace headers_detail

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = lower(c);
  return out;
}

bool header_value(const Headers& h, std::string_view name, std::string& out) {
  bool found = false;
  for (const auto& f : h) {
    if (!iequals(f.name, name)) continue;
    if (found) {
      out += ',';
      out += f.value;
    } else {
      out = f.value;
      found = true;
    }
  }
  return found;
}

}  // namespace warren::waypoint
