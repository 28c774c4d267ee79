#include "trace.h"

#include <catch2/catch.hpp>
#include <set>
#include <string>
#include <vector>

using namespace warren::waypoint;

namespace {

// Returns the given values in turn, then counts up from 0x1000.
class SeqRng final : public Rng {
 public:
  explicit SeqRng(std::vector<uint64_t> v = {}) : v_(std::move(v)) {}
  uint64_t next64() override { return i_ < v_.size() ? v_[i_++] : 0x1000 + n_++; }

 private:
  std::vector<uint64_t> v_;
  size_t i_ = 0;
  uint64_t n_ = 0;
};

const char* kTp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

std::string get(const Headers& h, std::string_view name) {
  std::string v;
  return header_value(h, name, v) ? v : "<absent>";
}

size_t count(const Headers& h, std::string_view name) {
  size_t n = 0;
  for (const auto& x : h) n += iequals(x.name, name);
  return n;
}

}  // namespace

TEST_CASE("traceparent version 00 parses", "[trace]") {
  auto c = parse_traceparent(kTp);
  REQUIRE(c);
  CHECK(c->trace_id.hi == 0x4bf92f3577b34da6ULL);
  CHECK(c->trace_id.lo == 0xa3ce929d0e0e4736ULL);
  CHECK(c->trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK(c->parent_span_id == 0x00f067aa0ba902b7ULL);
  CHECK(c->sampled == true);
  CHECK(c->format == TraceFormat::kW3C);
  auto u = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
  REQUIRE(u);
  CHECK(u->sampled == false);
  // Unknown flag bits are tolerated; only bit 0 is read.
  auto f = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03");
  REQUIRE(f);
  CHECK(f->sampled == true);
}

TEST_CASE("traceparent rejects malformed values", "[trace]") {
  for (const char* bad : {
           "",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",    // short
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",  // v00 with more
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",
           "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  // upper case
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
           "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
           "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  // zero trace id
           "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  // zero parent id
           "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  // version ff
           "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
           "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01,00-"
           "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
           " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
       }) {
    INFO(bad);
    CHECK_FALSE(parse_traceparent(bad));
  }
}

TEST_CASE("traceparent future versions parse by the spec's rules", "[trace]") {
  auto c = parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  REQUIRE(c);
  CHECK(c->parent_span_id == 0x00f067aa0ba902b7ULL);
  auto more =
      parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-the-future");
  REQUIRE(more);
  CHECK(more->sampled == true);
  CHECK_FALSE(parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what"));
  CHECK_FALSE(parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0"));
}

TEST_CASE("tracestate is passed on within bounds", "[trace]") {
  CHECK(sanitize_tracestate("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE") ==
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
  CHECK(sanitize_tracestate(" a=1 ,, b=2 ") == "a=1,b=2");
  CHECK(sanitize_tracestate("a=1\r\nx-evil: 1").empty());
  CHECK(sanitize_tracestate("a=1,garbage").empty());
  std::string longer;
  for (int i = 0; i < 100; ++i)
    longer += (i ? "," : "") + std::string("k") + std::to_string(i) + "=" + std::string(20, 'v');
  std::string cut = sanitize_tracestate(longer);
  CHECK(cut.size() <= kMaxTracestate);
  CHECK(cut.starts_with("k0=vvvv"));
  CHECK(longer.starts_with(cut));
  CHECK(longer[cut.size()] == ',');  // cut at a member boundary
  std::string many;
  for (int i = 0; i < 40; ++i) many += (i ? "," : "") + std::string("k") + std::to_string(i) + "=1";
  std::string kept = sanitize_tracestate(many);
  CHECK(std::count(kept.begin(), kept.end(), ',') == 31);  // 32 members at most
}

TEST_CASE("b3 single header parses", "[trace]") {
  auto c = parse_b3_single("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90");
  REQUIRE(c);
  CHECK(c->valid());
  CHECK(c->trace_id.hex() == "80f198ee56343ba864fe8b2a57d3eff7");
  CHECK(c->parent_span_id == 0xe457b5a2e4d86bd1ULL);
  CHECK(c->sampled == true);
  CHECK(c->format == TraceFormat::kB3Single);
  auto s64 = parse_b3_single("64fe8b2a57d3eff7-e457b5a2e4d86bd1");
  REQUIRE(s64);
  CHECK(s64->trace_id_64bit);
  CHECK(s64->trace_id.hi == 0);
  CHECK_FALSE(s64->sampled);
  auto d = parse_b3_single("64fe8b2a57d3eff7-e457b5a2e4d86bd1-d");
  REQUIRE(d);
  CHECK(d->debug);
  CHECK(d->sampled == true);
  auto deny = parse_b3_single("0");
  REQUIRE(deny);
  CHECK_FALSE(deny->valid());
  CHECK(deny->sampled == false);
  for (const char* bad : {"", "2", "64fe8b2a57d3eff7", "64fe8b2a57d3eff7-e457b5a2e4d86bd1-x",
                          "64fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-1",
                          "64FE8B2A57D3EFF7-e457b5a2e4d86bd1", "64fe8b2a57d3eff-e457b5a2e4d86bd1",
                          "0000000000000000-e457b5a2e4d86bd1", "64fe8b2a57d3eff7-0000000000000000",
                          "64fe8b2a57d3eff7-e457b5a2e4d86bd1-1-xyz"}) {
    INFO(bad);
    CHECK_FALSE(parse_b3_single(bad));
  }
}

TEST_CASE("b3 multi headers parse", "[trace]") {
  Headers h = {{"X-B3-TraceId", "463ac35c9f6413ad48485a3953bb6124"},
               {"X-B3-SpanId", "a2fb4a1d1a96d312"},
               {"X-B3-ParentSpanId", "0020000000000001"},
               {"X-B3-Sampled", "1"}};
  auto c = parse_b3_multi(h);
  REQUIRE(c);
  CHECK(c->trace_id.hex() == "463ac35c9f6413ad48485a3953bb6124");
  CHECK(c->parent_span_id == 0xa2fb4a1d1a96d312ULL);
  CHECK(c->sampled == true);
  CHECK(c->format == TraceFormat::kB3Multi);
  Headers flags = {{"x-b3-traceid", "48485a3953bb6124"},
                   {"x-b3-spanid", "a2fb4a1d1a96d312"},
                   {"x-b3-flags", "1"}};
  auto f = parse_b3_multi(flags);
  REQUIRE(f);
  CHECK(f->debug);
  CHECK(f->sampled == true);
  CHECK(f->trace_id_64bit);
  Headers only_sampled = {{"x-b3-sampled", "0"}};
  auto o = parse_b3_multi(only_sampled);
  REQUIRE(o);
  CHECK_FALSE(o->valid());
  CHECK(o->sampled == false);
  CHECK_FALSE(parse_b3_multi({{"x-b3-traceid", "48485a3953bb6124"}}));  // no span id
  CHECK_FALSE(
      parse_b3_multi({{"x-b3-traceid", "48485a3953bb612"}, {"x-b3-spanid", "a2fb4a1d1a96d312"}}));
  CHECK_FALSE(parse_b3_multi({{"x-b3-traceid", "48485a3953bb6124"},
                              {"x-b3-spanid", "a2fb4a1d1a96d312"},
                              {"x-b3-parentspanid", "zz"}}));
  CHECK_FALSE(parse_b3_multi({}));
}

TEST_CASE("extract prefers traceparent over b3 and ignores invalid headers", "[trace]") {
  Headers h = {{"b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"},
               {"traceparent", kTp},
               {"tracestate", "rojo=1"}};
  auto c = extract(h);
  CHECK(c.format == TraceFormat::kW3C);
  CHECK(c.trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK(c.tracestate == "rojo=1");

  Headers bad_tp = {{"traceparent", "00-xyz"},
                    {"tracestate", "rojo=1"},
                    {"x-b3-traceid", "48485a3953bb6124"},
                    {"x-b3-spanid", "a2fb4a1d1a96d312"}};
  auto b = extract(bad_tp);
  CHECK(b.format == TraceFormat::kB3Multi);
  CHECK(b.tracestate.empty());  // no valid traceparent: tracestate ignored

  Headers two_tp = {{"traceparent", kTp}, {"traceparent", kTp}};
  CHECK_FALSE(extract(two_tp).valid());
  CHECK(extract({}).format == TraceFormat::kNone);
}

TEST_CASE("start_span continues a trace and makes a new span id", "[trace]") {
  auto c = extract({{"traceparent", kTp}, {"tracestate", "rojo=1"}});
  SeqRng rng({0x1111});
  Span s = start_span(&c, rng);
  CHECK(s.trace_id == c.trace_id);
  CHECK(s.parent_span_id == 0x00f067aa0ba902b7ULL);
  CHECK(s.span_id == 0x1111);
  CHECK(s.sampled);
  CHECK(s.tracestate == "rojo=1");
}

TEST_CASE("start_span starts a new trace without a parent", "[trace]") {
  SeqRng rng({0xaaaa, 0xbbbb, 0, 0xcccc, 0});  // zero span id is skipped
  Span s = start_span(nullptr, rng, 100.0);
  CHECK(s.trace_id.hi == 0xaaaa);
  CHECK(s.trace_id.lo == 0xbbbb);
  CHECK(s.span_id == 0xcccc);
  CHECK(s.parent_span_id == 0);
  CHECK(s.sampled);  // u = 0 < 100%
  SeqRng r2({1, 2, 3, ~0ULL});
  CHECK_FALSE(start_span(nullptr, r2, 1.0).sampled);  // u ~ 1 >= 1%
  SeqRng r3({1, 2, 3, 0});
  CHECK_FALSE(start_span(nullptr, r3, 0.0).sampled);
}

TEST_CASE("start_span keeps the caller's sampling decision", "[trace]") {
  TraceContext deny;
  deny.sampled = false;
  deny.format = TraceFormat::kB3Single;
  SeqRng rng;
  Span s = start_span(&deny, rng, 100.0);
  CHECK_FALSE(s.sampled);
  CHECK(s.trace_id.valid());
  CHECK(s.incoming == TraceFormat::kB3Single);
  auto unsampled =
      extract({{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}});
  CHECK_FALSE(start_span(&unsampled, rng, 100.0).sampled);
  auto debug = extract({{"b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1-d"}});
  Span d = start_span(&debug, rng, 0.0);
  CHECK(d.sampled);
  CHECK(d.debug);
}

TEST_CASE("inject writes traceparent so upstream sees this span as parent", "[trace]") {
  auto c = extract({{"traceparent", kTp}, {"tracestate", "rojo=1"}});
  SeqRng rng({0x1234});
  Span s = start_span(&c, rng);
  Headers up = {{"Traceparent", "junk"}, {"x-b3-sampled", "1"}, {"accept", "*/*"}};
  inject(up, s);
  CHECK(get(up, "traceparent") == "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000001234-01");
  CHECK(get(up, "tracestate") == "rojo=1");
  CHECK(count(up, "traceparent") == 1);
  CHECK(count(up, "x-b3-sampled") == 0);  // W3C in: no B3 out
  CHECK(get(up, "accept") == "*/*");
  auto again = extract(up);
  CHECK(again.trace_id == s.trace_id);
  CHECK(again.parent_span_id == s.span_id);
}

TEST_CASE("inject writes B3 multi headers when B3 came in", "[trace]") {
  Headers in = {{"x-b3-traceid", "48485a3953bb6124"},
                {"x-b3-spanid", "a2fb4a1d1a96d312"},
                {"x-b3-sampled", "1"}};
  auto c = extract(in);
  SeqRng rng({0x77});
  Span s = start_span(&c, rng);
  Headers up = in;
  inject(up, s);
  CHECK(get(up, "x-b3-traceid") == "48485a3953bb6124");  // 64-bit stays 64-bit
  CHECK(get(up, "x-b3-spanid") == "0000000000000077");
  CHECK(get(up, "x-b3-parentspanid") == "a2fb4a1d1a96d312");
  CHECK(get(up, "x-b3-sampled") == "1");
  CHECK(count(up, "x-b3-traceid") == 1);
  CHECK(get(up, "traceparent") == "00-000000000000000048485a3953bb6124-0000000000000077-01");
  auto again = parse_b3_multi(up);
  REQUIRE(again);
  CHECK(again->parent_span_id == 0x77);
}

TEST_CASE("inject writes the b3 single header when it came in", "[trace]") {
  auto c = extract({{"b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d"}});
  SeqRng rng({0x99});
  Span s = start_span(&c, rng);
  Headers up;
  inject(up, s);
  CHECK(get(up, "b3") == "80f198ee56343ba864fe8b2a57d3eff7-0000000000000099-d-e457b5a2e4d86bd1");
  CHECK(get(up, "x-b3-traceid") == "<absent>");
  auto again = parse_b3_single(get(up, "b3"));
  REQUIRE(again);
  CHECK(again->debug);
  Headers multi_debug;
  Span m = s;
  m.incoming = TraceFormat::kB3Multi;
  inject(multi_debug, m);
  CHECK(get(multi_debug, "x-b3-flags") == "1");
  CHECK(get(multi_debug, "x-b3-sampled") == "<absent>");
}

TEST_CASE("x-request-id is kept when valid and generated otherwise", "[trace]") {
  SeqRng rng({0x0123456789abcdefULL, 0xfedcba9876543210ULL});
  Headers h;
  std::string id = ensure_request_id(h, rng);
  CHECK(id == "01234567-89ab-4def-bedc-ba9876543210");
  CHECK(get(h, "x-request-id") == id);
  CHECK(ensure_request_id(h, rng) == id);  // kept now

  Headers given = {{"X-Request-Id", "abc-123"}};
  CHECK(ensure_request_id(given, rng) == "abc-123");
  CHECK(given.size() == 1);

  for (Headers bad :
       {Headers{{"x-request-id", ""}}, Headers{{"x-request-id", "a b"}},
        Headers{{"x-request-id", std::string(129, 'a')}}, Headers{{"x-request-id", "a\x01"}},
        Headers{{"x-request-id", "one"}, {"x-request-id", "two"}}}) {
    std::string fresh = ensure_request_id(bad, rng);
    CHECK(count(bad, "x-request-id") == 1);
    CHECK(fresh.size() == 36);
    CHECK(get(bad, "x-request-id") == fresh);
  }
}

TEST_CASE("uuid v4 has version and variant bits", "[trace]") {
  DefaultRng rng;
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    std::string u = new_uuid_v4(rng);
    REQUIRE(u.size() == 36);
    CHECK(u[8] == '-');
    CHECK(u[13] == '-');
    CHECK(u[14] == '4');
    CHECK(u[18] == '-');
    CHECK(std::string("89ab").find(u[19]) != std::string::npos);
    CHECK(u[23] == '-');
    seen.insert(u);
  }
  CHECK(seen.size() == 100);
}
