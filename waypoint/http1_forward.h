// Heads on their way to an HTTP/1.1 upstream (or back to an HTTP/1.1
// client): hop-by-hop fields dropped per RFC 9110 §7.6.1, framing redone,
// internal x-warren-* fields from outside stripped; and the checks a header
// list from HTTP/2 must pass before it may be written as HTTP/1.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "http1.h"

namespace warren::waypoint {

struct ForwardOptions {
  BodyFraming framing = BodyFraming::kNone;  // how the body will be written
  uint64_t content_length = 0;               // with kContentLength
  bool keep_alive = true;                    // false: "connection: close"
  bool upgrade = false;                      // keep Upgrade and say "connection: upgrade"
  bool strip_internal = true;                // drop x-warren-* (set false for our own additions)
};

// True for a field a proxy must not forward: Connection and the fields it
// names, Keep-Alive, Proxy-Connection, TE (unless exactly "trailers"),
// Transfer-Encoding, Content-Length (both re-framed), Upgrade (unless
// upgrading), and x-warren-* when stripping internal fields.
bool is_hop_by_hop(const Headers& all, const Header& h, const ForwardOptions& o);

// "GET /x HTTP/1.1\r\n" + forwarded fields + framing + "\r\n". Refuses a
// target or field that could not be written safely (CR, LF, NUL, bad name).
Result<std::string> serialize_request_head(const MessageHead& h, const ForwardOptions& o);
// The checks of serialize_request_head without writing: the size its bytes
// would have (the request header bytes of a request sent over HTTP/2).
Result<size_t> request_head_size(const MessageHead& h, const ForwardOptions& o);
Result<std::string> serialize_response_head(const MessageHead& h, const ForwardOptions& o);

// Chunked body pieces: "<hex>\r\n<data>\r\n"; the last chunk with trailers.
std::string encode_chunk(std::string_view data);
Result<std::string> encode_last_chunk(const Headers& trailers);

// A header list decoded from HTTP/2 (pseudo-headers first), checked before
// it becomes HTTP/1 (RFC 9113 §8.2): names lower-case tokens, no
// connection-specific fields, TE only "trailers", values without CR, LF or
// NUL and without leading or trailing whitespace, known pseudo-headers only
// and only before the regular fields. The error names the field and reason.
Result<void> validate_h2_headers(const Headers& h);
// One field of that check, in order (`regular_seen` carries between calls).
Result<void> validate_h2_field(const std::string& name, const std::string& value, bool& regular_seen);

}  // namespace warren::waypoint
