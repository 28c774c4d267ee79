// Trace context propagation: W3C trace context (traceparent, tracestate), B3
// (multi x-b3-* headers and the single `b3` header), and x-request-id.
//
// Per request the proxy does:
//   TraceContext in = extract(req.headers);          // what the caller sent
//   Span span = start_span(&in, rng, sampling_pct);  // this hop's span
//   inject(upstream_headers, span);                  // upstream sees span as parent
//   std::string rid = ensure_request_id(upstream_headers, rng);
// and, if span.sampled, exports a Zipkin span with span's ids (zipkin.h).
//
// Everything here is pure: randomness comes from the Rng passed in.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>

#include "headers.h"

namespace warren::waypoint {

// Random source (a seam: tests pass a fixed sequence).
class Rng {
 public:
  virtual ~Rng() = default;
  virtual uint64_t next64() = 0;
};

// mt19937_64 seeded from std::random_device. Not thread-safe: one per worker.
class DefaultRng final : public Rng {
 public:
  DefaultRng();
  uint64_t next64() override { return gen_(); }

 private:
  std::mt19937_64 gen_;
};

struct TraceId {
  uint64_t hi = 0, lo = 0;
  bool valid() const { return hi != 0 || lo != 0; }
  std::string hex() const;  // 32 lower-case hex digits
  bool operator==(const TraceId&) const = default;
};

std::string hex16(uint64_t v);  // 16 lower-case hex digits

enum class TraceFormat { kNone, kW3C, kB3Multi, kB3Single };

// What the downstream sent. `valid()` is false when no usable ids came (then
// `sampled` may still carry a bare B3 sampling decision such as `b3: 0`).
struct TraceContext {
  TraceId trace_id;
  uint64_t parent_span_id = 0;  // the caller's span id: our span's parent
  std::optional<bool> sampled;  // nullopt: caller made no decision
  bool debug = false;           // B3 x-b3-flags: 1 / `b3: ...-d`
  bool trace_id_64bit = false;  // B3 with a 16-hex trace id (echoed as such)
  std::string tracestate;       // W3C tracestate to pass on ("" if none)
  TraceFormat format = TraceFormat::kNone;
  bool valid() const { return trace_id.valid() && parent_span_id != 0; }
};

// This hop's span: what inject() writes and what a Zipkin span records.
struct Span {
  TraceId trace_id;
  uint64_t span_id = 0;
  uint64_t parent_span_id = 0;  // 0: root span (no parent)
  bool sampled = false;
  bool debug = false;
  bool trace_id_64bit = false;
  std::string tracestate;
  TraceFormat incoming = TraceFormat::kNone;  // B3 headers are written when B3 came in
};
using SpanIds = Span;

// Longest tracestate passed on (W3C: propagate at least 512 characters;
// longer lists are cut at a list-member boundary).
inline constexpr size_t kMaxTracestate = 512;

// traceparent: "00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>",
// lower-case hex only. Version 00 must be exactly 55 characters; a higher
// version (not ff) may carry more after a '-', which is ignored, and only its
// sampled flag is used. All-zero trace or parent ids are invalid.
std::optional<TraceContext> parse_traceparent(std::string_view v);
// tracestate (several headers already joined with ','): list members that fit
// in kMaxTracestate, from the left; "" if any byte is outside 0x20..0x7e.
std::string sanitize_tracestate(std::string_view v);
// `b3` single header: "<trace>-<span>[-<sampling>[-<parent>]]" or a bare
// sampling decision "0" / "1" / "d". Trace id 16 or 32 hex, span id 16 hex.
std::optional<TraceContext> parse_b3_single(std::string_view v);
// x-b3-traceid, x-b3-spanid, x-b3-parentspanid, x-b3-sampled, x-b3-flags.
std::optional<TraceContext> parse_b3_multi(const Headers& h);

// traceparent wins over b3, b3 over x-b3-*. Invalid headers are ignored (a
// new trace starts), and so is tracestate without a valid traceparent.
TraceContext extract(const Headers& h);

// A new span id, child of `parent` when it is valid; otherwise a new trace
// (keeping a bare sampling decision if the caller sent one). When the caller
// made no decision, `sampling_percent` (Istio's default 1%) decides.
Span start_span(const TraceContext* parent, Rng& rng, double sampling_percent = 1.0);

// Removes any traceparent, tracestate, b3 and x-b3-* headers, then writes
// traceparent (and tracestate) for `span`, and B3 headers when the request
// came with B3: x-b3-* when it came with x-b3-*, `b3` when it came with `b3`.
void inject(Headers& h, const Span& span);

// A random (version 4) UUID: "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".
std::string new_uuid_v4(Rng& rng);
// x-request-id: kept when present once and valid (1..128 bytes of visible
// ASCII), otherwise replaced by a new UUID v4. Returns the id in use.
std::string ensure_request_id(Headers& h, Rng& rng);

}  // namespace warren::waypoint
