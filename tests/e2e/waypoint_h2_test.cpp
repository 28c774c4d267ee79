// HTTP/2 and gRPC through warren-waypoint: the client speaks h2c with prior
// knowledge to the echo service (carried by its node over HBONE), the
// waypoint runs each stream through the same pipeline as an HTTP/1 request
// and forwards it as HTTP/2 over HBONE to the chosen pod. Also the HTTP/1
// Upgrade relay, and what a misbehaving HTTP/2 client gets.
#include <poll.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>

#include "h2_backend.h"
#include "waypoint_fixture.h"

using namespace warren::e2e;
using nlohmann::json;

namespace {

H2cClient h2_connect(WaypointMesh& w) {
  auto r = w.s.m.socks(w.s.client, w.s.vip, 80);
  if (r.reply != 0)
    throw std::runtime_error("SOCKS5 to the echo VIP refused: " + std::to_string(r.reply));
  return H2cClient(std::move(r.fd));
}

Fd raw_connect(WaypointMesh& w) {
  auto r = w.s.m.socks(w.s.client, w.s.vip, 80);
  if (r.reply != 0)
    throw std::runtime_error("SOCKS5 to the echo VIP refused: " + std::to_string(r.reply));
  return std::move(r.fd);
}

const H2Fields kGrpc = {{"content-type", "application/grpc"}, {"te", "trailers"}};

json waypoint_policy(const std::string& name, const std::string& body) {
  json p = json::parse(body);
  p["apiVersion"] = "security.istio.io/v1";
  p["kind"] = "AuthorizationPolicy";
  p["metadata"] = {{"name", name}, {"namespace", "default"}};
  p["spec"]["targetRefs"] = json::parse(
      R"([{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}])");
  return p;
}

std::string preface_and_settings() {
  return std::string(NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN) +
         h2_frame(NGHTTP2_SETTINGS, 0, 0, "");
}

}  // namespace

TEST_CASE("waypoint h2: requests are routed by header and multiplexed upstream",
          "[e2e][waypoint][h2]") {
  WaypointMesh w;
  w.echo_app_protocol("http2");  // an HTTP/2 port: h2c to the pods
  w.routing["destinationRules"] = json::array({echo_subsets()});
  w.routing["virtualServices"] = json::array({vs("echo", json::parse(R"([
    {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
     "headers": {"request": {"set": {"x-route": "jason"}}, "response": {"add": {"x-served-by": "waypoint"}}},
     "route": [{"destination": {"host": "echo", "subset": "v2"}}]},
    {"route": [{"destination": {"host": "echo", "subset": "v1"}}]}])"))});
  H2Backend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  auto c = h2_connect(w);
  for (int i = 0; i < 5; ++i) {
    auto r = c.fetch("GET", "/reviews/" + std::to_string(i),
                     {{"end-user", "jason"}, {"x-warren-internal", "spoof"}});
    REQUIRE(r.status == 200);
    CHECK(r.header("x-backend") == "v2");
    CHECK(r.header("x-served-by") == "waypoint");
    CHECK(r.body == "v2 GET /reviews/" + std::to_string(i) + "\n");
    auto o = c.fetch("POST", "/reviews", {{"end-user", "other"}}, "a body");
    REQUIRE(o.status == 200);
    CHECK(o.header("x-backend") == "v1");
  }
  // Ten requests on one client connection: one upstream connection per pod.
  CHECK(v1.connections() == 1);
  CHECK(v2.connections() == 1);
  auto seen = v2.seen();
  REQUIRE(seen.size() == 5);
  CHECK(seen[0].authority == "echo");
  CHECK(seen[0].header("x-route") == "jason");
  CHECK(seen[0].header("x-forwarded-for") == w.s.client);
  CHECK(!seen[0].header("x-request-id").empty());
  CHECK(!seen[0].header("traceparent").empty());
  CHECK(seen[0].header("x-warren-internal").empty());
  auto s1 = v1.seen();
  REQUIRE(s1.size() == 5);
  CHECK(s1[0].method == "POST");
  CHECK(s1[0].body == "a body");
  auto m = w.metrics();
  CHECK(metric_sum(
            m, "istio_requests_total",
            {{"reporter", "waypoint"}, {"response_code", "200"}, {"request_protocol", "http"}}) ==
        10);
  CHECK(wait_until(
      [&] { return read_file(w.access_log()).find("\"HTTP/2\"") != std::string::npos; }, 5s));
}

TEST_CASE("waypoint h2: gRPC status and message in trailers reach the client unchanged",
          "[e2e][waypoint][h2]") {
  WaypointMesh w;
  w.echo_app_protocol("grpc");  // a gRPC port: h2c to the pods
  auto handler = [](const H2Msg& q) {
    H2Reply r;
    r.headers = {{"content-type", "application/grpc"}};
    if (q.path == "/shop.Catalog/Get") {
      r.trailers = {{"grpc-status", "5"}, {"grpc-message", "item%207%20not%20found"}};
    } else if (q.path == "/shop.Catalog/Missing") {
      r.trailers_only = true;
      r.headers.push_back({"grpc-status", "12"});
      r.headers.push_back({"grpc-message", "unknown method"});
    } else {
      r.body = q.body;  // echo the request message
      r.trailers = {{"grpc-status", "0"}, {"x-trailer", "t"}};
    }
    return r;
  };
  H2Backend v1(w.s.echo1, 8080, "v1", handler), v2(w.s.echo2, 8080, "v2", handler);
  w.start();
  auto c = h2_connect(w);
  auto nf = c.fetch("POST", "/shop.Catalog/Get", kGrpc, grpc_frame("item 7"));
  REQUIRE(nf.status == 200);
  CHECK(nf.header("content-type") == "application/grpc");
  CHECK(nf.trailer("grpc-status") == "5");
  CHECK(nf.trailer("grpc-message") == "item%207%20not%20found");
  auto ok = c.fetch("POST", "/shop.Catalog/List", kGrpc, grpc_frame("hello"));
  REQUIRE(ok.status == 200);
  CHECK(ok.body == grpc_frame("hello"));
  CHECK(ok.trailer("grpc-status") == "0");
  CHECK(ok.trailer("x-trailer") == "t");
  auto un = c.fetch("POST", "/shop.Catalog/Missing", kGrpc, grpc_frame("?"));
  REQUIRE(un.status == 200);
  CHECK(un.header("grpc-status") == "12");
  CHECK(un.header("grpc-message") == "unknown method");
  CHECK(un.body.empty());
  // The request's own trailers and te: trailers reach the backend.
  auto seen = v1.seen();
  for (auto& q : v2.seen()) seen.push_back(q);
  REQUIRE(seen.size() == 3);
  for (auto& q : seen) CHECK(q.header("te") == "trailers");
  auto m = w.metrics();
  CHECK(metric_sum(m, "istio_requests_total",
                   {{"reporter", "waypoint"},
                    {"request_protocol", "grpc"},
                    {"grpc_response_status", "5"}}) == 1);
  CHECK(metric_sum(m, "istio_requests_total",
                   {{"reporter", "waypoint"},
                    {"request_protocol", "grpc"},
                    {"grpc_response_status", "0"}}) == 1);
  CHECK(metric_sum(m, "istio_requests_total",
                   {{"reporter", "waypoint"},
                    {"request_protocol", "grpc"},
                    {"grpc_response_status", "12"}}) == 1);
}

TEST_CASE("waypoint h2: request trailers are forwarded to the backend", "[e2e][waypoint][h2]") {
  WaypointMesh w;
  w.echo_app_protocol("http2");  // an HTTP/2 port: h2c to the pods
  H2Backend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  auto c = h2_connect(w);
  int32_t sid = c.request("POST", "/upload", {{"content-type", "text/plain"}}, "", false);
  REQUIRE(sid > 0);
  c.send(sid, "part one, ", false);
  c.send(sid, "part two", true, {{"x-checksum", "abc"}});
  auto r = c.get(sid);
  REQUIRE(r.status == 200);
  auto seen = v1.seen();
  for (auto& q : v2.seen()) seen.push_back(q);
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].body == "part one, part two");
  CHECK(seen[0].trailer("x-checksum") == "abc");
}

TEST_CASE("waypoint h2: a gRPC call denied by an L7 DENY policy gets grpc-status 7",
          "[e2e][waypoint][h2]") {
  WaypointMesh w;
  w.echo_app_protocol("http2");  // an HTTP/2 port: h2c to the pods
  w.s.m.add_policy(waypoint_policy("deny-admin", R"({"spec": {"action": "DENY", "rules": [
      {"to": [{"operation": {"paths": ["/shop.Admin/*"]}}]}]}})"));
  H2Backend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  auto c = h2_connect(w);
  auto r = c.fetch("POST", "/shop.Admin/DropTables", kGrpc, grpc_frame("now"));
  REQUIRE(r.status == 200);
  CHECK(r.header("content-type") == "application/grpc");
  CHECK(r.header("grpc-status") == "7");
  CHECK(r.header("grpc-message") == "RBAC: access denied");
  CHECK(r.body.empty());
  // The same path without gRPC: a plain 403.
  auto p = c.fetch("GET", "/shop.Admin/DropTables");
  CHECK(p.status == 403);
  CHECK(p.body == "RBAC: access denied");
  // Allowed calls still go through on the same connection.
  auto ok = c.fetch("POST", "/shop.Catalog/List", kGrpc, grpc_frame("x"));
  CHECK(ok.status == 200);
  CHECK(ok.trailer("grpc-status") == "0");
  CHECK(v1.requests() + v2.requests() == 1);
  auto m = w.metrics();
  CHECK(metric_sum(
            m, "istio_requests_total",
            {{"reporter", "waypoint"}, {"response_code", "200"}, {"grpc_response_status", "7"}}) ==
        1);
  CHECK(metric_sum(m, "istio_requests_total",
                   {{"reporter", "waypoint"}, {"response_code", "403"}}) == 1);
}

TEST_CASE("waypoint h2: fault aborts answer gRPC calls with a gRPC status", "[e2e][waypoint][h2]") {
  WaypointMesh w;
  w.echo_app_protocol("http2");  // an HTTP/2 port: h2c to the pods
  w.routing["virtualServices"] = json::array({vs("echo", json::parse(R"([
    {"match": [{"uri": {"prefix": "/shop.Flaky/"}}],
     "fault": {"abort": {"grpcStatus": "RESOURCE_EXHAUSTED", "percentage": {"value": 100}}},
     "route": [{"destination": {"host": "echo"}}]},
    {"match": [{"uri": {"prefix": "/shop.Down/"}}],
     "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 100}}},
     "route": [{"destination": {"host": "echo"}}]},
    {"route": [{"destination": {"host": "echo"}}]}])"))});
  H2Backend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  auto c = h2_connect(w);
  auto a = c.fetch("POST", "/shop.Flaky/Get", kGrpc, grpc_frame("x"));
  REQUIRE(a.status == 200);
  CHECK(a.header("grpc-status") == "8");
  auto d = c.fetch("POST", "/shop.Down/Get", kGrpc, grpc_frame("x"));
  REQUIRE(d.status == 200);
  CHECK(d.header("grpc-status") == "14");  // 503 -> UNAVAILABLE
  auto h = c.fetch("GET", "/shop.Down/page");
  CHECK(h.status == 503);
  CHECK(h.body == "fault filter abort");
  CHECK(v1.requests() + v2.requests() == 0);
  auto m = w.metrics();
  CHECK(metric_sum(
            m, "istio_requests_total",
            {{"reporter", "waypoint"}, {"grpc_response_status", "8"}, {"response_flags", "FI"}}) ==
        1);
}

TEST_CASE("waypoint h2: a streaming call carries several messages each way on one stream",
          "[e2e][waypoint][h2]") {
  WaypointMesh w;
  w.echo_app_protocol("http2");  // an HTTP/2 port: h2c to the pods
  H2Backend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  auto c = h2_connect(w);
  int32_t sid = c.request("POST", "/stream/chat", kGrpc, "", false);
  REQUIRE(sid > 0);
  std::string expect;
  for (int i = 0; i < 5; ++i) {
    std::string msg = grpc_frame("message " + std::to_string(i));
    expect += msg;
    c.send(sid, msg, false);
    // Each answer arrives before the next message is sent: a real stream, not a buffered request.
    INFO("message " << i);
    REQUIRE(c.run_until([&] { return c.response(sid).body == expect; }));
    CHECK_FALSE(c.response(sid).ended);
  }
  c.send(sid, "", true);
  auto r = c.get(sid);
  CHECK(r.status == 200);
  CHECK(r.body == expect);
  CHECK(r.trailer("grpc-status") == "0");
  CHECK(r.reset_code == 0);
}

TEST_CASE("waypoint h2: many concurrent streams on one client connection", "[e2e][waypoint][h2]") {
  WaypointMesh w;
  w.echo_app_protocol("http2");  // an HTTP/2 port: h2c to the pods
  H2Backend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  auto c = h2_connect(w);
  // 200 requests in flight at once (more than the 100 streams the waypoint
  // allows: the client queues the rest).
  std::vector<int32_t> sids;
  for (int i = 0; i < 200; ++i) sids.push_back(c.request("GET", "/many/" + std::to_string(i)));
  for (int i = 0; i < 200; ++i) {
    auto r = c.get(sids[i]);
    INFO("request " << i);
    REQUIRE(r.status == 200);
    CHECK(r.body == r.header("x-backend") + " GET /many/" + std::to_string(i) + "\n");
  }
  CHECK(v1.requests() + v2.requests() == 200);
  // Streams held open at the same time share one upstream connection per pod.
  std::vector<int32_t> open;
  for (int i = 0; i < 20; ++i) {
    int32_t sid = c.request("POST", "/stream/" + std::to_string(i), kGrpc, "", false);
    REQUIRE(sid > 0);
    c.send(sid, grpc_frame("hi"), false);
    open.push_back(sid);
  }
  for (int32_t sid : open)
    REQUIRE(c.run_until([&] { return c.response(sid).body == grpc_frame("hi"); }));
  CHECK(v1.max_concurrent() + v2.max_concurrent() >= 20);
  CHECK(v1.connections() <= 1);
  CHECK(v2.connections() <= 1);
  for (int32_t sid : open) c.send(sid, "", true);
  for (int32_t sid : open) CHECK(c.get(sid).trailer("grpc-status") == "0");
}

TEST_CASE("waypoint h2: invalid and connection-specific headers are never forwarded",
          "[e2e][waypoint][h2]") {
  WaypointMesh w;
  w.echo_app_protocol("http2");  // an HTTP/2 port: h2c to the pods
  H2Backend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  const std::vector<H2Fields> bad = {
      {{"connection", "keep-alive"}},       {{"keep-alive", "timeout=5"}},
      {{"transfer-encoding", "chunked"}},   {{"upgrade", "h2c"}},
      {{"proxy-connection", "keep-alive"}}, {{"te", "gzip"}},
      {{"x-crlf", "a\r\nx-injected: 1"}},   {{"x-lf", "a\nb"}},
      {{"x-nul", std::string("a\0b", 3)}},
  };
  auto c = h2_connect(w);
  for (const auto& h : bad) {
    INFO("header " << h[0].first);
    auto r = c.fetch("GET", "/bad", h);
    // nghttp2 resets such a stream (PROTOCOL_ERROR); a 400 would do as well.
    CHECK((r.reset_code != 0 || r.status == 400));
    CHECK(r.status != 200);
  }
  CHECK(v1.requests() + v2.requests() == 0);
  // The connection survived every stream error, and te: trailers is fine.
  auto ok = c.fetch("GET", "/good", {{"te", "trailers"}});
  CHECK(ok.status == 200);
  CHECK(v1.requests() + v2.requests() == 1);

  // An upper-case name (nghttp2's client lower-cases names, so raw frames):
  // the stream is reset or answered 400 (HPACK static index 12, 0x8c).
  Fd fd = raw_connect(w);
  std::string out = preface_and_settings() +
                    h2_frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 1,
                             hpack_request("/upper", "echo", {{"X-Upper", "1"}}));
  REQUIRE(send_all(fd.get(), out.data(), out.size()));
  H2RawFrame f;
  bool got = false;
  while (!got && read_frame(fd.get(), &f, 10s))
    got = f.sid == 1 && (f.type == NGHTTP2_RST_STREAM || f.type == NGHTTP2_HEADERS);
  REQUIRE(got);
  if (f.type == NGHTTP2_HEADERS) CHECK(static_cast<uint8_t>(f.payload[0]) == 0x8c);
  CHECK(v1.requests() + v2.requests() == 1);
}

TEST_CASE("waypoint h2: a rapid reset flood closes the connection and reaches no backend",
          "[e2e][waypoint][h2]") {
  WaypointMesh w;
  w.echo_app_protocol("http2");  // an HTTP/2 port: h2c to the pods
  H2Backend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  Fd fd = raw_connect(w);
  std::string out = preface_and_settings();
  const int n = 3000;
  std::string block = hpack_request("/flood", "echo");
  std::string rst(4, '\0');
  rst[3] = static_cast<char>(NGHTTP2_CANCEL);
  for (int i = 0; i < n; ++i) {
    int32_t sid = 2 * i + 1;
    out +=
        h2_frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, sid, block);
    out += h2_frame(NGHTTP2_RST_STREAM, 0, sid, rst);
  }
  // The waypoint may close before it read everything: a failed send is fine.
  (void)send_all(fd.get(), out.data(), out.size());
  uint32_t code = 0;
  CHECK(read_until_goaway_and_close(fd.get(), &code, 20s));
  CHECK(v1.requests() + v2.requests() < static_cast<uint64_t>(n));
  // The waypoint is fine and serves the next client.
  auto c = h2_connect(w);
  CHECK(c.fetch("GET", "/after").status == 200);
}

TEST_CASE("waypoint h2: a CONTINUATION flood closes the connection", "[e2e][waypoint][h2]") {
  WaypointMesh w;
  w.echo_app_protocol("http2");  // an HTTP/2 port: h2c to the pods
  H2Backend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  Fd fd = raw_connect(w);
  std::string out = preface_and_settings();
  out += h2_frame(NGHTTP2_HEADERS, 0, 1, hpack_request("/cont", "echo"));
  std::string field = std::string("\x00", 1) + "\x05x-pad" + "\x10" + std::string(16, 'a');
  for (int i = 0; i < 10000; ++i) out += h2_frame(NGHTTP2_CONTINUATION, 0, 1, field);
  (void)send_all(fd.get(), out.data(), out.size());
  uint32_t code = 0;
  CHECK(read_until_goaway_and_close(fd.get(), &code, 20s));
  CHECK(v1.requests() + v2.requests() == 0);
  auto c = h2_connect(w);
  CHECK(c.fetch("GET", "/after").status == 200);
}

namespace {
// An HTTP/1.1 server that accepts one Upgrade and then answers each line
// "ping <n>" with "pong <n>", and says "tick" by itself first.
class UpgradeServer {
 public:
  UpgradeServer(const std::string& ip, uint16_t port) : fd_(tcp_listen(ip, port)) {
    if (!fd_) throw std::runtime_error("UpgradeServer: cannot listen");
    thread_ = std::thread([this] { run(); });
  }
  ~UpgradeServer() {
    stop_ = true;
    ::shutdown(fd_.get(), SHUT_RDWR);
    thread_.join();
  }
  std::string request() {
    std::lock_guard<std::mutex> g(mu_);
    return request_;
  }

 private:
  void run() {
    while (!stop_) {
      pollfd p{fd_.get(), POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      Fd c(::accept(fd_.get(), nullptr, nullptr));
      if (!c) continue;
      set_recv_timeout(c.get(), 200ms);
      std::string in;
      char buf[4096];
      while (!stop_ && in.find("\r\n\r\n") == std::string::npos) {
        ssize_t n = ::recv(c.get(), buf, sizeof buf, 0);
        if (n == 0) break;
        if (n > 0) in.append(buf, static_cast<size_t>(n));
      }
      size_t end = in.find("\r\n\r\n");
      if (end == std::string::npos) continue;
      {
        std::lock_guard<std::mutex> g(mu_);
        request_ = in.substr(0, end + 4);
      }
      in.erase(0, end + 4);
      std::string head =
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
          "Upgrade\r\n\r\ntick\n";
      send_all(c.get(), head.data(), head.size());
      while (!stop_) {
        size_t nl;
        while ((nl = in.find('\n')) != std::string::npos) {
          std::string line = in.substr(0, nl);
          in.erase(0, nl + 1);
          std::string reply =
              (line.rfind("ping ", 0) == 0 ? "pong " + line.substr(5) : "what " + line) + "\n";
          send_all(c.get(), reply.data(), reply.size());
        }
        ssize_t n = ::recv(c.get(), buf, sizeof buf, 0);
        if (n == 0) break;
        if (n > 0) in.append(buf, static_cast<size_t>(n));
      }
    }
  }
  Fd fd_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::string request_;
  std::thread thread_;
};

// Reads until `want` was seen (the bytes read so far returned), or the timeout.
std::string read_until(int fd, const std::string& want, std::chrono::milliseconds timeout = 10s) {
  std::string in;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  while (in.find(want) == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    in.append(buf, static_cast<size_t>(n));
  }
  return in;
}
}  // namespace

TEST_CASE("waypoint: an HTTP/1.1 Upgrade switches the session to a relay both ways",
          "[e2e][waypoint][h2]") {
  WaypointMesh w;
  UpgradeServer v1(w.s.echo1, 8080), v2(w.s.echo2, 8080);
  w.start();
  Fd fd = raw_connect(w);
  std::string req =
      "GET /chat HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
  REQUIRE(send_all(fd.get(), req.data(), req.size()));
  std::string got = read_until(fd.get(), "tick\n");
  INFO(got);
  REQUIRE(got.rfind("HTTP/1.1 101", 0) == 0);
  CHECK(got.find("\r\n\r\ntick\n") != std::string::npos);
  std::string lower = got;
  for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  CHECK(lower.find("upgrade: websocket") != std::string::npos);
  // Bytes flow both ways, many times, on the upgraded connection.
  for (int i = 0; i < 50; ++i) {
    std::string ping = "ping " + std::to_string(i) + "\n";
    REQUIRE(send_all(fd.get(), ping.data(), ping.size()));
    std::string pong = "pong " + std::to_string(i) + "\n";
    INFO("round " << i);
    REQUIRE(read_until(fd.get(), pong).find(pong) != std::string::npos);
  }
  // A large message goes through whole (flow control on the relay).
  std::string big(300000, 'x');
  big += "\n";
  REQUIRE(send_all(fd.get(), big.data(), big.size()));
  std::string back = read_until(fd.get(), "x\n", 20s);
  CHECK(back.size() == big.size() + 5);  // "what " + the line
  // The backend saw the upgrade request with its Upgrade and Connection fields.
  std::string seen = v1.request() + v2.request();
  for (auto& ch : seen) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  CHECK(seen.find("upgrade: websocket") != std::string::npos);
  CHECK(seen.find("connection: upgrade") != std::string::npos);
}

TEST_CASE("waypoint h2: retries and route timeouts apply to HTTP/2 requests",
          "[e2e][waypoint][h2]") {
  WaypointMesh w;
  w.echo_app_protocol("http2");  // an HTTP/2 port: h2c to the pods
  w.routing["virtualServices"] = json::array({vs("echo", json::parse(R"([
    {"match": [{"uri": {"prefix": "/flap"}}],
     "route": [{"destination": {"host": "echo"}}], "retries": {"attempts": 3, "retryOn": "5xx"}},
    {"match": [{"uri": {"prefix": "/slow"}}],
     "route": [{"destination": {"host": "echo"}}], "timeout": "300ms"},
    {"route": [{"destination": {"host": "echo"}}]}])"))});
  std::atomic<int> n{0};
  std::atomic<bool> release{false};
  auto handler = [&](const H2Msg& q) {
    H2Reply r;
    if (q.path.rfind("/flap", 0) == 0 && n++ % 2 == 0) r.status = 503;
    if (q.path.rfind("/slow", 0) == 0)  // held until the test lets it go (long after the timeout)
      wait_until([&] { return release.load(); }, 20s, 10ms);
    r.body = "ok " + q.path;
    return r;
  };
  H2Backend v1(w.s.echo1, 8080, "v1", handler), v2(w.s.echo2, 8080, "v2", handler);
  w.start();
  auto c = h2_connect(w);
  for (int i = 0; i < 6; ++i) {
    auto r = c.fetch("POST", "/flap/" + std::to_string(i), {}, "body " + std::to_string(i));
    CHECK(r.status == 200);
    CHECK(r.body == "ok /flap/" + std::to_string(i));
  }
  CHECK(v1.requests() + v2.requests() >= 9);  // about one retry per request, each with its body
  for (auto& q : v1.seen()) CHECK(q.body.rfind("body ", 0) == 0);
  auto t = c.fetch("GET", "/slow");
  CHECK(t.status == 504);
  CHECK(t.body == "upstream request timeout");
  auto g = c.fetch("POST", "/slow/grpc", kGrpc, grpc_frame("x"));
  CHECK(g.status == 200);
  CHECK(g.header("grpc-status") == "14");  // 504 -> UNAVAILABLE
  release = true;
  CHECK(c.fetch("GET", "/after").status == 200);
  auto m = w.metrics();
  CHECK(metric_sum(m, "istio_requests_total",
                   {{"reporter", "waypoint"}, {"response_flags", "UT"}}) == 2);
}

namespace {
// A waypoint mesh whose echo pods (HTTP/2) hold a request for "/hold" until
// `release`, with a DestinationRule for echo whose trafficPolicy has the
// connectionPool `pool` (JSON text). Start it with start().
struct HoldMesh {
  WaypointMesh w;
  std::atomic<bool> release{false};
  std::unique_ptr<H2Backend> v1, v2;

  explicit HoldMesh(const std::string& pool) {
    w.echo_app_protocol("http2");  // an HTTP/2 port: h2c to the pods
    w.routing["destinationRules"] = json::array({{
        {"apiVersion", "networking.istio.io/v1"},
        {"kind", "DestinationRule"},
        {"metadata", {{"name", "echo"}, {"namespace", "default"}}},
        {"spec", {{"host", "echo"}, {"trafficPolicy", {{"connectionPool", json::parse(pool)}}}}}}});
  }
  ~HoldMesh() { release = true; }
  H2cClient start() {
    auto handler = [this](const H2Msg& q) {
      if (q.path == "/hold") wait_until([&] { return release.load(); }, 20s, 10ms);
      H2Reply r;
      r.body = "done " + q.path;
      return r;
    };
    v1 = std::make_unique<H2Backend>(w.s.echo1, 8080, "v1", handler);
    v2 = std::make_unique<H2Backend>(w.s.echo2, 8080, "v2", handler);
    w.start();
    return h2_connect(w);
  }
  size_t requests() const { return v1->requests() + v2->requests(); }
  // Sends "/hold" and waits until a pod holds it; its stream id.
  int32_t hold(H2cClient& c) {
    int32_t sid = c.request("GET", "/hold");
    REQUIRE(c.run_until([&] { return requests() == 1; }));
    return sid;
  }
};

// One connection to the service, one request per connection, one request may wait.
constexpr const char* kOneConnectionOneWaiter =
    R"({"tcp": {"maxConnections": 1},
        "http": {"maxRequestsPerConnection": 1, "http1MaxPendingRequests": 1}})";
}  // namespace

TEST_CASE("waypoint h2: the circuit breaker answers 503 UO and gRPC UNAVAILABLE",
          "[e2e][waypoint][h2]") {
  HoldMesh m(R"({"http": {"http2MaxRequests": 1}})");
  auto c = m.start();
  // The held request is at the backend: the one request the breaker allows is in flight.
  int32_t held = m.hold(c);
  auto r = c.fetch("GET", "/second");
  CHECK(r.status == 503);
  CHECK(r.body.find("overflow") != std::string::npos);
  auto g = c.fetch("POST", "/third", kGrpc, grpc_frame("x"));
  CHECK(g.status == 200);
  CHECK(g.header("grpc-status") == "14");
  m.release = true;
  CHECK(c.get(held).status == 200);
  CHECK(c.fetch("GET", "/after").status == 200);
  CHECK(metric_sum(m.w.metrics(), "istio_requests_total",
                   {{"reporter", "waypoint"}, {"response_flags", "UO"}}) == 2);
}

TEST_CASE("waypoint h2: at tcp.maxConnections a request waits for a connection, up to http1MaxPendingRequests",
          "[e2e][waypoint][h2]") {
  // One connection to the service, one request on it: the next request has to
  // wait for the connection to close (Envoy queues it as pending); one may wait.
  HoldMesh m(kOneConnectionOneWaiter);
  auto c = m.start();
  int32_t held = m.hold(c);
  int32_t queued = c.request("POST", "/queued", {}, "queued body");
  // The pending slot is taken (or about to be): a third request overflows.
  auto third = c.fetch("GET", "/third");
  CHECK(third.status == 503);
  CHECK(third.body.find("overflow") != std::string::npos);
  CHECK(m.requests() == 1);  // the queued one did not reach a pod yet
  CHECK_FALSE(c.response(queued).status);  // and is not answered
  m.release = true;
  CHECK(c.get(held).status == 200);
  auto q = c.get(queued);
  CHECK(q.status == 200);
  CHECK(q.body == "done /queued");
  CHECK(m.requests() == 2);
  bool body_seen = false;
  for (auto* b : {m.v1.get(), m.v2.get()})
    for (auto& q2 : b->seen()) body_seen |= q2.path == "/queued" && q2.body == "queued body";
  CHECK(body_seen);
  CHECK(c.fetch("GET", "/after").status == 200);
  CHECK(metric_sum(m.w.metrics(), "istio_requests_total",
                   {{"reporter", "waypoint"}, {"response_flags", "UO"}}) == 1);
}

TEST_CASE("waypoint h2: a request that waits for a connection is timed out and frees its place",
          "[e2e][waypoint][h2]") {
  HoldMesh m(kOneConnectionOneWaiter);
  m.w.routing["virtualServices"] = json::array({vs("echo", json::parse(R"([
    {"match": [{"uri": {"prefix": "/quick"}}], "route": [{"destination": {"host": "echo"}}], "timeout": "0.3s"},
    {"route": [{"destination": {"host": "echo"}}]}])"))});
  auto c = m.start();
  int32_t held = m.hold(c);
  // Waits in the queue until the route timeout, then 504; its place is free again.
  auto t = c.fetch("GET", "/quick/1");
  CHECK(t.status == 504);
  auto t2 = c.fetch("GET", "/quick/2");
  CHECK(t2.status == 504);  // not 503 UO: the first one left the queue
  m.release = true;
  CHECK(c.get(held).status == 200);
  CHECK(c.fetch("GET", "/quick/3").status == 200);
  CHECK(m.requests() == 2);  // the timed-out ones never reached a pod
}

TEST_CASE("waypoint h2: a mirror gets a copy of each HTTP/2 request", "[e2e][waypoint][h2]") {
  WaypointMesh w;
  w.echo_app_protocol("http2");  // an HTTP/2 port: h2c to the pods
  w.routing["destinationRules"] = json::array({echo_subsets()});
  w.routing["virtualServices"] = json::array({vs("echo", json::parse(R"([
    {"route": [{"destination": {"host": "echo", "subset": "v1"}}],
     "mirror": {"host": "echo", "subset": "v2"}, "mirrorPercentage": {"value": 100}}])"))});
  H2Backend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  auto c = h2_connect(w);
  for (int i = 0; i < 3; ++i) {
    auto r = c.fetch("POST", "/m/" + std::to_string(i), {}, "payload");
    CHECK(r.status == 200);
    CHECK(r.header("x-backend") == "v1");
  }
  CHECK(wait_until([&] { return v2.requests() == 3; }, 10s));
  auto seen = v2.seen();
  REQUIRE(!seen.empty());
  CHECK(seen[0].authority == "echo-shadow");
  CHECK(seen[0].body == "payload");
}

TEST_CASE("waypoint h2: large bodies stream both ways under flow control", "[e2e][waypoint][h2]") {
  WaypointMesh w;
  w.echo_app_protocol("http2");  // an HTTP/2 port: h2c to the pods
  auto echo_body = [](const H2Msg& q) {
    H2Reply r;
    r.body = q.body;
    r.trailers = {{"x-len", std::to_string(q.body.size())}};
    return r;
  };
  H2Backend v1(w.s.echo1, 8080, "v1", echo_body), v2(w.s.echo2, 8080, "v2", echo_body);
  w.start();
  auto c = h2_connect(w);
  // Larger than every window on the way (the waypoint's inner 1 MiB stream
  // window, the client's 64 KiB default). One at a time: the test client
  // writes with blocking sends.
  for (int i = 0; i < 3; ++i) {
    std::string b(3 * 1024 * 1024 + i * 1000, static_cast<char>('a' + i));
    auto r = c.get(c.request("PUT", "/big/" + std::to_string(i), {}, b), 60s);
    INFO("upload " << i);
    REQUIRE(r.status == 200);
    CHECK(r.body.size() == b.size());
    CHECK(r.body == b);
    CHECK(r.trailer("x-len") == std::to_string(b.size()));
  }
}

// ---- the upstream protocol follows the Service port (Istio's protocol selection) ----

TEST_CASE("waypoint h2: an HTTP/2 client reaches an HTTP/1-only backend over HTTP/1.1",
          "[e2e][waypoint][h2]") {
  WaypointMesh w;  // the echo port is unnamed: HTTP/1.1 to the pods, as an Istio waypoint does
  w.routing["destinationRules"] = json::array({echo_subsets()});
  w.routing["virtualServices"] = json::array({vs("echo", json::parse(R"([
    {"route": [{"destination": {"host": "echo", "subset": "v1"}}]}])"))});
  HttpBackend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  auto c = h2_connect(w);
  auto r = c.fetch("GET", "/items/1?x=y", {{"user-agent", "h2-test"}});
  REQUIRE(r.status == 200);
  CHECK(r.body == "v1 GET /items/1?x=y\n");
  CHECK(r.header("x-backend") == "v1");
  // A body of unknown length goes chunked, a declared one with Content-Length.
  auto p = c.fetch("POST", "/upload", {{"content-type", "text/plain"}}, "chunked body");
  CHECK(p.status == 200);
  auto q = c.fetch("PUT", "/upload", {{"content-length", "11"}}, "sized body!");
  CHECK(q.status == 200);
  auto h = c.fetch("HEAD", "/items/1");
  CHECK(h.status == 200);
  CHECK(h.body.empty());
  auto seen = v1.seen();
  REQUIRE(seen.size() == 4);
  CHECK(seen[0].method == "GET");
  CHECK(seen[0].target == "/items/1?x=y");
  CHECK(seen[0].header("host") == "echo");
  CHECK(seen[0].header("user-agent") == "h2-test");
  CHECK(seen[1].header("transfer-encoding") == "chunked");
  CHECK(seen[1].body == "chunked body");
  CHECK(seen[2].header("content-length") == "11");
  CHECK(seen[2].header("transfer-encoding").empty());
  CHECK(seen[2].body == "sized body!");
  // One after the other, the requests share one pooled HTTP/1.1 connection.
  CHECK(v1.connections() == 1);
  CHECK(v2.requests() == 0);
}

TEST_CASE("waypoint: h2UpgradePolicy UPGRADE sends HTTP/1.1 clients upstream as HTTP/2",
          "[e2e][waypoint][h2]") {
  WaypointMesh w;
  auto dr = echo_subsets();
  dr["spec"]["trafficPolicy"] = json::parse(R"({"connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE"}}})");
  w.routing["destinationRules"] = json::array({dr});
  w.routing["virtualServices"] = json::array({vs("echo", json::parse(R"([
    {"route": [{"destination": {"host": "echo", "subset": "v2"}}]}])"))});
  H2Backend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  auto c = w.connect();
  auto r = c.request("GET", "/up/1");
  REQUIRE(r.status == 200);
  CHECK(r.body == "v2 GET /up/1\n");
  auto p = c.request("POST", "/up/2", {}, "a body");
  REQUIRE(p.status == 200);
  auto seen = v2.seen();
  REQUIRE(seen.size() == 2);
  CHECK(seen[0].authority == "echo");
  CHECK(seen[1].method == "POST");
  CHECK(seen[1].body == "a body");
  CHECK(v1.requests() == 0);
}

TEST_CASE("waypoint h2: useClientProtocol keeps HTTP/2 upstream on an unnamed port",
          "[e2e][waypoint][h2]") {
  WaypointMesh w;
  json dr = json::parse(R"({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
    "metadata": {"name": "echo", "namespace": "default"},
    "spec": {"host": "echo", "trafficPolicy": {"connectionPool": {"http": {"useClientProtocol": true}}}}})");
  w.routing["destinationRules"] = json::array({dr});
  H2Backend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  auto c = h2_connect(w);
  for (int i = 0; i < 4; ++i) {
    auto r = c.fetch("GET", "/c/" + std::to_string(i));
    REQUIRE(r.status == 200);
    CHECK(r.body.find(" GET /c/" + std::to_string(i)) != std::string::npos);
  }
  CHECK(v1.requests() + v2.requests() == 4);
}

// ---- grpc-timeout and the HTTP/2 request header timeout ----

TEST_CASE("waypoint h2: a grpc-timeout header bounds the call with DEADLINE_EXCEEDED",
          "[e2e][waypoint][h2]") {
  WaypointMesh w;
  w.echo_app_protocol("grpc");
  std::atomic<bool> release{false};
  auto handler = [&](const H2Msg& q) {
    H2Reply r;
    if (q.path.rfind("/slow", 0) == 0) wait_until([&] { return release.load(); }, 20s, 10ms);
    r.headers = {{"content-type", "application/grpc"}};
    r.body = q.body;
    r.trailers = {{"grpc-status", "0"}};
    return r;
  };
  H2Backend v1(w.s.echo1, 8080, "v1", handler), v2(w.s.echo2, 8080, "v2", handler);
  w.start();
  auto c = h2_connect(w);
  H2Fields deadline = kGrpc;
  deadline.push_back({"grpc-timeout", "300m"});
  auto g = c.fetch("POST", "/slow/Call", deadline, grpc_frame("x"));
  CHECK(g.status == 200);
  CHECK(g.header("grpc-status") == "4");  // DEADLINE_EXCEEDED
  release = true;  // the backend's connection thread is free again
  // The header goes on to the backend, and a call within its deadline is answered.
  auto ok = c.fetch("POST", "/fast/Call", deadline, grpc_frame("y"));
  CHECK(ok.status == 200);
  CHECK(ok.trailer("grpc-status") == "0");
  // A malformed grpc-timeout is ignored (no deadline), as Envoy does.
  H2Fields bad = kGrpc;
  bad.push_back({"grpc-timeout", "soon"});
  CHECK(c.fetch("POST", "/fast/Call", bad, grpc_frame("z")).trailer("grpc-status") == "0");
  auto m = w.metrics();
  CHECK(metric_sum(m, "istio_requests_total", {{"reporter", "waypoint"}, {"response_flags", "DT"}}) == 1);
  CHECK(metric_sum(m, "istio_requests_total", {{"reporter", "waypoint"}, {"grpc_response_status", "4"}}) == 1);
}

TEST_CASE("waypoint h2: an HTTP/1.1 request with grpc-timeout gets 408 when it expires", "[e2e][waypoint][h2]") {
  WaypointMesh w;
  w.routing["virtualServices"] = json::array({vs("echo", json::parse(R"([
    {"route": [{"destination": {"host": "echo"}}], "timeout": "10s"}])"))});
  std::atomic<bool> release{false};
  auto slow = [&](const HttpReq&) {
    HttpResp r;
    wait_until([&] { return release.load(); }, 20s, 10ms);
    r.body = "late";
    return r;
  };
  HttpBackend v1(w.s.echo1, 8080, "v1", slow), v2(w.s.echo2, 8080, "v2", slow);
  w.start();
  auto c = w.connect();
  // grpc-timeout (shorter than the 10s route timeout) bounds the request.
  auto r = c.request("GET", "/x", {{"grpc-timeout", "200m"}});
  CHECK(r.status == 408);
  CHECK(r.body == "downstream duration timeout");
  release = true;
  auto d = w.connect();
  auto r2 = d.request("GET", "/y", {{"grpc-timeout", "5S"}});
  CHECK(r2.status == 200);
}

TEST_CASE("waypoint h2: a stream whose header block does not end times out with 408",
          "[e2e][waypoint][h2]") {
  WaypointMesh w;  // requestHeadersTimeout 1s (the fixture's)
  w.echo_app_protocol("http2");
  H2Backend v1(w.s.echo1, 8080, "v1"), v2(w.s.echo2, 8080, "v2");
  w.start();
  Fd fd = raw_connect(w);
  // HEADERS without END_HEADERS and no CONTINUATION after it.
  std::string out = preface_and_settings();
  out += h2_frame(NGHTTP2_HEADERS, 0, 1, hpack_request("/stalled", "echo"));
  REQUIRE(send_all(fd.get(), out.data(), out.size()));
  // The waypoint answers stream 1 (HEADERS or RST_STREAM) or closes the connection.
  bool answered = false;
  std::string in;
  char buf[4096];
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!answered && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n <= 0) {
      answered = true;
      break;
    }
    in.append(buf, static_cast<size_t>(n));
    while (in.size() >= 9) {
      size_t len = (static_cast<uint8_t>(in[0]) << 16) | (static_cast<uint8_t>(in[1]) << 8) |
                   static_cast<uint8_t>(in[2]);
      if (in.size() < 9 + len) break;
      uint8_t type = static_cast<uint8_t>(in[3]);
      uint32_t sid = (static_cast<uint32_t>(static_cast<uint8_t>(in[5]) & 0x7f) << 24) |
                     (static_cast<uint32_t>(static_cast<uint8_t>(in[6])) << 16) |
                     (static_cast<uint32_t>(static_cast<uint8_t>(in[7])) << 8) |
                     static_cast<uint8_t>(in[8]);
      if ((type == NGHTTP2_HEADERS || type == NGHTTP2_RST_STREAM) && sid == 1) answered = true;
      if (type == NGHTTP2_GOAWAY) answered = true;
      in.erase(0, 9 + len);
    }
  }
  CHECK(answered);
  CHECK(v1.requests() + v2.requests() == 0);
  bool logged = wait_until([&] {
    return read_file(w.access_log()).find("\"response_code_details\":\"request_header_timeout\"") != std::string::npos;
  }, 5s);
  CHECK(logged);
  auto c = h2_connect(w);
  CHECK(c.fetch("GET", "/after").status == 200);
}
