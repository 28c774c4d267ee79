// HTTP/1.1 message parsing on libhttp-parser, with the request-smuggling
// checks it is lenient about done on the raw bytes here (strict line
// endings, no obs-fold, strict field syntax, strict chunk framing, one
// framing per message). Bodies are streamed to the handler, never buffered.
// Serialising a head for an HTTP/1.1 upstream lives in http1_forward.h.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "headers.h"
#include "warren/result.h"

namespace warren::waypoint {

enum class BodyFraming { kNone, kContentLength, kChunked, kUntilClose };

struct MessageHead {
  bool request = true;
  std::string method;     // requests
  std::string target;     // requests, as received
  int status = 0;         // responses
  std::string reason;     // responses
  int version_minor = 1;  // HTTP/1.<minor>
  Headers headers;        // in order, names as received
  bool keep_alive = true;
  bool upgrade = false;  // CONNECT, Upgrade+Connection: upgrade, 101, 2xx to CONNECT
  BodyFraming framing = BodyFraming::kNone;
  uint64_t content_length = 0;  // with kContentLength
};

// Why a message was refused. Each reason maps to the status the proxy answers
// (http1_status); parse errors in responses from an upstream answer 502.
enum class Http1Reason {
  kNone,
  kBareLf,                 // LF without CR
  kBareCr,                 // CR not followed by LF
  kObsFold,                // header line continued with leading whitespace
  kInvalidStartLine,       // request line or status line syntax
  kInvalidMethod,          // a method libhttp-parser does not know (501)
  kInvalidTarget,          // control characters, spaces, non-ASCII
  kInvalidVersion,         // not HTTP/1.0 or HTTP/1.1 (505)
  kInvalidHeaderName,      // empty or non-token name
  kWhitespaceBeforeColon,  // "Name : value"
  kInvalidHeaderValue,     // NUL or control characters in a value
  kHeaderTooLarge,         // head over max_head_bytes (431)
  kTooManyHeaders,         // over max_headers (431)
  kMissingHost,            // HTTP/1.1 request without Host
  kDuplicateHost,          // more than one Host
  kContentLengthAndTransferEncoding,
  kDuplicateContentLength,      // more than one Content-Length field (even if equal)
  kInvalidContentLength,        // not 1*DIGIT
  kTransferEncodingNotChunked,  // chunked is not the final coding, or not once
  kUnsupportedTransferCoding,   // a coding other than chunked (501)
  kInvalidChunkSize,            // chunk-size line syntax
  kInvalidChunkFraming,         // missing CRLF after chunk data
  kBodyTooLarge,                // over max_body_bytes (413)
  kUnexpectedEof,               // connection closed inside a message
  kParser,                      // libhttp-parser refused it
};
const char* http1_reason_name(Http1Reason r);

struct Http1Failure {
  Http1Reason reason = Http1Reason::kNone;
  int status = 0;  // what the proxy answers (400, 413, 431, 501; 502 for responses)
  std::string detail;
};

struct Http1Limits {
  // Request/status line + header section, and separately the trailers.
  // libhttp-parser's own cap (80 KiB) still applies above this.
  size_t max_head_bytes = 60 * 1024;
  size_t max_headers = 100;     // header fields; also trailer fields
  uint64_t max_body_bytes = 0;  // 0: unlimited (bodies are streamed)
};

class Http1Handler {
 public:
  virtual ~Http1Handler() = default;
  virtual void on_head(MessageHead head) = 0;
  virtual void on_body(std::string_view data) = 0;  // a piece of the decoded body
  virtual void on_trailers(Headers trailers) {}     // chunked only, before on_complete
  virtual void on_complete() = 0;
};

class Http1Parser {
 public:
  enum class Kind { kRequest, kResponse };
  Http1Parser(Kind kind, Http1Handler& handler, Http1Limits limits = {});
  ~Http1Parser();
  Http1Parser(const Http1Parser&) = delete;
  Http1Parser& operator=(const Http1Parser&) = delete;

  // Parses as much of `data` as belongs to HTTP messages and returns how much
  // that was: all of it, unless the connection was upgraded (the rest is the
  // tunnel's) or closed (Connection: close). After an error every call fails.
  Result<size_t> feed(std::string_view data);
  // The peer closed its side: ends a read-until-close response body; an error
  // inside any other message.
  Result<void> finish();

  // feed() returns after the end of a message, leaving the next one's bytes
  // unread (a proxy answers one request before it reads the next).
  void set_one_message_per_feed(bool on);

  // Responses only: the method of the request the next response answers
  // (HEAD has no body; a 2xx to CONNECT opens a tunnel).
  void set_request_method(std::string_view method);

  bool upgraded() const;
  bool closed() const;  // no further message on this connection
  bool idle() const;    // between messages
  const Http1Failure& failure() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Status a refused message should be answered with.
int http1_status(Http1Reason r, bool request);

}  // namespace warren::waypoint
