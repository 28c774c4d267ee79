#include "warren/metrics.h"

#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

using namespace warren::metrics;

namespace {

struct PromtoolResult {
  int exit_code = -1;
  std::string output;
};

// Runs `promtool check metrics` on `text`; exit 0 = clean, 3 = lint problems, 1 = parse error.
PromtoolResult promtool_check(const std::string& text) {
  char in_path[] = "/tmp/warren-metrics-XXXXXX";
  int fd = mkstemp(in_path);
  REQUIRE(fd >= 0);
  REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  close(fd);
  std::string out_path = std::string(in_path) + ".out";
  std::string cmd = "promtool check metrics < " + std::string(in_path) + " > " + out_path + " 2>&1";
  int status = std::system(cmd.c_str());
  PromtoolResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream f(out_path);
  std::stringstream ss;
  ss << f.rdbuf();
  r.output = ss.str();
  unlink(in_path);
  unlink(out_path.c_str());
  return r;
}

const std::vector<std::string> kIstioLabels = {
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
    "destination_service",
    "destination_service_namespace",
    "destination_service_name",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
};

}  // namespace

TEST_CASE("metrics: exact text for a small registry", "[metrics]") {
  Registry reg;
  auto& req = reg.counter("http_requests_total", "Requests served.", {"method", "code"});
  auto& conns = reg.gauge("active_connections", "Open connections.");
  reg.gauge_callback("pool_size", "Idle upstream connections.", [] { return 2.5; });

  req.with({"GET", "200"})->inc(3);
  req.with({"POST", "500"})->inc();
  req.with({{"code", "404"}, {"method", "GET"}})->inc(2);  // by name, any order
  conns.with({})->inc(5);
  conns.with({})->dec(7);  // gauges go negative

  const std::string expected =
      "# HELP active_connections Open connections.\n"
      "# TYPE active_connections gauge\n"
      "active_connections -2\n"
      "# HELP http_requests_total Requests served.\n"
      "# TYPE http_requests_total counter\n"
      "http_requests_total{method=\"GET\",code=\"200\"} 3\n"
      "http_requests_total{method=\"GET\",code=\"404\"} 2\n"
      "http_requests_total{method=\"POST\",code=\"500\"} 1\n"
      "# HELP pool_size Idle upstream connections.\n"
      "# TYPE pool_size gauge\n"
      "pool_size 2.5\n";
  CHECK(reg.render() == expected);
}

TEST_CASE("metrics: handles are stable and shared per label set", "[metrics]") {
  Registry reg;
  auto& f = reg.counter("x_total", "X.", {"a", "b"});
  Counter* c1 = f.with({"1", "2"});
  for (int i = 0; i < 1000; ++i) f.with({std::to_string(i), "z"});  // grow the map
  CHECK(f.with({"1", "2"}) == c1);
  CHECK(f.with({{"b", "2"}, {"a", "1"}}) == c1);
  // Re-registering the same family returns it; a conflicting one throws.
  CHECK(&reg.counter("x_total", "X.", {"a", "b"}) == &f);
  CHECK_THROWS_AS(reg.counter("x_total", "X.", {"a"}), std::invalid_argument);
  CHECK_THROWS_AS(reg.gauge("x_total", "X.", {"a", "b"}), std::invalid_argument);
}

TEST_CASE("metrics: missing label values become unknown", "[metrics]") {
  Registry reg;
  auto& f = reg.counter("y_total", "Y.", {"reporter", "source_workload", "response_flags"});
  f.with({{"reporter", "source"}, {"not_a_label", "ignored"}})->inc();
  f.with(std::vector<std::string>{"destination"})->inc();  // short positional list
  f.with({"a", "b", "c", "extra"})->inc();                 // long list is truncated
  std::string out = reg.render();
  CHECK(out.find("y_total{reporter=\"source\",source_workload=\"unknown\",response_flags="
                 "\"unknown\"} 1\n") != std::string::npos);
  CHECK(out.find("y_total{reporter=\"destination\",source_workload=\"unknown\","
                 "response_flags=\"unknown\"} 1\n") != std::string::npos);
  CHECK(out.find("y_total{reporter=\"a\",source_workload=\"b\",response_flags=\"c\"} 1\n") !=
        std::string::npos);
  CHECK(out.find("extra") == std::string::npos);
}

TEST_CASE("metrics: label values and help are escaped", "[metrics]") {
  CHECK(escape_label_value("a\\b\"c\nd") == "a\\\\b\\\"c\\nd");
  CHECK(escape_help("line1\nback\\slash \"quoted\"") == "line1\\nback\\\\slash \"quoted\"");

  Registry reg;
  auto& f = reg.counter("esc_total", "Help with \\ and\nnewline.", {"sni"});
  f.with({"evil\"} 1\nfake_total 99\n#"})->inc();
  const std::string expected =
      "# HELP esc_total Help with \\\\ and\\nnewline.\n"
      "# TYPE esc_total counter\n"
      "esc_total{sni=\"evil\\\"} 1\\nfake_total 99\\n#\"} 1\n";
  CHECK(reg.render() == expected);
  auto r = promtool_check(reg.render());
  INFO(r.output);
  CHECK(r.exit_code == 0);
}

TEST_CASE("metrics: invalid names are rejected at registration", "[metrics]") {
  Registry reg;
  CHECK_THROWS_AS(reg.counter("1bad_total", "x"), std::invalid_argument);
  CHECK_THROWS_AS(reg.counter("bad-name_total", "x"), std::invalid_argument);
  CHECK_THROWS_AS(reg.counter("ok_total", "x", {"bad-label"}), std::invalid_argument);
  CHECK_THROWS_AS(reg.counter("ok_total", "x", {"__reserved"}), std::invalid_argument);
  CHECK_THROWS_AS(reg.counter("ok_total", "x", {"a", "a"}), std::invalid_argument);
  CHECK_THROWS_AS(reg.histogram("h_seconds", "x", {"le"}, {1}), std::invalid_argument);
  CHECK_THROWS_AS(reg.histogram("h_seconds", "x", {}, {2, 1}), std::invalid_argument);
  CHECK_THROWS_AS(reg.histogram("h_seconds", "x", {}, {1, NAN}), std::invalid_argument);
  CHECK(valid_metric_name("ns:sub_total"));
  CHECK_FALSE(valid_label_name("ns:sub"));
  CHECK(reg.render().empty());
}

TEST_CASE("metrics: histogram buckets are cumulative with +Inf, sum and count", "[metrics]") {
  Registry reg;
  auto& f = reg.histogram("latency_seconds", "Latency.", {"op"}, {0.1, 0.5, 1});
  Histogram* h = f.with({"read"});
  for (double v : {0.05, 0.1, 0.3, 0.7, 1.0, 3.0}) h->observe(v);
  h->observe(NAN);  // dropped
  // le is inclusive (0.1 lands in le="0.1"); _sum and _count carry the series labels.
  std::string out = reg.render();
  CHECK(out.find("latency_seconds_bucket{op=\"read\",le=\"0.1\"} 2\n") != std::string::npos);
  CHECK(out.find("latency_seconds_bucket{op=\"read\",le=\"0.5\"} 3\n") != std::string::npos);
  CHECK(out.find("latency_seconds_bucket{op=\"read\",le=\"1\"} 5\n") != std::string::npos);
  CHECK(out.find("latency_seconds_bucket{op=\"read\",le=\"+Inf\"} 6\n") != std::string::npos);
  CHECK(out.find("latency_seconds_count{op=\"read\"} 6\n") != std::string::npos);
  auto snap = h->snapshot();
  CHECK(snap.count == 6);
  CHECK(snap.sum == Approx(5.15));

  // Unlabelled histogram: exact text, rendered from the start.
  Registry reg2;
  auto& g = reg2.histogram("size_bytes", "Size.", {}, {10, 100});
  g.with({})->observe(10);
  g.with({})->observe(11);
  CHECK(reg2.render() ==
        "# HELP size_bytes Size.\n"
        "# TYPE size_bytes histogram\n"
        "size_bytes_bucket{le=\"10\"} 1\n"
        "size_bytes_bucket{le=\"100\"} 2\n"
        "size_bytes_bucket{le=\"+Inf\"} 2\n"
        "size_bytes_sum 21\n"
        "size_bytes_count 2\n");
  auto r = promtool_check(reg.render() + reg2.render());
  INFO(r.output);
  CHECK(r.exit_code == 0);
}

TEST_CASE("metrics: callback gauges", "[metrics]") {
  Registry reg;
  auto& f = reg.gauge("pool_connections", "Pooled connections.", {"state"});
  int idle = 3;
  f.set_callback({"idle"}, [&] { return static_cast<double>(idle); });
  f.with({"active"})->set(4);
  f.with({"idle"})->set(100);  // shadowed by the callback
  idle = 7;
  std::string out = reg.render();
  CHECK(out.find("pool_connections{state=\"active\"} 4\n") != std::string::npos);
  CHECK(out.find("pool_connections{state=\"idle\"} 7\n") != std::string::npos);
  CHECK(out.find(" 100\n") == std::string::npos);

  f.set_callback({"broken"}, []() -> double { throw std::runtime_error("boom"); });
  CHECK(reg.render().find("pool_connections{state=\"broken\"} NaN\n") != std::string::npos);

  f.remove_callback({"idle"});
  f.remove_callback({"broken"});
  out = reg.render();
  CHECK(out.find("pool_connections{state=\"idle\"} 100\n") != std::string::npos);
  CHECK(out.find("broken") == std::string::npos);
  CHECK(format_value(1e300 * 1e10) == "+Inf");
  CHECK(format_value(-0.25) == "-0.25");
}

TEST_CASE("metrics: concurrent increments and renders", "[metrics]") {
  Registry reg;
  auto& f = reg.counter("conc_total", "C.", {"t"});
  auto& h = reg.histogram("conc_seconds", "H.", {}, {0.5});
  auto& g = reg.gauge("conc_gauge", "G.");
  constexpr int kThreads = 4, kIters = 100000;
  std::atomic<bool> done{false};
  std::atomic<int> bad_scrapes{0}, scrapes{0};
  std::thread scraper([&] {  // Catch2 assertions are not thread-safe: count instead
    while (!done.load()) {
      std::string out = reg.render();
      if (out.find("# TYPE conc_total counter") == std::string::npos) ++bad_scrapes;
      ++scrapes;
    }
  });
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      Counter* shared = f.with({"shared"});
      Counter* mine = f.with({"t" + std::to_string(t)});
      Histogram* hist = h.with({});
      Gauge* gauge = g.with({});
      for (int i = 0; i < kIters; ++i) {
        shared->inc();
        mine->inc(2);
        hist->observe(i % 2 ? 0.25 : 1.0);
        gauge->inc();
        gauge->dec();
      }
    });
  }
  for (auto& t : ts) t.join();
  done = true;
  scraper.join();
  CHECK(f.with({"shared"})->value() == uint64_t{kThreads} * kIters);
  CHECK(f.with({"t0"})->value() == 2u * kIters);
  auto s = h.with({})->snapshot();
  CHECK(s.count == uint64_t{kThreads} * kIters);
  CHECK(s.cumulative[0] == uint64_t{kThreads} * kIters / 2);
  CHECK(s.sum == Approx(kThreads * kIters / 2 * 1.25));
  CHECK(g.with({})->value() == 0);
  CHECK(scrapes.load() > 0);
  CHECK(bad_scrapes.load() == 0);
}

TEST_CASE("metrics: Istio-shaped registry passes promtool check metrics", "[metrics]") {
  Registry reg;
  auto& opened = reg.counter("istio_tcp_connections_opened_total",
                             "The total number of TCP connections opened.", kIstioLabels);
  auto& closed = reg.counter("istio_tcp_connections_closed_total",
                             "The total number of TCP connections closed.", kIstioLabels);
  auto& sent = reg.counter("istio_tcp_sent_bytes_total",
                           "The size of total bytes sent during response in case of a TCP "
                           "connection.",
                           kIstioLabels);
  auto& received = reg.counter("istio_tcp_received_bytes_total",
                               "The size of total bytes received during request in case of a "
                               "TCP connection.",
                               kIstioLabels);
  std::vector<std::string> l7 = kIstioLabels;
  l7.push_back("response_code");
  auto& requests = reg.counter("istio_requests_total", "The total number of requests.", l7);
  auto& req_bytes =
      reg.histogram("istio_request_bytes", "Request body sizes.", l7, istio_bytes_buckets());
  reg.gauge("warren_xds_connected", "Whether the config stream is up.").with({})->set(1);
  reg.gauge_callback("process_resident_memory_bytes", "Resident memory size in bytes.",
                     [] { return 12345678.0; });

  std::vector<std::string> values(kIstioLabels.size(), "unknown");
  values[0] = "destination";
  values[1] = "productpage-v1";
  values[3] = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage";
  values[9] = "reviews.default.svc.cluster.local";
  values[20] = "tcp";
  values[21] = "-";
  values[22] = "mutual_tls";
  for (auto* fam : {&opened, &closed}) fam->with(values)->inc();
  sent.with(values)->inc(1024);
  received.with(values)->inc(77);
  values[21] = "DENY";
  values[22] = "unknown";
  opened.with(values)->inc();
  std::vector<std::string> l7v = values;
  l7v[20] = "http";
  l7v.push_back("200");
  requests.with(l7v)->inc();
  req_bytes.with(l7v)->observe(512);

  std::string text = reg.render();
  auto r = promtool_check(text);
  INFO(text);
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.empty());

  // Istio's duration histogram keeps its dashboard name; promtool's only
  // complaint about it is the unit lint (exit 3), not a format error (exit 1).
  reg.histogram("istio_request_duration_milliseconds", "Request durations.", l7,
                istio_duration_ms_buckets())
      .with(l7v)
      ->observe(12.5);
  r = promtool_check(reg.render());
  INFO(r.output);
  CHECK(r.exit_code == 3);
  CHECK(r.output.find("istio_request_duration_milliseconds use base unit \"seconds\"") !=
        std::string::npos);
  CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);
}

TEST_CASE("metrics: promtool is installed", "[metrics]") {
  // The promtool checks above must not pass by silently not running.
  REQUIRE(std::system("promtool --version > /dev/null 2>&1") == 0);
}
