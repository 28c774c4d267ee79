#include "h2_message.h"

#include <charconv>

namespace warren::waypoint {
namespace {

Headers to_fields(const h2::Headers& h) {
  Headers out;
  out.reserve(h.size());
  for (const auto& [k, v] : h)
    if (k.empty() || k[0] != ':') out.push_back({k, v});
  return out;
}

Result<void> check(const h2::Headers& h) {
  bool regular_seen = false;
  for (const auto& [k, v] : h)
    if (auto r = validate_h2_field(k, v, regular_seen); !r) return r;
  return {};
}

}  // namespace

Result<MessageHead> request_head_from_h2(const h2::Headers& h, bool end_stream) {
  if (auto r = check(h); !r) return r.error();
  const std::string* method = h2::find_header(h, ":method");
  const std::string* path = h2::find_header(h, ":path");
  const std::string* authority = h2::find_header(h, ":authority");
  if (h2::find_header(h, ":protocol"))
    return make_error(Errc::kProtocol, "extended CONNECT (:protocol) is not supported");
  if (h2::find_header(h, ":status")) return make_error(Errc::kProtocol, ":status in a request");
  if (!method || method->empty()) return make_error(Errc::kProtocol, "missing :method");
  if (!path || path->empty()) return make_error(Errc::kProtocol, "missing :path");
  MessageHead m;
  m.request = true;
  m.method = *method;
  m.target = *path;
  m.version_minor = 1;
  m.headers = to_fields(h);
  if (authority && !authority->empty()) {
    for (auto it = m.headers.begin(); it != m.headers.end();)
      it = it->name == "host" ? m.headers.erase(it) : it + 1;
    m.headers.insert(m.headers.begin(), Header{"host", *authority});
  }
  m.framing = end_stream ? BodyFraming::kNone : BodyFraming::kUntilClose;
  if (const std::string* cl = h2::find_header(h, "content-length")) {
    uint64_t n = 0;
    auto [p, ec] = std::from_chars(cl->data(), cl->data() + cl->size(), n);
    if (ec != std::errc() || p != cl->data() + cl->size())
      return make_error(Errc::kProtocol, "invalid content-length");
    if (!end_stream) m.framing = BodyFraming::kContentLength;
    m.content_length = n;
  }
  return m;
}

Result<MessageHead> response_head_from_h2(const h2::Headers& h, bool end_stream) {
  if (auto r = check(h); !r) return r.error();
  const std::string* st = h2::find_header(h, ":status");
  int status = 0;
  if (!st || std::from_chars(st->data(), st->data() + st->size(), status).ec != std::errc() ||
      status < 100 || status > 999)
    return make_error(Errc::kProtocol, "missing or invalid :status");
  for (const auto& [k, v] : h)
    if (!k.empty() && k[0] == ':' && k != ":status")
      return make_error(Errc::kProtocol, "request pseudo-header " + k + " in a response");
  MessageHead m;
  m.request = false;
  m.status = status;
  m.headers = to_fields(h);
  m.framing = end_stream ? BodyFraming::kNone : BodyFraming::kUntilClose;
  return m;
}

Result<Headers> trailers_from_h2(const h2::Headers& h) {
  if (auto r = check(h); !r) return r.error();
  for (const auto& [k, v] : h)
    if (!k.empty() && k[0] == ':')
      return make_error(Errc::kProtocol, "pseudo-header " + k + " in trailers");
  return to_fields(h);
}

h2::Headers h2_request_headers(const MessageHead& h, const ForwardOptions& o) {
  h2::Headers out;
  out.reserve(h.headers.size() + 4);
  std::string authority;
  header_value(h.headers, "host", authority);
  out.emplace_back(":method", h.method);
  out.emplace_back(":scheme", "http");
  out.emplace_back(":authority", authority);
  out.emplace_back(":path", h.target);
  for (const auto& f : h.headers) {
    if (iequals(f.name, "host") || is_hop_by_hop(h.headers, f, o)) continue;
    out.emplace_back(to_lower(f.name), f.value);
  }
  return out;
}

h2::Headers h2_fields(const Headers& h, const ForwardOptions& o) {
  h2::Headers out;
  out.reserve(h.size());
  for (const auto& f : h) {
    if (f.name.empty() || f.name[0] == ':' || iequals(f.name, "host") || is_hop_by_hop(h, f, o))
      continue;
    out.emplace_back(to_lower(f.name), f.value);
  }
  return out;
}

}  // namespace warren::waypoint
