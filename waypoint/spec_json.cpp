// The spec readers (spec_json.h) and the spec helpers declared in
// route_table.h (durations, hosts, JSON pointer escaping).
#include "spec_json.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace warren::waypoint::spec {

using nlohmann::json;

Result<std::chrono::milliseconds> parse_duration(std::string_view s) {
  auto bad = [&](const std::string& why) {
    return make_error(Errc::kInvalidArgument, json(s).dump() + " " + why);
  };
  if (s == "0") return std::chrono::milliseconds(0);
  if (s.empty()) return bad("is not a duration");
  if (s[0] == '-') return bad("must not be negative");
  static const std::pair<std::string_view, double> kUnits[] = {
      {"ns", 1},  {"us", 1e3}, {"\xC2\xB5s", 1e3}, {"ms", 1e6},
      {"s", 1e9}, {"m", 60e9}, {"h", 3600e9}};
  double ns = 0;
  size_t i = 0;
  while (i < s.size()) {
    size_t start = i;
    bool digits = false;
    while (i < s.size() && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.')) {
      digits |= s[i] != '.';
      i++;
    }
    std::string num(s.substr(start, i - start));
    if (!digits || std::count(num.begin(), num.end(), '.') > 1)
      return bad("is not a duration (expected e.g. 1.5s, 250ms, 2m)");
    double v = std::strtod(num.c_str(), nullptr);  // no throw; huge values are caught below
    double unit = 0;
    for (const auto& [name, mult] : kUnits) {
      if (s.substr(i, name.size()) == name) {
        unit = mult;
        i += name.size();
        break;
      }
    }
    if (unit == 0) return bad("is not a duration: missing or unknown unit (ns, us, ms, s, m, h)");
    ns += v * unit;
  }
  if (ns > 9e15 * 1e3) return bad("is too large");
  return std::chrono::milliseconds(static_cast<int64_t>(ns / 1e6));
}

std::string resolve_host(std::string_view host, std::string_view ns, const RouteContext& ctx) {
  std::string h = to_lower(host);
  while (!h.empty() && h.back() == '.') h.pop_back();
  if (h.empty() || h[0] == '*') return h;
  size_t dots = std::count(h.begin(), h.end(), '.');
  if (dots == 0) return h + "." + std::string(ns) + ".svc." + ctx.cluster_domain;
  if (dots == 1) return h + ".svc." + ctx.cluster_domain;
  if (dots == 2 && h.size() > 4 && h.compare(h.size() - 4, 4, ".svc") == 0)
    return h + "." + ctx.cluster_domain;
  return h;
}

bool host_matches(std::string_view pattern, std::string_view host) {
  if (pattern == "*") return true;
  if (pattern.size() > 1 && pattern[0] == '*' && pattern[1] == '.') {
    auto suffix = pattern.substr(1);
    return host.size() > suffix.size() && iequals(host.substr(host.size() - suffix.size()), suffix);
  }
  return iequals(pattern, host);
}

size_t host_specificity(std::string_view pattern) {
  if (pattern.empty() || pattern[0] != '*') return SIZE_MAX;
  return pattern.size();
}

std::string escape(std::string_view k) {
  std::string out;
  for (char c : k) {
    if (c == '~')
      out += "~0";
    else if (c == '/')
      out += "~1";
    else
      out += c;
  }
  return out;
}

void fail(const std::string& ptr, std::string why) {
  throw SpecError{ptr, std::move(why)};
}

const json* get(const json& o, const char* k) {
  if (!o.is_object()) return nullptr;
  auto it = o.find(k);
  return it == o.end() || it->is_null() ? nullptr : &*it;
}
std::string p_(const std::string& p, const char* k) {
  return p + "/" + k;
}
std::string p_(const std::string& p, size_t i) {
  return p + "/" + std::to_string(i);
}

const json& object(const json& v, const std::string& p) {
  if (!v.is_object()) fail(p, "must be an object");
  return v;
}
const json& list(const json& v, const std::string& p) {
  if (!v.is_array()) fail(p, "must be a list");
  return v;
}
std::string string(const json& v, const std::string& p) {
  if (!v.is_string()) fail(p, "must be a string");
  return v.get<std::string>();
}
std::string nonempty(const json& v, const std::string& p) {
  auto s = string(v, p);
  if (s.empty()) fail(p, "must not be empty");
  return s;
}
int64_t integer(const json& v, const std::string& p, int64_t lo, int64_t hi, const char* what) {
  if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi ||
      (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi)))
    fail(p, std::string("must be ") + what);
  return v.get<int64_t>();
}
uint16_t port(const json& v, const std::string& p) {
  return static_cast<uint16_t>(integer(v, p, 1, 65535, "a port number 1-65535"));
}
std::chrono::milliseconds duration(const json& v, const std::string& p, bool positive) {
  auto d = parse_duration(string(v, p));
  if (!d) fail(p, d.error().message);
  if (positive && d->count() < 1) fail(p, "must be at least 1ms");
  return *d;
}
double percent_value(const json& v, const std::string& p) {
  if (!v.is_number() || v.get<double>() < 0 || v.get<double>() > 100)
    fail(p, "must be a number 0-100");
  return v.get<double>();
}
// Istio Percent: {value: 0..100}.
double percentage(const json& v, const std::string& p) {
  object(v, p);
  auto* x = get(v, "value");
  return x ? percent_value(*x, p_(p, "value")) : 0.0;
}

std::string object_id(const json& o) {
  const json* md = get(o, "metadata");
  auto s = [&](const char* k) {
    const json* v = md ? get(*md, k) : nullptr;
    return v && v->is_string() ? v->get<std::string>() : std::string();
  };
  return (s("namespace").empty() ? "default" : s("namespace")) + "/" + s("name");
}

Meta meta(const json& o) {
  const json* mdp = get(o, "metadata");  // get() is null-safe for non-objects
  if (!mdp) fail("/metadata", "is required");
  const json& md = object(*mdp, "/metadata");
  Meta m;
  auto* name = get(md, "name");
  if (!name) fail("/metadata/name", "is required");
  m.name = nonempty(*name, "/metadata/name");
  auto* ns = get(md, "namespace");
  m.ns = ns ? nonempty(*ns, "/metadata/namespace") : "default";
  auto* ts = get(md, "creationTimestamp");
  m.order = (ts ? string(*ts, "/metadata/creationTimestamp") : "") + " " + m.ns + "/" + m.name;
  return m;
}

void check_header_name(const std::string& n, const std::string& p) {
  if (n.empty()) fail(p, "empty header name");
  if (n[0] == ':' || iequals(n, "host")) fail(p, "cannot modify the " + n + " header");
  for (unsigned char c : n)
    if (!is_tchar(c)) fail(p, "not a valid header name");
}

std::shared_ptr<const re2::RE2> regex(const std::string& pattern, const std::string& p) {
  re2::RE2::Options o;
  o.set_log_errors(false);
  auto re = std::make_shared<const re2::RE2>(pattern, o);
  if (!re->ok()) fail(p, json(pattern).dump() + " is not a valid RE2 expression: " + re->error());
  return re;
}

}  // namespace warren::waypoint::spec
