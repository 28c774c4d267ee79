// The HTTP/1 driver: heads are buffered (bounded) and checked strictly
// (http1_head.cpp) before libhttp-parser sees them; bodies go straight
// through libhttp-parser, and the chunk framing between the body pieces it
// reports is checked here byte by byte.
#include "http1.h"

#include <http_parser.h>

#include <algorithm>

#include "http1_internal.h"

namespace warren::waypoint {

using h1::fail;
using h1::ok;

struct Http1Parser::Impl {
  enum class State { kHead, kBody, kUpgraded, kClosed, kFailed };
  // Chunk framing seen between body pieces (RFC 9112 §7.1).
  enum class Chunk {
    kSize,
    kExt,
    kSizeLf,
    kDataCr,
    kDataLf,
    kLineStart,
    kLine,
    kLineLf,
    kLastLf,
    kDone
  };

  Kind kind;
  Http1Handler& handler;
  Http1Limits limits;
  http_parser parser{};
  http_parser_settings settings{};
  State state = State::kHead;
  uint64_t messages = 0;     // completed, for set_one_message_per_feed
  bool one_message = false;
  Http1Failure failure;

  std::string head;  // the head being buffered
  bool last_cr = false;
  MessageHead cur;  // framing of the message in progress
  std::string request_method;
  uint64_t body_bytes = 0;

  Chunk chunk = Chunk::kSize;
  int chunk_digits = 0;
  bool chunk_nonzero = false;
  std::string trailer_line;
  size_t trailer_bytes = 0;
  Headers trailers;

  const char* gap = nullptr;  // first unscanned byte of the buffer being executed

  Impl(Kind k, Http1Handler& h, Http1Limits l) : kind(k), handler(h), limits(l) {
    http_parser_settings_init(&settings);
    settings.on_headers_complete = [](http_parser* p) {
      return static_cast<Impl*>(p->data)->on_headers_complete();
    };
    settings.on_body = [](http_parser* p, const char* at, size_t n) {
      return static_cast<Impl*>(p->data)->on_body(at, n);
    };
    settings.on_chunk_header = [](http_parser* p) {
      return static_cast<Impl*>(p->data)->on_chunk_header();
    };
    settings.on_message_complete = [](http_parser* p) {
      http_parser_pause(p, 1);  // feed() finishes the message where it ended
      return 0;
    };
    http_parser_init(&parser, kind == Kind::kRequest ? HTTP_REQUEST : HTTP_RESPONSE);
    parser.data = this;
  }

  Error set_failure(Http1Failure f) {
    f.status = http1_status(f.reason, kind == Kind::kRequest);
    failure = std::move(f);
    state = State::kFailed;
    return make_error(Errc::kProtocol, std::string("http1: ") + http1_reason_name(failure.reason) +
                                           ": " + failure.detail);
  }

  bool no_body_response() const {
    return cur.status / 100 == 1 || cur.status == 204 || cur.status == 304 ||
           request_method == "HEAD" || (request_method == "CONNECT" && cur.status / 100 == 2);
  }

  int on_headers_complete() {
    cur.keep_alive = http_should_keep_alive(&parser) != 0;
    if (kind == Kind::kResponse && request_method == "CONNECT" && cur.status / 100 == 2) {
      cur.upgrade = true;
      return 2;  // no body, the rest is the tunnel's
    }
    cur.upgrade = parser.upgrade != 0;
    if (kind == Kind::kResponse && no_body_response()) return 1;
    return 0;
  }

  int on_chunk_header() {
    if (limits.max_body_bytes && parser.content_length > limits.max_body_bytes - body_bytes) {
      failure = fail(Http1Reason::kBodyTooLarge,
                     "chunked body over the limit of " + std::to_string(limits.max_body_bytes));
      return 1;
    }
    return 0;
  }

  int on_body(const char* at, size_t n) {
    if (!scan_gap(at)) return 1;
    gap = at + n;
    body_bytes += n;
    if (limits.max_body_bytes && body_bytes > limits.max_body_bytes) {
      failure = fail(Http1Reason::kBodyTooLarge,
                     "body over the limit of " + std::to_string(limits.max_body_bytes));
      return 1;
    }
    handler.on_body(std::string_view(at, n));
    return 0;
  }

  // Checks the framing bytes [gap, end) of a chunked body.
  bool scan_gap(const char* end) {
    if (cur.framing != BodyFraming::kChunked) return true;
    for (const char* p = gap; p < end; p++)
      if (!chunk_byte(static_cast<unsigned char>(*p))) return false;
    gap = end;
    return true;
  }

  bool chunk_fail(Http1Reason r, std::string d) {
    failure = fail(r, std::move(d));
    return false;
  }

  bool chunk_byte(unsigned char c) {
    switch (chunk) {
      case Chunk::kSize: {
        bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        if (hex) {
          if (++chunk_digits > 15)  // libhttp-parser overflows at 16
            return chunk_fail(Http1Reason::kInvalidChunkSize, "chunk size too long");
          chunk_nonzero |= c != '0';
          return true;
        }
        if (chunk_digits == 0)
          return chunk_fail(Http1Reason::kInvalidChunkSize, "chunk size is not hex");
        if (c == ';')
          chunk = Chunk::kExt;
        else if (c == '\r')
          chunk = Chunk::kSizeLf;
        else
          return chunk_fail(Http1Reason::kInvalidChunkSize, "invalid byte after chunk size");
        return true;
      }
      case Chunk::kExt:
        if (c == '\r')
          chunk = Chunk::kSizeLf;
        else if (c == '\n')
          return chunk_fail(Http1Reason::kBareLf, "bare LF in chunk extension");
        else if (c != '\t' && (c < 0x20 || c == 0x7f))
          return chunk_fail(Http1Reason::kInvalidChunkSize, "control byte in chunk extension");
        return true;
      case Chunk::kSizeLf:
        if (c != '\n') return chunk_fail(Http1Reason::kBareCr, "CR without LF after chunk size");
        chunk = chunk_nonzero ? Chunk::kDataCr : Chunk::kLineStart;
        chunk_digits = 0;
        chunk_nonzero = false;
        return true;
      case Chunk::kDataCr:
        if (c != '\r')
          return chunk_fail(Http1Reason::kInvalidChunkFraming, "no CRLF after chunk data");
        chunk = Chunk::kDataLf;
        return true;
      case Chunk::kDataLf:
        if (c != '\n')
          return chunk_fail(Http1Reason::kInvalidChunkFraming, "no CRLF after chunk data");
        chunk = Chunk::kSize;
        return true;
      case Chunk::kLineStart:
        if (c == '\r') {
          chunk = Chunk::kLastLf;
          return true;
        }
        chunk = Chunk::kLine;
        [[fallthrough]];
      case Chunk::kLine:
        if (c == '\r') {
          chunk = Chunk::kLineLf;
          return true;
        }
        if (c == '\n') return chunk_fail(Http1Reason::kBareLf, "bare LF in trailers");
        if (++trailer_bytes > limits.max_head_bytes)
          return chunk_fail(Http1Reason::kHeaderTooLarge, "trailers over the size limit");
        trailer_line += static_cast<char>(c);
        return true;
      case Chunk::kLineLf: {
        if (c != '\n') return chunk_fail(Http1Reason::kBareCr, "CR without LF in trailers");
        if (trailers.size() >= limits.max_headers)
          return chunk_fail(Http1Reason::kTooManyHeaders, "too many trailer fields");
        auto f = h1::parse_field_line(trailer_line, trailers);
        trailer_line.clear();
        if (!ok(f)) {
          failure = std::move(f);
          return false;
        }
        chunk = Chunk::kLineStart;
        return true;
      }
      case Chunk::kLastLf:
        if (c != '\n') return chunk_fail(Http1Reason::kBareCr, "CR without LF after trailers");
        chunk = Chunk::kDone;
        return true;
      case Chunk::kDone:
        return chunk_fail(Http1Reason::kInvalidChunkFraming, "bytes after the last chunk");
    }
    return false;
  }

  void start_message() {
    cur = MessageHead{};
    body_bytes = 0;
    chunk = Chunk::kSize;
    chunk_digits = 0;
    chunk_nonzero = false;
    trailer_line.clear();
    trailer_bytes = 0;
    trailers.clear();
  }

  // The message ended where libhttp-parser paused.
  void complete_message() {
    if (!trailers.empty()) handler.on_trailers(std::move(trailers));
    ++messages;
    handler.on_complete();
    request_method.clear();
    http_parser_pause(&parser, 0);
    if (cur.upgrade)
      state = State::kUpgraded;
    else if (!cur.keep_alive)
      state = State::kClosed;
    else
      state = State::kHead;
    start_message();
  }

  Error parser_error() {
    if (!ok(failure)) return set_failure(failure);
    auto e = HTTP_PARSER_ERRNO(&parser);
    Http1Reason r = e == HPE_INVALID_METHOD       ? Http1Reason::kInvalidMethod
                    : e == HPE_INVALID_CHUNK_SIZE ? Http1Reason::kInvalidChunkSize
                    : e == HPE_HEADER_OVERFLOW    ? Http1Reason::kHeaderTooLarge
                    : e == HPE_INVALID_URL        ? Http1Reason::kInvalidTarget
                                                  : Http1Reason::kParser;
    return set_failure(fail(r, http_errno_description(e)));
  }

  // Consumes head bytes from data; returns how many.
  Result<size_t> feed_head(std::string_view data);
  Result<size_t> feed_body(std::string_view data);
};

Result<size_t> Http1Parser::Impl::feed_head(std::string_view data) {
  size_t i = 0;
  const size_t len = data.size();
  while (i < len) {
    char c = data[i];
    if (c != '\r' && c != '\n') {
      if (last_cr) return set_failure(fail(Http1Reason::kBareCr, "CR without LF in head"));
      // A run of ordinary bytes is taken at once.
      size_t j = i + 1;
      while (j < len && data[j] != '\r' && data[j] != '\n') j++;
      if (head.size() + (j - i) > limits.max_head_bytes)
        return set_failure(fail(Http1Reason::kHeaderTooLarge,
                                "head over " + std::to_string(limits.max_head_bytes) + " bytes"));
      head.append(data.data() + i, j - i);
      i = j;
      continue;
    }
    if (last_cr && c != '\n')
      return set_failure(fail(Http1Reason::kBareCr, "CR without LF in head"));
    if (c == '\n' && !last_cr) return set_failure(fail(Http1Reason::kBareLf, "bare LF in head"));
    last_cr = c == '\r';
    i++;
    // Empty lines before a start line are skipped (RFC 9112 §2.2).
    if (head.empty()) continue;
    if (head.size() >= limits.max_head_bytes)
      return set_failure(fail(Http1Reason::kHeaderTooLarge,
                              "head over " + std::to_string(limits.max_head_bytes) + " bytes"));
    head += c;
    size_t n = head.size();
    if (c == '\n' && n >= 4 && head.compare(n - 4, 4, "\r\n\r\n") == 0) break;
  }
  size_t n = head.size();
  if (n < 4 || head.compare(n - 4, 4, "\r\n\r\n") != 0) return i;  // need more

  bool request = kind == Kind::kRequest;
  if (auto f = h1::parse_head(head, request, limits, cur); !ok(f)) return set_failure(f);
  if (auto f = h1::check_framing(cur, limits); !ok(f)) return set_failure(f);
  if (!request && no_body_response()) cur.framing = BodyFraming::kNone;

  size_t done = http_parser_execute(&parser, &settings, head.data(), head.size());
  auto e = HTTP_PARSER_ERRNO(&parser);
  if (e != HPE_OK && e != HPE_PAUSED) return parser_error();
  if (done != head.size() && e != HPE_PAUSED) return parser_error();
  head.clear();
  if (cur.upgrade && (!request || cur.method == "CONNECT")) cur.framing = BodyFraming::kNone;
  handler.on_head(cur);
  if (e == HPE_PAUSED)
    complete_message();
  else
    state = State::kBody;
  return i;
}

Result<size_t> Http1Parser::Impl::feed_body(std::string_view data) {
  gap = data.data();
  size_t done = http_parser_execute(&parser, &settings, data.data(), data.size());
  auto e = HTTP_PARSER_ERRNO(&parser);
  if (e != HPE_OK && e != HPE_PAUSED) {
    // Our framing check of the bytes up to and including the one the parser
    // stopped at names the reason more precisely than the parser's errno.
    if (ok(failure)) scan_gap(data.data() + std::min(done + 1, data.size()));
    return parser_error();
  }
  if (!scan_gap(data.data() + done)) return set_failure(failure);
  if (e == HPE_PAUSED) {
    if (cur.framing == BodyFraming::kChunked && chunk != Chunk::kDone)
      return set_failure(fail(Http1Reason::kInvalidChunkFraming, "chunked body ended early"));
    complete_message();
  }
  return done;
}

Http1Parser::Http1Parser(Kind kind, Http1Handler& handler, Http1Limits limits)
    : impl_(std::make_unique<Impl>(kind, handler, limits)) {}
Http1Parser::~Http1Parser() = default;

Result<size_t> Http1Parser::feed(std::string_view data) {
  auto& m = *impl_;
  size_t pos = 0;
  const uint64_t before = m.messages;
  while (pos < data.size()) {
    using S = Impl::State;
    if (m.state == S::kFailed) return m.set_failure(m.failure);
    if (m.state == S::kUpgraded || m.state == S::kClosed) break;
    if (m.one_message && m.messages != before) break;
    auto r = m.state == S::kHead ? m.feed_head(data.substr(pos)) : m.feed_body(data.substr(pos));
    if (!r) return r.error();
    pos += *r;
  }
  if (m.state == Impl::State::kFailed) return m.set_failure(m.failure);
  return pos;
}

Result<void> Http1Parser::finish() {
  auto& m = *impl_;
  using S = Impl::State;
  if (m.state == S::kFailed) return m.set_failure(m.failure);
  if (m.state == S::kHead) {
    if (!m.head.empty())
      return m.set_failure(fail(Http1Reason::kUnexpectedEof, "closed inside a head"));
    m.state = S::kClosed;
    return {};
  }
  if (m.state == S::kBody) {
    if (m.cur.framing != BodyFraming::kUntilClose)
      return m.set_failure(fail(Http1Reason::kUnexpectedEof, "closed inside a body"));
    http_parser_execute(&m.parser, &m.settings, nullptr, 0);
    auto e = HTTP_PARSER_ERRNO(&m.parser);
    if (e != HPE_OK && e != HPE_PAUSED) return m.parser_error();
    m.complete_message();
    m.state = S::kClosed;
  }
  return {};
}

void Http1Parser::set_one_message_per_feed(bool on) { impl_->one_message = on; }

void Http1Parser::set_request_method(std::string_view method) {
  impl_->request_method = method;
}
bool Http1Parser::upgraded() const {
  return impl_->state == Impl::State::kUpgraded;
}
bool Http1Parser::closed() const {
  return impl_->state == Impl::State::kClosed;
}
bool Http1Parser::idle() const {
  return impl_->state == Impl::State::kHead && impl_->head.empty();
}
const Http1Failure& Http1Parser::failure() const {
  return impl_->failure;
}

}  // namespace warren::waypoint
