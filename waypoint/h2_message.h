// Between HTTP/2 header lists and the waypoint's protocol-neutral
// MessageHead: a request decoded from HTTP/2 becomes a head the routing,
// policy and telemetry code reads as it reads an HTTP/1 one (:authority as
// Host, :path as the target), and heads go back out as HTTP/2 header lists
// with hop-by-hop and internal fields left out.
#pragma once

#include "http1_forward.h"
#include "warren/h2_conn.h"
#include "warren/result.h"

namespace warren::waypoint {

// A request received over HTTP/2: checked (validate_h2_headers, :method and
// :path present, no :protocol) and turned into a head. `end_stream`: the
// HEADERS frame ended the stream (no body). Host comes from :authority (a
// host field is kept only when there is no :authority).
Result<MessageHead> request_head_from_h2(const h2::Headers& h, bool end_stream);

// A response received over HTTP/2 (:status and the regular fields).
// framing is kNone when the HEADERS frame ended the stream, else kUntilClose.
Result<MessageHead> response_head_from_h2(const h2::Headers& h, bool end_stream);

// Trailers received over HTTP/2 (pseudo-headers are refused).
Result<Headers> trailers_from_h2(const h2::Headers& h);

// The HTTP/2 header list of a request head for an upstream: :method,
// :scheme http, :authority from Host, :path, then the forwardable fields
// (is_hop_by_hop with `o`), names in lower case.
h2::Headers h2_request_headers(const MessageHead& h, const ForwardOptions& o = {});

// The regular fields of a response or trailers for an HTTP/2 peer
// (:status is added by H2Conn::submit_response).
h2::Headers h2_fields(const Headers& h, const ForwardOptions& o = {});

}  // namespace warren::waypoint
