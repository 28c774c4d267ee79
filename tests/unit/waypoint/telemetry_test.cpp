#include "telemetry.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace warren::waypoint;
using nlohmann::json;
namespace metrics = warren::metrics;

namespace {

RequestRecord sample() {
  RequestRecord r;
  r.start = std::chrono::system_clock::time_point(std::chrono::milliseconds(1714566896789));
  r.duration = std::chrono::microseconds(3200);
  r.upstream_service_time = std::chrono::microseconds(2900);
  r.method = "GET";
  r.path = "/reviews/0?x=1";
  r.authority = "reviews:9080";
  r.protocol = "HTTP/1.1";
  r.request_header_bytes = 120;
  r.request_body_bytes = 0;
  r.response_header_bytes = 80;
  r.response_body_bytes = 300;
  r.response_code = 200;
  r.response_code_details = "via_upstream";
  r.source = {"productpage-v1",
              "default",
              "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
              "productpage",
              "v1",
              "productpage",
              "v1",
              "",
              "10.0.0.5:41000"};
  auto& d = r.destination;
  d.service_host = "reviews.default.svc.cluster.local";
  d.service_name = "reviews";
  d.service_namespace = "default";
  d.workload = "reviews-v2";
  d.namespace_ = "default";
  d.principal = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews";
  d.canonical_service = "reviews";
  d.canonical_revision = "v2";
  d.upstream_cluster = "outbound|9080|v2|reviews.default.svc.cluster.local";
  d.upstream_host = "10.0.1.7:9080";
  r.downstream_local_address = "10.0.2.2:15008";
  r.route_name = "reviews-v2";
  r.request_id = "6c5a5b3e-4a2b-4c1d-9e8f-0123456789ab";
  r.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
  r.user_agent = "curl/8.0";
  r.x_forwarded_for = "10.0.0.5";
  return r;
}

// Lines of the exposition that start with `prefix`.
std::vector<std::string> lines(const metrics::Registry& reg, const std::string& prefix) {
  std::vector<std::string> out;
  std::istringstream in(reg.render());
  for (std::string l; std::getline(in, l);)
    if (l.rfind(prefix, 0) == 0) out.push_back(l);
  return out;
}

bool has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("request metrics carry Istio's labels with reporter waypoint", "[telemetry]") {
  metrics::Registry reg;
  RequestMetrics m(reg);
  m.record(sample());
  m.record(sample());
  auto req = lines(reg, "istio_requests_total{");
  REQUIRE(req.size() == 1);
  const std::string& l = req[0];
  for (const char* want :
       {"reporter=\"waypoint\"",
        "source_workload=\"productpage-v1\"",
        "source_workload_namespace=\"default\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/bookinfo-productpage\"",
        "source_app=\"productpage\"",
        "source_version=\"v1\"",
        "source_canonical_service=\"productpage\"",
        "source_canonical_revision=\"v1\"",
        "source_cluster=\"Kubernetes\"",
        "destination_workload=\"reviews-v2\"",
        "destination_workload_namespace=\"default\"",
        "destination_principal=\"spiffe://cluster.local/ns/default/sa/bookinfo-reviews\"",
        "destination_app=\"reviews\"",
        "destination_version=\"v2\"",
        "destination_service=\"reviews.default.svc.cluster.local\"",
        "destination_service_name=\"reviews\"",
        "destination_service_namespace=\"default\"",
        "destination_canonical_service=\"reviews\"",
        "destination_canonical_revision=\"v2\"",
        "destination_cluster=\"Kubernetes\"",
        "request_protocol=\"http\"",
        "response_code=\"200\"",
        "grpc_response_status=\"unknown\"",
        "response_flags=\"-\"",
        "connection_security_policy=\"mutual_tls\""})
    CHECK(has(l, want));
  CHECK(l.ends_with(" 2"));
  CHECK(m.series() == 1);
  CHECK(RequestMetrics::label_names().size() == 25);
}

TEST_CASE("request metrics histograms use Istio buckets and count headers plus body",
          "[telemetry]") {
  metrics::Registry reg;
  RequestMetrics m(reg);
  m.record(sample());  // 3.2 ms, 120 request bytes, 380 response bytes
  auto dur = lines(reg, "istio_request_duration_milliseconds_bucket{");
  REQUIRE(dur.size() == 20);  // 19 bounds + Inf
  bool saw1 = false, saw5 = false;
  for (const auto& l : dur) {
    if (has(l, "le=\"1\"")) saw1 = l.ends_with(" 0");
    if (has(l, "le=\"5\"")) saw5 = l.ends_with(" 1");
  }
  CHECK(saw1);
  CHECK(saw5);
  CHECK(has(lines(reg, "istio_request_duration_milliseconds_sum{")[0], " 3.2"));
  auto req_sum = lines(reg, "istio_request_bytes_sum{");
  REQUIRE(req_sum.size() == 1);
  CHECK(req_sum[0].ends_with(" 120"));
  auto resp_sum = lines(reg, "istio_response_bytes_sum{");
  REQUIRE(resp_sum.size() == 1);
  CHECK(resp_sum[0].ends_with(" 380"));
  CHECK(lines(reg, "istio_request_bytes_bucket{").size() == 11);
  CHECK((has(reg.render(), "le=\"1e+09\"") || has(reg.render(), "le=\"1000000000\"")));
}

TEST_CASE("request metrics write unknown for missing values and grpc when grpc", "[telemetry]") {
  metrics::Registry reg;
  RequestMetrics m(reg, "cluster-a");
  RequestRecord r;
  r.grpc = true;
  r.grpc_status = 14;
  r.response_code = 200;
  r.response_flags = "";
  r.connection_security_policy = "";
  m.record(r);
  auto req = lines(reg, "istio_requests_total{");
  REQUIRE(req.size() == 1);
  const auto& l = req[0];
  CHECK(has(l, "source_workload=\"unknown\""));
  CHECK(has(l, "source_principal=\"unknown\""));
  CHECK(has(l, "source_canonical_revision=\"unknown\""));
  CHECK(has(l, "destination_service=\"unknown\""));
  CHECK(has(l, "source_cluster=\"cluster-a\""));
  CHECK(has(l, "request_protocol=\"grpc\""));
  CHECK(has(l, "grpc_response_status=\"14\""));
  CHECK(has(l, "response_flags=\"unknown\""));
  CHECK(has(l, "connection_security_policy=\"unknown\""));
  CHECK_FALSE(has(reg.render(), "=\"\""));
}

TEST_CASE("request metrics app and revision fall back as Istio does", "[telemetry]") {
  metrics::Registry reg;
  RequestMetrics m(reg);
  RequestRecord r;
  r.response_code = 503;
  r.response_flags = "UF,URX";
  r.source.workload = "sleep";
  r.source.canonical_service = "sleep";  // no app/version labels, no revision
  r.destination.app = "ratings";
  m.record(r);
  const auto l = lines(reg, "istio_requests_total{").at(0);
  CHECK(has(l, "source_app=\"sleep\""));
  CHECK(has(l, "source_version=\"latest\""));
  CHECK(has(l, "source_canonical_revision=\"latest\""));
  CHECK(has(l, "destination_app=\"ratings\""));
  CHECK(has(l, "destination_canonical_service=\"ratings\""));
  CHECK(has(l, "destination_canonical_revision=\"unknown\""));
  CHECK(has(l, "response_code=\"503\""));
  CHECK(has(l, "response_flags=\"UF,URX\""));
}

TEST_CASE("request metrics cache one entry per label tuple", "[telemetry]") {
  metrics::Registry reg;
  RequestMetrics m(reg);
  auto r = sample();
  m.record(r);
  r.response_code = 404;
  m.record(r);
  r.response_code = 200;
  r.duration = std::chrono::seconds(2);  // not a label
  r.path = "/other";                     // not a label
  m.record(r);
  CHECK(m.series() == 2);
  auto req = lines(reg, "istio_requests_total{");
  REQUIRE(req.size() == 2);
  for (const auto& l : req)
    CHECK((has(l, "response_code=\"200\"") ? l.ends_with(" 2") : l.ends_with(" 1")));
}

TEST_CASE("request metrics values cannot forge a cache key across fields", "[telemetry]") {
  metrics::Registry reg;
  RequestMetrics m(reg);
  RequestRecord a, b;
  a.source.workload = "ab";
  a.source.namespace_ = "c";
  b.source.workload = "a";
  b.source.namespace_ = "bc";
  m.record(a);
  m.record(b);
  CHECK(m.series() == 2);
  CHECK(lines(reg, "istio_requests_total{").size() == 2);
}

TEST_CASE("request metrics past max_series go to one overflow series", "[telemetry]") {
  metrics::Registry reg;
  RequestMetrics m(reg, "Kubernetes", 2);
  for (int i = 0; i < 10; ++i) {
    RequestRecord r;
    r.source.workload = "w" + std::to_string(i);
    r.response_code = 200;
    m.record(r);
  }
  CHECK(m.series() == 2);
  auto req = lines(reg, "istio_requests_total{");
  // w0, w1, and the overflow series (all unknown, response_code unknown).
  REQUIRE(req.size() == 3);
  int overflow = 0;
  for (const auto& l : req)
    if (has(l, "source_workload=\"unknown\"") && has(l, "response_code=\"unknown\"")) {
      ++overflow;
      CHECK(l.ends_with(" 8"));
    }
  CHECK(overflow == 1);
}

TEST_CASE("request metrics record from many threads", "[telemetry]") {
  metrics::Registry reg;
  RequestMetrics m(reg);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&m, t] {
      auto r = sample();
      r.response_code = 200 + (t % 2);
      for (int i = 0; i < 1000; ++i) m.record(r);
    });
  for (auto& t : ts) t.join();
  CHECK(m.series() == 2);
  for (const auto& l : lines(reg, "istio_requests_total{")) CHECK(l.ends_with(" 2000"));
}

TEST_CASE("two RequestMetrics on one registry share the families", "[telemetry]") {
  metrics::Registry reg;
  RequestMetrics a(reg), b(reg);
  a.record(sample());
  b.record(sample());
  auto req = lines(reg, "istio_requests_total{");
  REQUIRE(req.size() == 1);
  CHECK(req[0].ends_with(" 2"));
}

TEST_CASE("access log is one JSON line with Envoy field names", "[telemetry]") {
  std::string line = access_log_json(sample());
  CHECK(line.find('\n') == std::string::npos);
  json j = json::parse(line);
  CHECK(j["start_time"] == "2024-05-01T12:34:56.789Z");
  CHECK(j["method"] == "GET");
  CHECK(j["path"] == "/reviews/0?x=1");
  CHECK(j["protocol"] == "HTTP/1.1");
  CHECK(j["response_code"] == 200);
  CHECK(j["response_flags"] == "-");
  CHECK(j["response_code_details"] == "via_upstream");
  CHECK(j["bytes_received"] == 0);
  CHECK(j["bytes_sent"] == 300);
  CHECK(j["duration"] == 3);
  CHECK(j["upstream_service_time"] == "2");
  CHECK(j["x_forwarded_for"] == "10.0.0.5");
  CHECK(j["user_agent"] == "curl/8.0");
  CHECK(j["request_id"] == "6c5a5b3e-4a2b-4c1d-9e8f-0123456789ab");
  CHECK(j["authority"] == "reviews:9080");
  CHECK(j["upstream_host"] == "10.0.1.7:9080");
  CHECK(j["upstream_cluster"] == "outbound|9080|v2|reviews.default.svc.cluster.local");
  CHECK(j["downstream_local_address"] == "10.0.2.2:15008");
  CHECK(j["downstream_remote_address"] == "10.0.0.5:41000");
  CHECK(j["route_name"] == "reviews-v2");
  CHECK(j["requested_server_name"].is_null());
  CHECK(j["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK(j["grpc_status"].is_null());
  CHECK(j["upstream_request_attempt_count"] == 1);
}

TEST_CASE("access log writes null for unknown strings and numbers for numbers", "[telemetry]") {
  RequestRecord r;
  r.grpc_status = 0;
  r.attempts = 3;
  json j = json::parse(access_log_json(r));
  CHECK(j["method"].is_null());
  CHECK(j["upstream_host"].is_null());
  CHECK(j["upstream_service_time"].is_null());
  CHECK(j["response_code"] == 0);
  CHECK(j["grpc_status"] == 0);
  CHECK(j["upstream_request_attempt_count"] == 3);
  CHECK(j["start_time"] == "1970-01-01T00:00:00.000Z");
}

TEST_CASE("access log escapes control characters and quotes", "[telemetry]") {
  RequestRecord r = sample();
  r.path = std::string("/a\"b\\c\nd\re\tf\x01g\x7fh", 17);
  r.user_agent = "evil\"},\"response_code\":999,\"x\":\"";
  std::string line = access_log_json(r);
  CHECK(line.find('\n') == std::string::npos);
  CHECK(line.find('\r') == std::string::npos);
  CHECK(line.find('\x01') == std::string::npos);
  json j = json::parse(line);
  CHECK(j["path"] == r.path);
  CHECK(j["user_agent"] == r.user_agent);
  CHECK(j["response_code"] == 200);
}

TEST_CASE("access log replaces invalid UTF-8 with U+FFFD and keeps valid UTF-8", "[telemetry]") {
  struct Case {
    std::string in, out;
  };
  const std::string R = "\xEF\xBF\xBD";  // U+FFFD
  std::vector<Case> cases = {
      {"caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"},
      {"a\xFF"
       "b",
       "a" + R + "b"},
      {"a\xC0\xAF"
       "b",
       "a" + R + R + "b"},  // overlong '/'
      {"a\xE0\x80\xAF"
       "b",
       "a" + R + R + R + "b"},  // overlong, 3 bytes
      {"a\xED\xA0\x80"
       "b",
       "a" + R + R + R + "b"},  // surrogate D800
      {"a\xF4\x90\x80\x80"
       "b",
       "a" + R + R + R + R + "b"},  // > U+10FFFF
      {"a\xE2\x82"
       "b",
       "a" + R + "b"},                       // truncated: one replacement
      {"a\xE2\x82", "a" + R},                // truncated at the end
      {"\x80\x80", R + R},                   // lone continuation bytes
      {"x\xE2\x80\xA8y", "x\xE2\x80\xA8y"},  // U+2028 survives (escaped)
  };
  for (const auto& c : cases) {
    RequestRecord r;
    r.path = c.in;
    std::string line = access_log_json(r);
    INFO(line);
    json j = json::parse(line);  // throws on invalid UTF-8
    CHECK(j["path"].get<std::string>() == c.out);
  }
  std::string s;
  append_json_string(s, "\xE2\x80\xA8\xE2\x80\xA9");
  CHECK(s == "\"\\u2028\\u2029\"");
  s.clear();
  append_json_string(s, std::string("\0", 1));
  CHECK(s == "\"\\u0000\"");
}

TEST_CASE("access log survives every byte value", "[telemetry]") {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  RequestRecord r;
  r.path = all;
  r.authority = all + all;
  std::string line = access_log_json(r);
  CHECK(line.find('\n') == std::string::npos);
  json j = json::parse(line);
  // ASCII survives unchanged; 0x80..0xFF become 128 replacements.
  std::string p = j["path"];
  CHECK(p.substr(0, 128) == all.substr(0, 128));
  CHECK(p.size() == 128 + 128 * 3);
}

TEST_CASE("access log marks requests an AUDIT policy matched", "[telemetry]") {
  RequestRecord r;
  json plain = json::parse(access_log_json(r));
  CHECK_FALSE(plain.contains("access_log_hint"));
  CHECK_FALSE(plain.contains("audit_policy"));
  r.audit = true;
  r.audit_policy = "shop/audit-pay";
  json j = json::parse(access_log_json(r));
  CHECK(j["access_log_hint"] == true);
  CHECK(j["audit_policy"] == "shop/audit-pay");
}
