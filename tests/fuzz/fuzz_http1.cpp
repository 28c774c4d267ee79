// HTTP/1 parsing: the first byte picks request or response, the split size
// and the limits; the rest is fed in pieces. Whatever is accepted is
// well-formed (token names, values without CR/LF/NUL), re-serialisable, and
// no more body comes out than went in.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "http1.h"
#include "http1_forward.h"

using namespace warren::waypoint;

namespace {

struct Check : Http1Handler {
  size_t heads = 0, completes = 0, body = 0;
  bool in_message = false;
  bool request = true;
  void on_head(MessageHead h) override {
    if (in_message) std::abort();
    in_message = true;
    heads++;
    for (const auto& f : h.headers) {
      if (f.name.empty()) std::abort();
      for (unsigned char c : f.name)
        if (!is_tchar(c)) std::abort();
      for (unsigned char c : f.value)
        if (c == 0 || c == '\r' || c == '\n') std::abort();
    }
    ForwardOptions o;
    o.framing = h.framing == BodyFraming::kContentLength ? BodyFraming::kContentLength
                                                         : BodyFraming::kChunked;
    o.content_length = h.content_length;
    auto s = request ? serialize_request_head(h, o) : serialize_response_head(h, o);
    if (!s.ok()) std::abort();
  }
  void on_body(std::string_view d) override {
    if (!in_message) std::abort();
    body += d.size();
  }
  void on_trailers(Headers t) override {
    if (!in_message || t.empty()) std::abort();
  }
  void on_complete() override {
    if (!in_message) std::abort();
    in_message = false;
    completes++;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  bool request = !(data[0] & 1);
  size_t step = (data[0] >> 1) & 7;  // 0: all at once
  Http1Limits limits;
  if (data[0] & 0x10) {
    limits.max_head_bytes = 256;
    limits.max_headers = 4;
    limits.max_body_bytes = 64;
  }
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  Check c;
  c.request = request;
  Http1Parser p(request ? Http1Parser::Kind::kRequest : Http1Parser::Kind::kResponse, c, limits);
  if (!request && (data[0] & 0x20)) p.set_request_method("HEAD");
  size_t consumed = 0;
  bool failed = false;
  for (size_t i = 0; i < in.size();) {
    size_t n = step ? std::min(step, in.size() - i) : in.size();
    auto r = p.feed(in.substr(i, n));
    if (!r.ok()) {
      if (p.failure().status < 400 || p.failure().status > 599) std::abort();
      failed = true;
      break;
    }
    if (*r > n) std::abort();
    consumed += *r;
    if (*r < n) {
      if (!p.upgraded() && !p.closed()) std::abort();
      break;
    }
    i += n;
  }
  if (!failed) (void)p.finish();
  if (consumed > in.size() || c.body > in.size()) std::abort();
  if (c.completes > c.heads) std::abort();
  if (limits.max_body_bytes && c.body > limits.max_body_bytes * (c.heads + 1)) std::abort();
  return 0;
}
