// Trace context and telemetry output on hostile input. The input is split at
// '\n' into header values: traceparent, tracestate, b3, x-b3-traceid,
// x-b3-spanid, x-b3-parentspanid, x-b3-sampled, x-b3-flags, x-request-id, in
// that order. Checks: what inject() writes extracts back to the same trace
// with this span as parent; header values stay free of CR/LF; tracestate is
// bounded; the access log line and the Zipkin span are valid one-line JSON
// whatever bytes the path and request id hold.
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "telemetry.h"
#include "trace.h"
#include "zipkin.h"

using namespace warren::waypoint;

namespace {
class FixedRng final : public Rng {
 public:
  uint64_t next64() override { return ++n_ * 0x9e3779b97f4a7c15ULL; }

 private:
  uint64_t n_ = 0;
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const char* kNames[] = {"traceparent",  "tracestate",  "b3",
                                 "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid",
                                 "x-b3-sampled", "x-b3-flags",  "x-request-id"};
  std::string_view in(reinterpret_cast<const char*>(data), size);
  Headers h;
  for (size_t i = 0; i < std::size(kNames) && !in.empty(); ++i) {
    size_t nl = in.find('\n');
    std::string_view v = in.substr(0, nl);
    if (!v.empty()) h.push_back({kNames[i], std::string(v)});
    in = nl == std::string_view::npos ? std::string_view{} : in.substr(nl + 1);
  }

  TraceContext c = extract(h);
  if (c.tracestate.size() > kMaxTracestate) std::abort();
  if (c.valid() && (!c.trace_id.valid() || c.parent_span_id == 0)) std::abort();
  FixedRng rng;
  Span s = start_span(&c, rng, 50.0);
  if (!s.trace_id.valid() || s.span_id == 0) std::abort();
  if (c.valid() && (s.trace_id != c.trace_id || s.parent_span_id != c.parent_span_id)) std::abort();
  Headers up = h;
  inject(up, s);
  std::string rid = ensure_request_id(up, rng);
  for (const auto& x : up)
    if (x.value.find_first_of("\r\n") != std::string::npos) std::abort();
  if (rid.empty() || rid.find_first_of("\r\n ") != std::string::npos) std::abort();
  TraceContext again = extract(up);
  if (!again.valid() || again.trace_id != s.trace_id || again.parent_span_id != s.span_id ||
      again.sampled != s.sampled || again.tracestate != s.tracestate)
    std::abort();
  if (s.incoming == TraceFormat::kB3Multi || s.incoming == TraceFormat::kB3Single) {
    Headers b3only;
    for (const auto& x : up)
      if (x.name != "traceparent" && x.name != "tracestate") b3only.push_back(x);
    TraceContext b = extract(b3only);
    if (!b.valid() || b.parent_span_id != s.span_id || b.trace_id != s.trace_id) std::abort();
  }

  RequestRecord r;
  r.path = std::string(reinterpret_cast<const char*>(data), size);
  r.request_id = rid;
  r.user_agent = h.empty() ? std::string() : h[0].value;
  r.trace_id = s.trace_id.hex();
  std::string line = access_log_json(r);
  if (line.find('\n') != std::string::npos) std::abort();
  auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) std::abort();
  std::string span = span_json(server_span(r, s, endpoint_from_address(r.path, r.path)));
  auto js = nlohmann::json::parse(span, nullptr, false);
  std::string tid = s.trace_id_64bit ? hex16(s.trace_id.lo) : s.trace_id.hex();
  if (js.is_discarded() || js["traceId"] != tid) std::abort();
  return 0;
}
