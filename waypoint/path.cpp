#include "path.h"

#include <vector>

namespace warren::waypoint {
namespace {

Error bad(std::string_view what) {
  return make_error(Errc::kInvalidArgument, "path: " + std::string(what));
}

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool unreserved(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

constexpr char kHex[] = "0123456789ABCDEF";

// Raw bytes no request target may carry, in the path or in the query.
Result<void> check_raw(std::string_view s, std::string_view part) {
  for (unsigned char c : s) {
    if (c == 0) return bad(std::string(part) + " contains NUL");
    if (c < 0x20 || c == 0x7f) return bad(std::string(part) + " contains a control character");
    if (c == ' ') return bad(std::string(part) + " contains a space");
    if (c == '#') return bad(std::string(part) + " contains a fragment (#)");
  }
  return {};
}

// %2F / %5C (either case) at i?
bool escaped_slash_at(std::string_view s, size_t i) {
  if (i + 2 >= s.size() || s[i] != '%') return false;
  char a = s[i + 1], b = s[i + 2];
  return (a == '2' && (b == 'f' || b == 'F')) || (a == '5' && (b == 'c' || b == 'C'));
}

// Percent-escapes: validates them, decodes unreserved characters and
// upper-cases the hex of the others. Raw bytes >= 0x80 are escaped, as
// Envoy's (Chromium's) canonicaliser does.
Result<std::string> canonical_escapes(std::string_view p, bool decode) {
  std::string out;
  out.reserve(p.size());
  for (size_t i = 0; i < p.size(); i++) {
    unsigned char c = static_cast<unsigned char>(p[i]);
    if (c == '%') {
      int hi = i + 1 < p.size() ? hexval(p[i + 1]) : -1;
      int lo = i + 2 < p.size() ? hexval(p[i + 2]) : -1;
      if (hi < 0 || lo < 0) return bad("invalid percent-encoding");
      unsigned char v = static_cast<unsigned char>(hi * 16 + lo);
      if (v == 0) return bad("contains an escaped NUL (%00)");
      if (!decode) {
        out.append(p.substr(i, 3));
      } else if (unreserved(v)) {
        out += static_cast<char>(v);
      } else {
        out += '%';
        out += kHex[v >> 4];
        out += kHex[v & 15];
      }
      i += 2;
    } else if (c >= 0x80 && decode) {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

// RFC 3986 §5.2.4 on an absolute path: `.` and `..` segments removed, never
// above the root; a trailing dot segment leaves a trailing `/`.
std::string remove_dot_segments(std::string_view p) {
  std::vector<std::string_view> segs;
  size_t i = 1;  // p[0] == '/'
  bool trailing_dot = false;
  while (true) {
    size_t j = p.find('/', i);
    std::string_view seg =
        p.substr(i, j == std::string_view::npos ? std::string_view::npos : j - i);
    trailing_dot = false;
    if (seg == ".") {
      trailing_dot = true;
    } else if (seg == "..") {
      if (!segs.empty()) segs.pop_back();
      trailing_dot = true;
    } else {
      segs.push_back(seg);
    }
    if (j == std::string_view::npos) break;
    i = j + 1;
  }
  if (trailing_dot) segs.emplace_back();
  std::string out;
  out.reserve(p.size());
  for (auto s : segs) {
    out += '/';
    out += s;
  }
  if (out.empty()) out = "/";
  return out;
}

std::string merge_slashes(std::string_view p) {
  std::string out;
  out.reserve(p.size());
  for (char c : p) {
    if (c == '/' && !out.empty() && out.back() == '/') continue;
    out += c;
  }
  return out;
}

}  // namespace

Result<PathOptions> PathOptions::from_istio(std::string_view level) {
  PathOptions o;
  if (level == "NONE") {
    o.normalize = false;
    o.merge_slashes = false;
    o.backslash = Backslash::kKeep;
  } else if (level == "BASE" || level.empty() || level == "DEFAULT") {
    o.merge_slashes = false;
  } else if (level == "MERGE_SLASHES") {
  } else if (level == "DECODE_AND_MERGE_SLASHES") {
    o.escaped_slashes = EscapedSlashes::kUnescapeAndForward;
  } else {
    return make_error(Errc::kInvalidArgument,
                      "pathNormalization: \"" + std::string(level) +
                          "\" is not one of NONE, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES");
  }
  return o;
}

Result<std::string> normalize_path(std::string_view path, const PathOptions& opts) {
  if (auto r = check_raw(path, "path"); !r) return r.error();
  if (path.empty() || path[0] != '/') return bad("must start with /");

  // Envoy's order: escaped slashes, then canonicalisation, then merging.
  std::string p(path);
  if (opts.escaped_slashes != EscapedSlashes::kKeepUnchanged) {
    std::string u;
    u.reserve(p.size());
    for (size_t i = 0; i < p.size(); i++) {
      if (escaped_slash_at(p, i)) {
        if (opts.escaped_slashes == EscapedSlashes::kRejectRequest)
          return bad("contains an escaped slash (%2F or %5C)");
        u += p[i + 1] == '2' ? '/' : '\\';
        i += 2;
      } else {
        u += p[i];
      }
    }
    p = std::move(u);
  }
  if (p.find('\\') != std::string::npos) {
    if (opts.backslash == Backslash::kReject) return bad("contains a backslash");
    if (opts.backslash == Backslash::kToSlash)
      for (auto& c : p)
        if (c == '\\') c = '/';
  }
  auto esc = canonical_escapes(p, opts.normalize);
  if (!esc) return esc.error();
  p = std::move(*esc);
  if (opts.normalize) p = remove_dot_segments(p);
  if (opts.merge_slashes) p = merge_slashes(p);
  return p;
}

Result<NormalizedPath> normalize_target(std::string_view target, std::string_view method,
                                        const PathOptions& opts) {
  NormalizedPath n;
  if (target == "*") {
    if (method != "OPTIONS") return bad("\"*\" is only valid with OPTIONS");
    n.path = "*";
    return n;
  }
  std::string_view path = target;
  if (auto q = target.find('?'); q != std::string_view::npos) {
    path = target.substr(0, q);
    n.query = std::string(target.substr(q + 1));
    n.has_query = true;
    if (auto r = check_raw(n.query, "query"); !r) return r.error();
  }
  auto p = normalize_path(path, opts);
  if (!p) return p.error();
  n.path = std::move(*p);
  if (opts.escaped_slashes == EscapedSlashes::kUnescapeAndRedirect) {
    for (size_t i = 0; i < path.size() && !n.redirect; i++) n.redirect = escaped_slash_at(path, i);
  }
  return n;
}

}  // namespace warren::waypoint
