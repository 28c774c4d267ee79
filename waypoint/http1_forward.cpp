#include "http1_forward.h"

#include <charconv>
#include <cstdio>

namespace warren::waypoint {
namespace {

bool list_contains(std::string_view list, std::string_view token) {
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string_view::npos) comma = list.size();
    auto item = list.substr(start, comma - start);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (iequals(item, token)) return true;
    start = comma + 1;
  }
  return false;
}

bool named_by_connection(const Headers& all, std::string_view name) {
  for (const auto& f : all)
    if (iequals(f.name, "connection") && list_contains(f.value, name)) return true;
  return false;
}

Result<void> check_field(const Header& f) {
  if (f.name.empty()) return make_error(Errc::kInvalidArgument, "header with an empty name");
  for (unsigned char c : f.name)
    if (!is_tchar(c))
      return make_error(Errc::kInvalidArgument, "header \"" + f.name + "\": name is not a token");
  for (unsigned char c : f.value)
    if (c == 0 || c == '\r' || c == '\n')
      return make_error(Errc::kInvalidArgument, "header " + f.name + ": CR, LF or NUL in value");
  return {};
}

// Writes the fields of h (without hop-by-hop ones) and the framing lines to
// `out`, or with out == nullptr only checks them and counts the bytes.
Result<size_t> write_fields(std::string* out, const MessageHead& h, const ForwardOptions& o) {
  size_t n = 0;
  auto put = [&](std::string_view s) {
    n += s.size();
    if (out) out->append(s);
  };
  for (const auto& f : h.headers) {
    if (is_hop_by_hop(h.headers, f, o)) continue;
    if (auto r = check_field(f); !r) return r.error();
    put(f.name);
    put(": ");
    put(f.value);
    put("\r\n");
  }
  if (o.framing == BodyFraming::kContentLength) {
    char len[24];
    auto end = std::to_chars(len, len + sizeof len, o.content_length).ptr;
    put("content-length: ");
    put(std::string_view(len, static_cast<size_t>(end - len)));
    put("\r\n");
  } else if (o.framing == BodyFraming::kChunked) {
    put("transfer-encoding: chunked\r\n");
  }
  if (o.upgrade)
    put("connection: upgrade\r\n");
  else if (!o.keep_alive)
    put("connection: close\r\n");
  put("\r\n");
  return n;
}

Result<void> check_request_line(const MessageHead& h) {
  for (unsigned char c : h.method)
    if (!is_tchar(c)) return make_error(Errc::kInvalidArgument, "method is not a token");
  if (h.method.empty() || h.target.empty())
    return make_error(Errc::kInvalidArgument, "empty method or target");
  for (unsigned char c : h.target)
    if (c <= 0x20 || c == 0x7f)
      return make_error(Errc::kInvalidArgument, "target has a space or control byte");
  return {};
}

}  // namespace

bool is_hop_by_hop(const Headers& all, const Header& h, const ForwardOptions& o) {
  const std::string_view n = h.name;
  switch (n.size()) {  // the fixed names, by length first (this runs per field per request)
    case 2:
      if (iequals(n, "te")) return !iequals(h.value, "trailers");
      break;
    case 7:
      if (iequals(n, "upgrade")) return !o.upgrade;
      break;
    case 10:
      if (iequals(n, "connection") || iequals(n, "keep-alive")) return true;
      break;
    case 14:
      if (iequals(n, "content-length")) return true;
      break;
    case 16:
      if (iequals(n, "proxy-connection")) return true;
      break;
    case 17:
      if (iequals(n, "transfer-encoding")) return true;
      break;
    default:
      break;
  }
  if (o.strip_internal && istarts_with(n, "x-warren-")) return true;
  // A field named by Connection, except those the proxy itself vouches for:
  // `Connection: x-forwarded-for` must not strip what the proxy adds.
  if (iequals(n, "host") || istarts_with(n, "x-forwarded-") || iequals(n, "x-request-id") ||
      istarts_with(n, "x-warren-") || iequals(n, "traceparent") || iequals(n, "b3") ||
      istarts_with(n, "x-b3-"))
    return false;
  return named_by_connection(all, n);
}

Result<std::string> serialize_request_head(const MessageHead& h, const ForwardOptions& o) {
  if (auto r = check_request_line(h); !r) return r.error();
  std::string out;
  out.reserve(512);
  out += h.method;
  out += ' ';
  out += h.target;
  out += " HTTP/1.1\r\n";
  if (auto r = write_fields(&out, h, o); !r) return r.error();
  return out;
}

Result<size_t> request_head_size(const MessageHead& h, const ForwardOptions& o) {
  if (auto r = check_request_line(h); !r) return r.error();
  auto n = write_fields(nullptr, h, o);
  if (!n) return n.error();
  return h.method.size() + 1 + h.target.size() + sizeof(" HTTP/1.1\r\n") - 1 + *n;
}

Result<std::string> serialize_response_head(const MessageHead& h, const ForwardOptions& o) {
  if (h.status < 100 || h.status > 999) return make_error(Errc::kInvalidArgument, "bad status");
  for (unsigned char c : h.reason)
    if (c < 0x20 && c != '\t') return make_error(Errc::kInvalidArgument, "control byte in reason");
  std::string out = "HTTP/1.1 " + std::to_string(h.status) + " " + h.reason + "\r\n";
  if (auto r = write_fields(&out, h, o); !r) return r.error();
  return out;
}

std::string encode_chunk(std::string_view data) {
  if (data.empty()) return {};  // a zero-size chunk would end the body
  char size[20];
  int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  std::string out;
  out.reserve(n + data.size() + 2);
  out.append(size, n);
  out.append(data);
  out += "\r\n";
  return out;
}

Result<std::string> encode_last_chunk(const Headers& trailers) {
  std::string out = "0\r\n";
  for (const auto& f : trailers) {
    if (auto r = check_field(f); !r) return r.error();
    out += f.name + ": " + f.value + "\r\n";
  }
  out += "\r\n";
  return out;
}

Result<void> validate_h2_field(const std::string& name, const std::string& value, bool& regular_seen) {
  auto bad = [&](const std::string& why) {
    return make_error(Errc::kProtocol, "header \"" + name + "\": " + why);
  };
  if (name.empty()) return bad("empty name");
  if (name[0] == ':') {
    if (regular_seen) return bad("pseudo-header after regular headers");
    if (name != ":method" && name != ":path" && name != ":scheme" && name != ":authority" &&
        name != ":protocol" && name != ":status")
      return bad("unknown pseudo-header");
  } else {
    regular_seen = true;
    for (unsigned char c : name) {
      if (c >= 'A' && c <= 'Z') return bad("upper-case name");
      if (!is_tchar(c)) return bad("name is not a token");
    }
    if (name == "connection" || name == "keep-alive" || name == "proxy-connection" ||
        name == "transfer-encoding" || name == "upgrade")
      return bad("connection-specific header");
    if (name == "te" && value != "trailers") return bad("TE other than \"trailers\"");
  }
  for (unsigned char c : value)
    if (c == 0 || c == '\r' || c == '\n') return bad("CR, LF or NUL in value");
  if (!value.empty() && (value.front() == ' ' || value.front() == '\t' || value.back() == ' ' ||
                         value.back() == '\t'))
    return bad("leading or trailing whitespace in value");
  return {};
}

Result<void> validate_h2_headers(const Headers& h) {
  bool regular_seen = false;
  for (const auto& f : h)
    if (auto r = validate_h2_field(f.name, f.value, regular_seen); !r) return r;
  return {};
}

}  // namespace warren::waypoint
