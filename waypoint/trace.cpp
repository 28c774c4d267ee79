#include "trace.h"

#include <algorithm>
#include <array>

namespace warren::waypoint {

namespace {

constexpr char kHex[] = "0123456789abcdef";

int lower_hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // upper case too: W3C and B3 are lower-case hex
}

// 1..16 lower-case hex digits.
bool parse_hex64(std::string_view s, uint64_t& out) {
  if (s.empty() || s.size() > 16) return false;
  uint64_t v = 0;
  for (char c : s) {
    int d = lower_hex_digit(c);
    if (d < 0) return false;
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  out = v;
  return true;
}

// 16 or 32 hex digits; 16 sets *is64.
bool parse_trace_id(std::string_view s, TraceId& id, bool* is64) {
  if (s.size() == 32) {
    if (!parse_hex64(s.substr(0, 16), id.hi) || !parse_hex64(s.substr(16), id.lo)) return false;
    if (is64) *is64 = false;
  } else if (s.size() == 16 && is64) {
    id.hi = 0;
    if (!parse_hex64(s, id.lo)) return false;
    *is64 = true;
  } else {
    return false;
  }
  return id.valid();
}

bool parse_span_id(std::string_view s, uint64_t& id) {
  return s.size() == 16 && parse_hex64(s, id) && id != 0;
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

uint64_t nonzero64(Rng& rng) {
  uint64_t v = rng.next64();
  while (v == 0) v = rng.next64();
  return v;
}

bool is_trace_header(std::string_view name) {
  static constexpr std::array<std::string_view, 8> kNames = {
      "traceparent", "tracestate",        "b3",           "x-b3-traceid",
      "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags"};
  for (auto n : kNames)
    if (iequals(name, n)) return true;
  return false;
}

}  // namespace

DefaultRng::DefaultRng() {
  std::random_device rd;
  std::seed_seq seq{rd(), rd(), rd(), rd(), rd(), rd(), rd(), rd()};
  gen_.seed(seq);
}

std::string hex16(uint64_t v) {
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) s[static_cast<size_t>(i)] = kHex[v & 15];
  return s;
}

std::string TraceId::hex() const {
  std::string s(32, '0');
  uint64_t h = hi, l = lo;
  for (size_t i = 16; i-- > 0; h >>= 4, l >>= 4) {
    s[i] = kHex[h & 15];
    s[i + 16] = kHex[l & 15];
  }
  return s;
}

std::optional<TraceContext> parse_traceparent(std::string_view v) {
  if (v.size() < 55) return std::nullopt;
  uint64_t version = 0;
  if (!parse_hex64(v.substr(0, 2), version) || version == 0xff) return std::nullopt;
  if (version == 0 && v.size() != 55) return std::nullopt;
  if (v.size() > 55 && v[55] != '-') return std::nullopt;
  if (v[2] != '-' || v[35] != '-' || v[52] != '-') return std::nullopt;
  TraceContext c;
  uint64_t flags = 0;
  if (!parse_trace_id(v.substr(3, 32), c.trace_id, nullptr)) return std::nullopt;
  if (!parse_span_id(v.substr(36, 16), c.parent_span_id)) return std::nullopt;
  if (!parse_hex64(v.substr(53, 2), flags)) return std::nullopt;
  c.sampled = (flags & 1) != 0;
  c.format = TraceFormat::kW3C;
  return c;
}

std::string sanitize_tracestate(std::string_view v) {
  for (unsigned char ch : v)
    if (ch < 0x20 || ch > 0x7e) return {};
  std::string out;
  size_t members = 0;
  while (!v.empty()) {
    size_t comma = v.find(',');
    std::string_view m = trim_ows(v.substr(0, comma));
    v = comma == std::string_view::npos ? std::string_view{} : v.substr(comma + 1);
    if (m.empty()) continue;
    if (m.find('=') == std::string_view::npos) return {};  // not key=value: drop all
    size_t need = out.size() + (out.empty() ? 0 : 1) + m.size();
    if (need > kMaxTracestate || members == 32) break;
    if (!out.empty()) out += ',';
    out.append(m);
    ++members;
  }
  return out;
}

std::optional<TraceContext> parse_b3_single(std::string_view v) {
  v = trim_ows(v);
  TraceContext c;
  c.format = TraceFormat::kB3Single;
  auto sampling = [&c](std::string_view s) {
    if (s == "1") {
      c.sampled = true;
    } else if (s == "0") {
      c.sampled = false;
    } else if (s == "d") {
      c.sampled = true;
      c.debug = true;
    } else {
      return false;
    }
    return true;
  };
  std::array<std::string_view, 4> parts;
  size_t n = 0;
  while (true) {
    size_t dash = v.find('-');
    if (n == parts.size()) return std::nullopt;
    parts[n++] = v.substr(0, dash);
    if (dash == std::string_view::npos) break;
    v.remove_prefix(dash + 1);
  }
  if (n == 1) {
    if (!sampling(parts[0])) return std::nullopt;
    return c;
  }
  if (!parse_trace_id(parts[0], c.trace_id, &c.trace_id_64bit)) return std::nullopt;
  if (!parse_span_id(parts[1], c.parent_span_id)) return std::nullopt;
  if (n >= 3 && !sampling(parts[2])) return std::nullopt;
  uint64_t grandparent = 0;  // the caller's parent: checked, not needed
  if (n == 4 && !parse_span_id(parts[3], grandparent)) return std::nullopt;
  return c;
}

std::optional<TraceContext> parse_b3_multi(const Headers& h) {
  TraceContext c;
  c.format = TraceFormat::kB3Multi;
  std::string v;
  bool any = false;
  if (header_value(h, "x-b3-flags", v)) {
    any = true;
    if (trim_ows(v) == "1") {
      c.debug = true;
      c.sampled = true;
    }
  }
  if (!c.debug && header_value(h, "x-b3-sampled", v)) {
    any = true;
    std::string_view s = trim_ows(v);
    if (s == "1" || s == "true") c.sampled = true;
    if (s == "0" || s == "false") c.sampled = false;
  }
  std::string tid, sid;
  bool has_tid = header_value(h, "x-b3-traceid", tid);
  bool has_sid = header_value(h, "x-b3-spanid", sid);
  if (has_tid || has_sid) {
    if (!has_tid || !has_sid) return std::nullopt;
    if (!parse_trace_id(trim_ows(tid), c.trace_id, &c.trace_id_64bit)) return std::nullopt;
    if (!parse_span_id(trim_ows(sid), c.parent_span_id)) return std::nullopt;
    if (header_value(h, "x-b3-parentspanid", v)) {
      uint64_t gp = 0;
      if (!parse_span_id(trim_ows(v), gp)) return std::nullopt;
    }
    return c;
  }
  if (!any || !c.sampled) return std::nullopt;
  return c;  // a bare sampling decision
}

TraceContext extract(const Headers& h) {
  std::string v;
  if (header_value(h, "traceparent", v)) {
    if (auto c = parse_traceparent(v)) {
      if (header_value(h, "tracestate", v)) c->tracestate = sanitize_tracestate(v);
      return *c;
    }
  }
  if (header_value(h, "b3", v)) {
    if (auto c = parse_b3_single(v)) return *c;
  }
  if (auto c = parse_b3_multi(h)) return *c;
  return {};
}

Span start_span(const TraceContext* parent, Rng& rng, double sampling_percent) {
  Span s;
  if (parent && parent->valid()) {
    s.trace_id = parent->trace_id;
    s.parent_span_id = parent->parent_span_id;
    s.trace_id_64bit = parent->trace_id_64bit;
    s.tracestate = parent->tracestate;
  } else {
    s.trace_id.hi = rng.next64();
    s.trace_id.lo = nonzero64(rng);
  }
  if (parent) {
    s.incoming = parent->format;
    s.debug = parent->debug;
  }
  s.span_id = nonzero64(rng);
  if (s.debug) {
    s.sampled = true;
  } else if (parent && parent->sampled) {
    s.sampled = *parent->sampled;
  } else {
    double u = static_cast<double>(rng.next64() >> 11) * 0x1.0p-53;  // [0, 1)
    s.sampled = u * 100.0 < sampling_percent;
  }
  return s;
}

void inject(Headers& h, const Span& span) {
  std::erase_if(h, [](const Header& x) { return is_trace_header(x.name); });
  std::string span_id = hex16(span.span_id);
  h.push_back({"traceparent",
               "00-" + span.trace_id.hex() + "-" + span_id + (span.sampled ? "-01" : "-00")});
  if (!span.tracestate.empty()) h.push_back({"tracestate", span.tracestate});
  std::string tid = span.trace_id_64bit ? hex16(span.trace_id.lo) : span.trace_id.hex();
  if (span.incoming == TraceFormat::kB3Multi) {
    h.push_back({"x-b3-traceid", tid});
    h.push_back({"x-b3-spanid", span_id});
    if (span.parent_span_id) h.push_back({"x-b3-parentspanid", hex16(span.parent_span_id)});
    if (span.debug) {
      h.push_back({"x-b3-flags", "1"});  // debug implies sampled: no x-b3-sampled
    } else {
      h.push_back({"x-b3-sampled", span.sampled ? "1" : "0"});
    }
  } else if (span.incoming == TraceFormat::kB3Single) {
    std::string b3 = tid + "-" + span_id + "-" + (span.debug ? "d" : span.sampled ? "1" : "0");
    if (span.parent_span_id) {
      b3 += '-';
      b3 += hex16(span.parent_span_id);
    }
    h.push_back({"b3", std::move(b3)});
  }
}

std::string new_uuid_v4(Rng& rng) {
  uint64_t a = rng.next64(), b = rng.next64();
  a = (a & ~0xF000ULL) | 0x4000ULL;                  // version 4
  b = (b & ~(0xC000ULL << 48)) | (0x8000ULL << 48);  // variant 10xx
  // 8-4-4-4-12 hex digits, written in place.
  std::string s(36, '-');
  size_t at = 0;
  auto put = [&](uint64_t v) {
    for (int shift = 60; shift >= 0; shift -= 4) {
      if (at == 8 || at == 13 || at == 18 || at == 23) ++at;
      s[at++] = kHex[(v >> shift) & 0xF];
    }
  };
  put(a);
  put(b);
  return s;
}

std::string ensure_request_id(Headers& h, Rng& rng) {
  const Header* found = nullptr;
  size_t count = 0;
  for (const auto& x : h) {
    if (iequals(x.name, "x-request-id")) {
      found = &x;
      ++count;
    }
  }
  if (count == 1 && !found->value.empty() && found->value.size() <= 128 &&
      std::all_of(found->value.begin(), found->value.end(),
                  [](unsigned char c) { return c > 0x20 && c < 0x7f; }))
    return found->value;
  std::erase_if(h, [](const Header& x) { return iequals(x.name, "x-request-id"); });
  std::string id = new_uuid_v4(rng);
  h.push_back({"x-request-id", id});
  return id;
}

}  // namespace warren::waypoint
