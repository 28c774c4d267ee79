// Pieces of the HTTP/1 parser tested and used on their own: strict parsing of
// a complete head (no line endings but CRLF) and of field lines.
#pragma once

#include <string_view>

#include "http1.h"

namespace warren::waypoint::h1 {

inline Http1Failure fail(Http1Reason r, std::string detail) {
  return Http1Failure{r, 0, std::move(detail)};
}
inline bool ok(const Http1Failure& f) {
  return f.reason == Http1Reason::kNone;
}

// One field line without its CRLF: `name ":" OWS value OWS`.
Http1Failure parse_field_line(std::string_view line, Headers& out);

// A complete head: start line and field lines, each ending in CRLF, then the
// empty line. The caller has already refused bare CR and LF.
Http1Failure parse_head(std::string_view head, bool request, const Http1Limits& limits,
                        MessageHead& h);

// Content-Length / Transfer-Encoding / Host rules (RFC 9112 §6): sets
// h.framing and h.content_length or refuses the message.
Http1Failure check_framing(MessageHead& h, const Http1Limits& limits);

}  // namespace warren::waypoint::h1
