// Strict head parsing: the checks libhttp-parser is lenient about.
#include <charconv>
#include <vector>

#include "http1_internal.h"

namespace warren::waypoint::h1 {
namespace {

bool is_ows(char c) {
  return c == ' ' || c == '\t';
}

// field-vchar / SP / HTAB; obs-text allowed. No NUL, no other controls.
bool value_char(unsigned char c) {
  return c == '\t' || (c >= 0x20 && c != 0x7f);
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

Http1Failure parse_version(std::string_view v, MessageHead& h) {
  if (v == "HTTP/1.1") {
    h.version_minor = 1;
  } else if (v == "HTTP/1.0") {
    h.version_minor = 0;
  } else {
    return fail(Http1Reason::kInvalidVersion, "unsupported version \"" + std::string(v) + "\"");
  }
  return {};
}

Http1Failure parse_request_line(std::string_view line, MessageHead& h) {
  auto sp1 = line.find(' ');
  auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
    return fail(Http1Reason::kInvalidStartLine,
                "request line is not \"method SP target SP version\"");
  auto method = line.substr(0, sp1);
  auto target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  if (method.empty()) return fail(Http1Reason::kInvalidStartLine, "empty method");
  for (unsigned char c : method)
    if (!is_tchar(c)) return fail(Http1Reason::kInvalidStartLine, "method is not a token");
  if (target.empty()) return fail(Http1Reason::kInvalidTarget, "empty request target");
  for (unsigned char c : target)
    if (c <= 0x20 || c >= 0x7f)
      return fail(Http1Reason::kInvalidTarget, "request target has a control or non-ASCII byte");
  if (auto f = parse_version(line.substr(sp2 + 1), h); !ok(f)) return f;
  h.request = true;
  h.method = std::string(method);
  h.target = std::string(target);
  return {};
}

Http1Failure parse_status_line(std::string_view line, MessageHead& h) {
  auto sp1 = line.find(' ');
  if (sp1 == std::string_view::npos)
    return fail(Http1Reason::kInvalidStartLine, "status line without status code");
  if (auto f = parse_version(line.substr(0, sp1), h); !ok(f)) return f;
  auto rest = line.substr(sp1 + 1);
  if (rest.size() < 3 || (rest.size() > 3 && rest[3] != ' '))
    return fail(Http1Reason::kInvalidStartLine, "status code is not 3 digits");
  int status = 0;
  for (int i = 0; i < 3; i++) {
    if (rest[i] < '0' || rest[i] > '9')
      return fail(Http1Reason::kInvalidStartLine, "status code is not 3 digits");
    status = status * 10 + (rest[i] - '0');
  }
  if (status < 100) return fail(Http1Reason::kInvalidStartLine, "status code below 100");
  auto reason = rest.size() > 3 ? rest.substr(4) : std::string_view{};
  for (unsigned char c : reason)
    if (!value_char(c))
      return fail(Http1Reason::kInvalidStartLine, "control byte in reason phrase");
  h.request = false;
  h.status = status;
  h.reason = std::string(reason);
  return {};
}

// Splits a comma-separated list, dropping empty elements (RFC 9110 §5.6.1).
std::vector<std::string_view> split_list(std::string_view v) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (start <= v.size()) {
    size_t comma = v.find(',', start);
    if (comma == std::string_view::npos) comma = v.size();
    auto item = trim_ows(v.substr(start, comma - start));
    if (!item.empty()) out.push_back(item);
    start = comma + 1;
  }
  return out;
}

}  // namespace

Http1Failure parse_field_line(std::string_view line, Headers& out) {
  if (!line.empty() && is_ows(line[0]))
    return fail(Http1Reason::kObsFold, "header line starts with whitespace (obs-fold)");
  auto colon = line.find(':');
  if (colon == std::string_view::npos)
    return fail(Http1Reason::kInvalidHeaderName, "header line without a colon");
  auto name = line.substr(0, colon);
  if (name.empty()) return fail(Http1Reason::kInvalidHeaderName, "empty header name");
  if (is_ows(name.back()))
    return fail(Http1Reason::kWhitespaceBeforeColon, "whitespace between header name and colon");
  for (unsigned char c : name)
    if (!is_tchar(c)) return fail(Http1Reason::kInvalidHeaderName, "header name is not a token");
  auto value = trim_ows(line.substr(colon + 1));
  for (unsigned char c : value)
    if (!value_char(c))
      return fail(Http1Reason::kInvalidHeaderValue,
                  "header " + std::string(name) + " has a NUL or control byte in its value");
  out.push_back(Header{std::string(name), std::string(value)});
  return {};
}

Http1Failure parse_head(std::string_view head, bool request, const Http1Limits& limits,
                        MessageHead& h) {
  size_t eol = head.find("\r\n");
  if (eol == std::string_view::npos) return fail(Http1Reason::kInvalidStartLine, "no start line");
  auto f = request ? parse_request_line(head.substr(0, eol), h)
                   : parse_status_line(head.substr(0, eol), h);
  if (!ok(f)) return f;
  size_t pos = eol + 2;
  while (pos < head.size()) {
    eol = head.find("\r\n", pos);
    if (eol == std::string_view::npos) return fail(Http1Reason::kBareCr, "unterminated line");
    if (eol == pos) break;  // the empty line
    if (h.headers.size() >= limits.max_headers)
      return fail(Http1Reason::kTooManyHeaders,
                  "more than " + std::to_string(limits.max_headers) + " header fields");
    if (f = parse_field_line(head.substr(pos, eol - pos), h.headers); !ok(f)) return f;
    pos = eol + 2;
  }
  return {};
}

Http1Failure check_framing(MessageHead& h, const Http1Limits& limits) {
  const Header* cl = nullptr;
  std::vector<std::string_view> codings;
  bool has_te = false;
  int hosts = 0;
  for (const auto& f : h.headers) {
    if (iequals(f.name, "content-length")) {
      if (cl) return fail(Http1Reason::kDuplicateContentLength, "more than one Content-Length");
      cl = &f;
    } else if (iequals(f.name, "transfer-encoding")) {
      has_te = true;
      for (auto c : split_list(f.value)) codings.push_back(c);
    } else if (iequals(f.name, "host")) {
      hosts++;
    }
  }
  if (h.request && hosts > 1) return fail(Http1Reason::kDuplicateHost, "more than one Host");
  if (h.request && hosts == 0 && h.version_minor == 1)
    return fail(Http1Reason::kMissingHost, "HTTP/1.1 request without Host");
  if (cl && has_te)
    return fail(Http1Reason::kContentLengthAndTransferEncoding,
                "both Content-Length and Transfer-Encoding");
  // Responses that never have a body (RFC 9112 §6.3) keep their fields but
  // the parser ignores them; the framing checks above still apply.
  if (has_te) {
    if (h.version_minor == 0)
      return fail(Http1Reason::kTransferEncodingNotChunked, "Transfer-Encoding in HTTP/1.0");
    if (codings.empty() || !iequals(codings.back(), "chunked"))
      return fail(Http1Reason::kTransferEncodingNotChunked,
                  "Transfer-Encoding does not end with chunked");
    for (size_t i = 0; i + 1 < codings.size(); i++) {
      if (iequals(codings[i], "chunked"))
        return fail(Http1Reason::kTransferEncodingNotChunked, "chunked applied more than once");
      return fail(Http1Reason::kUnsupportedTransferCoding,
                  "unsupported transfer-coding \"" + std::string(codings[i]) + "\"");
    }
    h.framing = BodyFraming::kChunked;
    return {};
  }
  if (cl) {
    auto v = std::string_view(cl->value);
    uint64_t n = 0;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (v.empty() || ec != std::errc() || p != v.data() + v.size() || v.size() > 19)
      return fail(Http1Reason::kInvalidContentLength,
                  "Content-Length \"" + cl->value + "\" is not a decimal number");
    if (limits.max_body_bytes && n > limits.max_body_bytes)
      return fail(Http1Reason::kBodyTooLarge, "Content-Length " + cl->value +
                                                  " over the limit of " +
                                                  std::to_string(limits.max_body_bytes));
    h.framing = n ? BodyFraming::kContentLength : BodyFraming::kNone;
    h.content_length = n;
    return {};
  }
  h.framing = h.request ? BodyFraming::kNone : BodyFraming::kUntilClose;
  return {};
}

}  // namespace warren::waypoint::h1

namespace warren::waypoint {

const char* http1_reason_name(Http1Reason r) {
  switch (r) {
    case Http1Reason::kNone:
      return "none";
    case Http1Reason::kBareLf:
      return "bare_lf";
    case Http1Reason::kBareCr:
      return "bare_cr";
    case Http1Reason::kObsFold:
      return "obs_fold";
    case Http1Reason::kInvalidStartLine:
      return "invalid_start_line";
    case Http1Reason::kInvalidMethod:
      return "invalid_method";
    case Http1Reason::kInvalidTarget:
      return "invalid_target";
    case Http1Reason::kInvalidVersion:
      return "invalid_version";
    case Http1Reason::kInvalidHeaderName:
      return "invalid_header_name";
    case Http1Reason::kWhitespaceBeforeColon:
      return "whitespace_before_colon";
    case Http1Reason::kInvalidHeaderValue:
      return "invalid_header_value";
    case Http1Reason::kHeaderTooLarge:
      return "header_too_large";
    case Http1Reason::kTooManyHeaders:
      return "too_many_headers";
    case Http1Reason::kMissingHost:
      return "missing_host";
    case Http1Reason::kDuplicateHost:
      return "duplicate_host";
    case Http1Reason::kContentLengthAndTransferEncoding:
      return "content_length_and_transfer_encoding";
    case Http1Reason::kDuplicateContentLength:
      return "duplicate_content_length";
    case Http1Reason::kInvalidContentLength:
      return "invalid_content_length";
    case Http1Reason::kTransferEncodingNotChunked:
      return "transfer_encoding_not_chunked";
    case Http1Reason::kUnsupportedTransferCoding:
      return "unsupported_transfer_coding";
    case Http1Reason::kInvalidChunkSize:
      return "invalid_chunk_size";
    case Http1Reason::kInvalidChunkFraming:
      return "invalid_chunk_framing";
    case Http1Reason::kBodyTooLarge:
      return "body_too_large";
    case Http1Reason::kUnexpectedEof:
      return "unexpected_eof";
    case Http1Reason::kParser:
      return "parser";
  }
  return "unknown";
}

int http1_status(Http1Reason r, bool request) {
  if (!request) return 502;  // an upstream's bad response
  switch (r) {
    case Http1Reason::kNone:
      return 0;
    case Http1Reason::kHeaderTooLarge:
    case Http1Reason::kTooManyHeaders:
      return 431;
    case Http1Reason::kBodyTooLarge:
      return 413;
    case Http1Reason::kUnsupportedTransferCoding:
    case Http1Reason::kInvalidMethod:
      return 501;
    case Http1Reason::kInvalidVersion:
      return 505;
    default:
      return 400;
  }
}

}  // namespace warren::waypoint
