#include "zipkin.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace warren::waypoint;
using nlohmann::json;

namespace {

// A blocking HTTP/1.1 collector on 127.0.0.1:0: reads each POST (headers and
// Content-Length body) and answers `status` (or never answers when silent).
class FakeCollector {
 public:
  explicit FakeCollector(std::string status = "202 Accepted", bool silent = false)
      : status_(std::move(status)), silent_(silent) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd_, 16) == 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~FakeCollector() {
    stop_ = true;
    thread_.join();
    for (int c : held_) ::close(c);
    ::close(fd_);
  }
  std::string addr() const { return "127.0.0.1:" + std::to_string(port_); }
  std::vector<std::string> heads() {
    std::lock_guard lk(mu_);
    return heads_;
  }
  std::vector<std::string> bodies() {
    std::lock_guard lk(mu_);
    return bodies_;
  }
  size_t accepted() const { return accepted_.load(); }

 private:
  void run() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      ++accepted_;
      if (silent_) {
        held_.push_back(c);
        continue;
      }
      serve(c);
      ::close(c);
    }
  }
  void serve(int c) {
    std::string in;
    char buf[4096];
    size_t head_end = std::string::npos;
    size_t want = 0;
    while (true) {
      if (head_end == std::string::npos) {
        head_end = in.find("\r\n\r\n");
        if (head_end != std::string::npos) {
          std::string head = in.substr(0, head_end);
          std::string lower;
          for (char ch : head)
            lower += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
          size_t cl = lower.find("content-length:");
          size_t len = cl == std::string::npos ? 0 : std::stoul(head.substr(cl + 15));
          want = head_end + 4 + len;
        }
      }
      if (head_end != std::string::npos && in.size() >= want) break;
      pollfd p{c, POLLIN, 0};
      if (::poll(&p, 1, 5000) <= 0) return;
      ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) return;
      in.append(buf, static_cast<size_t>(n));
    }
    {
      std::lock_guard lk(mu_);
      heads_.push_back(in.substr(0, head_end));
      bodies_.push_back(in.substr(head_end + 4, want - head_end - 4));
    }
    std::string resp = "HTTP/1.1 " + status_ + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    (void)::send(c, resp.data(), resp.size(), MSG_NOSIGNAL);
  }

  std::string status_;
  bool silent_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> accepted_{0};
  std::thread thread_;
  std::vector<int> held_;
  std::mutex mu_;
  std::vector<std::string> heads_, bodies_;
};

struct Loop {
  uv_loop_t loop;
  Loop() { uv_loop_init(&loop); }
  ~Loop() {
    uv_run(&loop, UV_RUN_DEFAULT);  // let closed handles finish
    CHECK(uv_loop_close(&loop) == 0);
  }
  // Runs the loop until `cond` holds or a generous deadline passes.
  bool run_until(const std::function<bool()>& cond,
                 std::chrono::seconds limit = std::chrono::seconds(20)) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!cond()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      uv_run(&loop, UV_RUN_ONCE);
    }
    return true;
  }
};

SpanRecord make_span(uint64_t id) {
  SpanRecord s;
  s.trace_id = {0x463ac35c9f6413adULL, 0x48485a3953bb6124ULL};
  s.id = id;
  s.parent_id = 0x1;
  s.name = "reviews.default.svc.cluster.local:9080/*";
  s.timestamp_us = 1714566896789000;
  s.duration_us = 3200;
  s.local = {"waypoint", "10.0.2.2", 15008};
  s.tags = {{"http.method", "GET"}};
  return s;
}

// A port nothing listens on (bound, read, closed).
std::string dead_addr() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
}

ZipkinOptions fast(size_t batch = 256, size_t max_queue = 4096) {
  ZipkinOptions o;
  o.batch = batch;
  o.max_queue = max_queue;
  o.flush_interval = std::chrono::milliseconds(20);
  return o;
}

}  // namespace

TEST_CASE("span_json writes a Zipkin v2 span", "[zipkin]") {
  SpanRecord s = make_span(0xa2fb4a1d1a96d312ULL);
  s.remote = {"", "fd00::7", 9080};
  s.tags.emplace_back("bad\n", std::string("v\xff", 2));
  s.debug = true;
  json j = json::parse(span_json(s));
  CHECK(j["traceId"] == "463ac35c9f6413ad48485a3953bb6124");
  CHECK(j["id"] == "a2fb4a1d1a96d312");
  CHECK(j["parentId"] == "0000000000000001");
  CHECK(j["name"] == "reviews.default.svc.cluster.local:9080/*");
  CHECK(j["kind"] == "SERVER");
  CHECK(j["timestamp"] == 1714566896789000);
  CHECK(j["duration"] == 3200);
  CHECK(j["localEndpoint"] ==
        json{{"serviceName", "waypoint"}, {"ipv4", "10.0.2.2"}, {"port", 15008}});
  CHECK(j["remoteEndpoint"] == json{{"ipv6", "fd00::7"}, {"port", 9080}});
  CHECK(j["tags"]["http.method"] == "GET");
  CHECK(j["tags"]["bad\n"] == "v\xEF\xBF\xBD");
  CHECK(j["debug"] == true);
}

TEST_CASE("span_json omits a root parent and empty endpoints", "[zipkin]") {
  SpanRecord s;
  s.trace_id = {0, 0x48485a3953bb6124ULL};
  s.trace_id_64bit = true;
  s.id = 5;
  s.kind = SpanRecord::Kind::kClient;
  json j = json::parse(span_json(s));
  CHECK(j["traceId"] == "48485a3953bb6124");
  CHECK_FALSE(j.contains("parentId"));
  CHECK_FALSE(j.contains("localEndpoint"));
  CHECK_FALSE(j.contains("remoteEndpoint"));
  CHECK_FALSE(j.contains("tags"));
  CHECK_FALSE(j.contains("debug"));
  CHECK(j["kind"] == "CLIENT");
  CHECK(j["duration"] == 1);  // 0 would mean an unfinished span to Zipkin
}

TEST_CASE("endpoint_from_address splits ip and port", "[zipkin]") {
  auto a = endpoint_from_address("10.0.0.1:8080", "svc");
  CHECK(a.ip == "10.0.0.1");
  CHECK(a.port == 8080);
  CHECK(a.service_name == "svc");
  auto b = endpoint_from_address("[fd00::1]:443");
  CHECK(b.ip == "fd00::1");
  CHECK(b.port == 443);
  auto c = endpoint_from_address("fd00::1");
  CHECK(c.ip == "fd00::1");
  CHECK(c.port == 0);
  CHECK(endpoint_from_address("10.0.0.1:99999").port == 0);
  CHECK(endpoint_from_address("10.0.0.1:x").port == 0);
  CHECK(endpoint_from_address("").ip.empty());
}

TEST_CASE("server_span maps a request to Istio's span and tags", "[zipkin]") {
  RequestRecord r;
  r.start = std::chrono::system_clock::time_point(std::chrono::microseconds(1714566896789123));
  r.duration = std::chrono::microseconds(4500);
  r.method = "POST";
  r.path = "/ratings/1";
  r.authority = "ratings:9080";
  r.response_code = 503;
  r.response_flags = "UF";
  r.request_id = "rid";
  r.destination.service_host = "ratings.default.svc.cluster.local";
  r.destination.canonical_service = "ratings";
  r.destination.service_namespace = "default";
  r.destination.upstream_cluster = "outbound|9080||ratings.default.svc.cluster.local";
  r.destination.upstream_host = "10.0.1.9:9080";
  Span sp;
  sp.trace_id = {1, 2};
  sp.span_id = 3;
  sp.parent_span_id = 4;
  SpanRecord s = server_span(r, sp, {"waypoint", "10.0.2.2", 0});
  CHECK(s.name == "ratings.default.svc.cluster.local:9080/*");
  CHECK(s.timestamp_us == 1714566896789123);
  CHECK(s.duration_us == 4500);
  CHECK(s.id == 3);
  CHECK(s.parent_id == 4);
  CHECK(s.remote.ip == "10.0.1.9");
  CHECK(s.remote.port == 9080);
  json j = json::parse(span_json(s));
  CHECK(j["tags"]["http.method"] == "POST");
  CHECK(j["tags"]["http.url"] == "http://ratings:9080/ratings/1");
  CHECK(j["tags"]["http.status_code"] == "503");
  CHECK(j["tags"]["error"] == "true");
  CHECK(j["tags"]["response_flags"] == "UF");
  CHECK(j["tags"]["upstream_cluster"] == "outbound|9080||ratings.default.svc.cluster.local");
  CHECK(j["tags"]["istio.canonical_service"] == "ratings");
  CHECK(j["tags"]["istio.namespace"] == "default");
  CHECK(j["tags"]["guid:x-request-id"] == "rid");
  r.response_code = 200;
  CHECK_FALSE(json::parse(span_json(server_span(r, sp, {})))["tags"].contains("error"));
}

TEST_CASE("exporter posts batches as JSON arrays to a collector", "[zipkin]") {
  FakeCollector col;
  Loop l;
  {
    ZipkinExporter ex(&l.loop, col.addr(), "/api/v2/spans", fast(3));
    REQUIRE(ex.ok());
    for (uint64_t i = 1; i <= 7; ++i) ex.enqueue(make_span(i));
    REQUIRE(l.run_until([&] { return ex.sent() == 7; }));
    CHECK(ex.failed() == 0);
    CHECK(ex.dropped() == 0);
    CHECK(ex.batches() == 3);
    CHECK(ex.queued() == 0);
  }
  std::set<std::string> ids;
  auto bodies = col.bodies();
  REQUIRE(bodies.size() == 3);
  for (const auto& b : bodies) {
    json arr = json::parse(b);
    REQUIRE(arr.is_array());
    CHECK(arr.size() <= 3);
    for (const auto& s : arr) {
      CHECK(s["traceId"] == "463ac35c9f6413ad48485a3953bb6124");
      ids.insert(s["id"].get<std::string>());
    }
  }
  CHECK(ids.size() == 7);
  CHECK(ids.count("0000000000000007") == 1);
  for (const auto& h : col.heads()) {
    CHECK(h.starts_with("POST /api/v2/spans HTTP/1.1\r\n"));
    CHECK(h.find("Content-Type: application/json\r\n") != std::string::npos);
    CHECK(h.find("Host: " + col.addr() + "\r\n") != std::string::npos);
  }
}

TEST_CASE("exporter takes spans from other threads", "[zipkin]") {
  FakeCollector col;
  Loop l;
  ZipkinExporter ex(&l.loop, col.addr(), "/api/v2/spans", fast(10));
  std::thread t([&] {
    for (uint64_t i = 1; i <= 50; ++i) ex.enqueue(make_span(i));
  });
  bool done = l.run_until([&] { return ex.sent() == 50; });
  t.join();
  CHECK(done);
  size_t spans = 0;
  for (const auto& b : col.bodies()) spans += json::parse(b).size();
  CHECK(spans == 50);
  ex.close();
}

TEST_CASE("exporter drops and counts spans when the queue is full", "[zipkin]") {
  Loop l;
  ZipkinExporter ex(&l.loop, dead_addr(), "/api/v2/spans", fast(100, 4));
  for (uint64_t i = 1; i <= 10; ++i) ex.enqueue(make_span(i));
  CHECK(ex.queued() == 4);
  CHECK(ex.dropped() == 6);
  ex.close();
  CHECK(ex.dropped() == 10);  // close drops what is queued
  ex.enqueue(make_span(11));
  CHECK(ex.dropped() == 11);
}

TEST_CASE("exporter counts failures against a dead endpoint", "[zipkin]") {
  Loop l;
  ZipkinExporter ex(&l.loop, dead_addr(), "/api/v2/spans", fast(2));
  for (uint64_t i = 1; i <= 5; ++i) ex.enqueue(make_span(i));
  REQUIRE(l.run_until([&] { return ex.failed() == 5; }));
  CHECK(ex.sent() == 0);
  CHECK(ex.queued() == 0);
}

TEST_CASE("exporter counts a non-2xx answer as failed and does not retry", "[zipkin]") {
  FakeCollector col("500 Internal Server Error");
  Loop l;
  ZipkinExporter ex(&l.loop, col.addr(), "/api/v2/spans", fast(4));
  for (uint64_t i = 1; i <= 4; ++i) ex.enqueue(make_span(i));
  REQUIRE(l.run_until([&] { return ex.failed() == 4; }));
  ex.flush();  // nothing left to send
  for (int i = 0; i < 3; ++i) uv_run(&l.loop, UV_RUN_NOWAIT);
  CHECK(ex.sent() == 0);
  CHECK(col.bodies().size() == 1);
  ex.close();
}

TEST_CASE("exporter times out a collector that never answers", "[zipkin]") {
  FakeCollector col("202 Accepted", /*silent=*/true);
  Loop l;
  ZipkinOptions o = fast(8);
  o.timeout = std::chrono::milliseconds(100);
  ZipkinExporter ex(&l.loop, col.addr(), "/api/v2/spans", o);
  ex.enqueue(make_span(1));
  ex.enqueue(make_span(2));
  REQUIRE(l.run_until([&] { return ex.failed() == 2; }));
  CHECK(col.accepted() >= 1);
  ex.close();
}

TEST_CASE("exporter with a bad address fails batches without I/O", "[zipkin]") {
  Loop l;
  for (const char* bad : {"collector:9411", "127.0.0.1", "", "127.0.0.1:0"}) {
    ZipkinExporter ex(&l.loop, bad, "/api/v2/spans", fast(1));
    CHECK_FALSE(ex.ok());
    ex.enqueue(make_span(1));
    ex.flush();
    CHECK(ex.failed() == 1);
  }
}

TEST_CASE("exporter closed with a POST in flight frees everything", "[zipkin]") {
  FakeCollector col("202 Accepted", /*silent=*/true);
  Loop l;
  auto ex = std::make_unique<ZipkinExporter>(&l.loop, col.addr(), "/api/v2/spans", fast(1));
  ex->enqueue(make_span(1));
  ex->enqueue(make_span(2));
  REQUIRE(l.run_until([&] { return col.accepted() >= 1; }));
  ex.reset();  // destructor closes; Loop's destructor runs the loop dry
}
