#include "route_match.h"

#include <re2/re2.h>

namespace warren::waypoint {
namespace {

using nlohmann::json;

Error at(const std::string& ptr, const std::string& why) {
  return make_error(Errc::kInvalidArgument, ptr + ": " + why);
}

// JSON pointer escaping of a key (RFC 6901).
std::string escape_key(const std::string& k) {
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

Result<std::shared_ptr<const re2::RE2>> compile_regex(const std::string& pattern,
                                                      const std::string& ptr) {
  re2::RE2::Options opts;
  opts.set_log_errors(false);
  auto re = std::make_shared<const re2::RE2>(pattern, opts);
  if (!re->ok()) {
    std::string why = re->error();
    // RE2 appends ": <offending part>"; the pattern is quoted already.
    if (auto& arg = re->error_arg();
        !arg.empty() && why.size() > arg.size() + 2 &&
        why.compare(why.size() - arg.size() - 2, std::string::npos, ": " + arg) == 0)
      why.resize(why.size() - arg.size() - 2);
    return at(ptr, json(pattern).dump() + " is not a valid RE2 expression: " + why);
  }
  return re;
}

enum class Allow { kUri, kString, kHeader, kQuery };

Result<StringMatch> compile_string_match(const json& j, const std::string& ptr, Allow allow) {
  if (!j.is_object()) return at(ptr, "must be an object with one of exact, prefix, regex");
  StringMatch m;
  int set = 0;
  for (auto& [k, v] : j.items()) {
    std::string p = ptr + "/" + escape_key(k);
    if (k != "exact" && k != "prefix" && k != "regex")
      return at(p, "unknown field (expected exact, prefix or regex)");
    if (!v.is_string()) return at(p, "must be a string");
    if (k == "prefix" && allow == Allow::kQuery)
      return at(p, "prefix is not supported for query parameters");
    m.value = v.get<std::string>();
    if (k == "exact")
      m.kind = StringMatch::Kind::kExact;
    else if (k == "prefix")
      m.kind = StringMatch::Kind::kPrefix;
    else {
      m.kind = StringMatch::Kind::kRegex;
      auto re = compile_regex(m.value, p);
      if (!re) return re.error();
      m.re = std::move(*re);
    }
    set++;
  }
  if (set > 1) return at(ptr, "only one of exact, prefix, regex may be set");
  if (set == 0 && allow != Allow::kHeader && allow != Allow::kQuery)
    return at(ptr, "one of exact, prefix, regex is required");
  return m;
}

Result<std::vector<NamedMatch>> compile_named(const json& j, const std::string& ptr, Allow allow) {
  if (!j.is_object()) return at(ptr, "must be an object of name: {exact|prefix|regex}");
  std::vector<NamedMatch> out;
  for (auto& [k, v] : j.items()) {
    std::string p = ptr + "/" + escape_key(k);
    if (k.empty()) return at(p, "empty name");
    if (allow == Allow::kHeader && k[0] == ':') {
      if (k != ":method" && k != ":authority" && k != ":scheme" && k != ":path")
        return at(p, "unknown pseudo-header");
    } else if (allow == Allow::kHeader) {
      for (unsigned char c : k)
        if (!is_tchar(c)) return at(p, "not a valid header name");
    }
    auto m = compile_string_match(v, p, allow);
    if (!m) return m.error();
    out.push_back(NamedMatch{allow == Allow::kHeader ? to_lower(k) : k, std::move(*m)});
  }
  return out;
}

}  // namespace

bool StringMatch::matches(std::string_view s) const {
  switch (kind) {
    case Kind::kPresent:
      return true;
    case Kind::kExact:
      return ignore_case ? iequals(s, value) : s == value;
    case Kind::kPrefix:
      return ignore_case ? istarts_with(s, value) : s.substr(0, value.size()) == value;
    case Kind::kRegex:
      return re2::RE2::FullMatch(re2::StringPiece(s.data(), s.size()), *re);
  }
  return false;
}

Result<MatchBlock> compile_match_block(const json& j, const std::string& ptr) {
  if (!j.is_object()) return at(ptr, "must be an object");
  MatchBlock b;
  for (const auto& item : j.items()) {
    // Not a structured binding: clang 14 cannot capture one in the lambda below.
    const std::string& k = item.key();
    const json& v = item.value();
    std::string p = ptr + "/" + escape_key(k);
    auto one = [&](std::optional<StringMatch>& dst, Allow a) -> Result<void> {
      auto m = compile_string_match(v, p, a);
      if (!m) return m.error();
      dst = std::move(*m);
      return {};
    };
    Result<void> r;
    if (k == "uri")
      r = one(b.uri, Allow::kUri);
    else if (k == "scheme")
      r = one(b.scheme, Allow::kString);
    else if (k == "method")
      r = one(b.method, Allow::kString);
    else if (k == "authority")
      r = one(b.authority, Allow::kString);
    else if (k == "headers" || k == "withoutHeaders" || k == "queryParams") {
      auto m = compile_named(v, p, k == "queryParams" ? Allow::kQuery : Allow::kHeader);
      if (!m) return m.error();
      (k == "headers"          ? b.headers
       : k == "withoutHeaders" ? b.without_headers
                               : b.query_params) = std::move(*m);
    } else if (k == "ignoreUriCase") {
      if (!v.is_boolean()) return at(p, "must be a boolean");
    } else if (k == "port") {
      if (!v.is_number_unsigned() || v.get<uint64_t>() == 0 || v.get<uint64_t>() > 65535)
        return at(p, "must be a port number 1-65535");
      b.port = v.get<uint32_t>();
    } else if (k == "sourceLabels") {
      if (!v.is_object()) return at(p, "must be an object of label: value");
      for (auto& [lk, lv] : v.items()) {
        if (!lv.is_string()) return at(p + "/" + escape_key(lk), "must be a string");
        b.source_labels.emplace_back(lk, lv.get<std::string>());
      }
    } else if (k == "sourceNamespace" || k == "name" || k == "statPrefix") {
      if (!v.is_string()) return at(p, "must be a string");
      if (k == "sourceNamespace") b.source_namespace = v.get<std::string>();
      if (k == "name") b.name = v.get<std::string>();
    } else if (k == "gateways") {
      if (!v.is_array()) return at(p, "must be a list of strings");
      for (size_t i = 0; i < v.size(); i++) {
        if (!v[i].is_string()) return at(p + "/" + std::to_string(i), "must be a string");
        b.gateways.push_back(v[i].get<std::string>());
      }
    } else {
      return at(p, "unknown field");
    }
    if (!r) return r.error();
  }
  if (j.contains("ignoreUriCase") && j["ignoreUriCase"].get<bool>() && b.uri &&
      b.uri->kind != StringMatch::Kind::kRegex)
    b.uri->ignore_case = true;  // Istio: exact and prefix only
  return b;
}

Result<RouteMatch> compile_route_match(const json& j, const std::string& ptr) {
  RouteMatch m;
  if (j.is_null()) return m;
  if (!j.is_array()) return at(ptr, "must be a list of match blocks");
  for (size_t i = 0; i < j.size(); i++) {
    auto b = compile_match_block(j[i], ptr + "/" + std::to_string(i));
    if (!b) return b.error();
    m.blocks.push_back(std::move(*b));
  }
  return m;
}

std::optional<std::string_view> query_param(std::string_view query, std::string_view name) {
  size_t start = 0;
  while (start <= query.size()) {
    size_t amp = query.find('&', start);
    if (amp == std::string_view::npos) amp = query.size();
    auto item = query.substr(start, amp - start);
    auto eq = item.find('=');
    auto k = item.substr(0, eq);
    if (!item.empty() && k == name)
      return eq == std::string_view::npos ? std::string_view{} : item.substr(eq + 1);
    start = amp + 1;
  }
  return std::nullopt;
}

namespace {

// The value a header match reads: a pseudo-header from the view, else the
// request's fields joined with ",".
bool lookup(const RequestView& r, const std::string& name, std::string& out) {
  if (!name.empty() && name[0] == ':') {
    if (name == ":method")
      out = r.method;
    else if (name == ":authority")
      out = r.authority;
    else if (name == ":scheme")
      out = r.scheme;
    else if (r.query.empty())
      out = r.path;
    else
      out = std::string(r.path) + "?" + std::string(r.query);
    return true;
  }
  static const Headers kNone;
  return header_value(r.headers ? *r.headers : kNone, name, out);
}

bool source_matches(const MatchBlock& b, const RequestView& r) {
  if (!b.source_namespace.empty() && r.source_namespace != b.source_namespace) return false;
  for (const auto& [k, v] : b.source_labels) {
    if (!r.source_labels) return false;
    bool found = false;
    for (const auto& l : *r.source_labels) found |= l.first == k && l.second == v;
    if (!found) return false;
  }
  return true;
}

}  // namespace

bool matches(const MatchBlock& b, const RequestView& r) {
  if (b.uri && !b.uri->matches(r.path)) return false;
  if (b.scheme && !b.scheme->matches(r.scheme)) return false;
  if (b.method && !b.method->matches(r.method)) return false;
  if (b.authority && !b.authority->matches(r.authority)) return false;
  if (b.port && (!r.port || *r.port != *b.port)) return false;
  if (!source_matches(b, r)) return false;
  std::string v;
  for (const auto& h : b.headers)
    if (!lookup(r, h.name, v) || !h.match.matches(v)) return false;
  for (const auto& h : b.without_headers)
    if (lookup(r, h.name, v) && h.match.matches(v)) return false;
  for (const auto& q : b.query_params) {
    auto val = query_param(r.query, q.name);
    if (!val || !q.match.matches(*val)) return false;
  }
  return true;
}

bool matches(const RouteMatch& m, const RequestView& r) {
  if (m.blocks.empty()) return true;
  for (const auto& b : m.blocks)
    if (matches(b, r)) return true;
  return false;
}

}  // namespace warren::waypoint
