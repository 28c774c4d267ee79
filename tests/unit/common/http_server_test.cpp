#include "warren/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <uv.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace warren;
using namespace warren::http;

namespace {

// A server on its own loop thread, bound to 127.0.0.1 port 0. Routes are added
// before the loop starts; the destructor destroys the Server on the loop
// thread with connections possibly still open, and checks the loop is empty.
class TestServer {
 public:
  explicit TestServer(Options opts = {}) {
    REQUIRE(uv_loop_init(&loop_) == 0);
    server_ = std::make_unique<Server>(&loop_, opts);
    server_->route("GET", "/hello", [](const Request& r) {
      Response resp;
      resp.body = "hello " + r.query_param("name") + "\n";
      resp.headers.emplace_back("X-Test", "yes\r\nInjected: no");
      return resp;
    });
    server_->route("POST", "/echo", [](const Request& r) {
      Response resp;
      resp.content_type = "application/octet-stream";
      resp.body = r.body;
      return resp;
    });
    server_->route("GET", "/echo", [](const Request& r) {
      return Response{200, "text/plain", r.header("x-tag"), {}};
    });
    server_->route("GET", "/throw",
                   [](const Request&) -> Response { throw std::runtime_error("handler bug"); });
    server_->route("GET", "/conns", [this](const Request&) {
      return Response{200, "text/plain", std::to_string(server_->connection_count()), {}};
    });
    auto bound = server_->listen(*SockAddr::parse("127.0.0.1:0"));
    REQUIRE(bound.ok());
    addr_ = *bound;
    REQUIRE(addr_.port != 0);
    REQUIRE(uv_async_init(&loop_, &stop_, on_stop) == 0);
    stop_.data = this;
    thread_ = std::thread([this] { uv_run(&loop_, UV_RUN_DEFAULT); });
  }

  ~TestServer() {
    uv_async_send(&stop_);
    thread_.join();
    CHECK(uv_loop_close(&loop_) == 0);  // every handle was closed
  }

  const SockAddr& addr() const { return addr_; }

 private:
  static void on_stop(uv_async_t* a) {
    auto* self = static_cast<TestServer*>(a->data);
    self->server_.reset();  // closes listener and live connections
    uv_close(reinterpret_cast<uv_handle_t*>(a), nullptr);
  }

  uv_loop_t loop_;
  uv_async_t stop_;
  std::unique_ptr<Server> server_;
  SockAddr addr_;
  std::thread thread_;
};

class Client {
 public:
  explicit Client(const SockAddr& addr, int timeout_ms = 5000) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd_ >= 0);
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_storage ss{};
    socklen_t len = addr.to_sockaddr(&ss);
    REQUIRE(connect(fd_, reinterpret_cast<sockaddr*>(&ss), len) == 0);
  }
  ~Client() { ::close(fd_); }

  // Returns false if the peer stopped accepting data.
  bool send(const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }

  // Reads until EOF. closed_ tells whether EOF (not a timeout) ended it.
  std::string read_all() {
    char buf[8192];
    for (;;) {
      ssize_t n = recv(fd_, buf, sizeof buf, 0);
      if (n == 0) {
        closed_ = true;
        break;
      }
      if (n < 0) {
        reset_ = errno == ECONNRESET;
        break;
      }
      buffered_.append(buf, static_cast<size_t>(n));
    }
    return std::exchange(buffered_, {});
  }

  struct Resp {
    int status = 0;
    std::map<std::string, std::string> headers;  // lower-cased
    std::string body;
  };

  // Reads exactly one response (Content-Length framed; no body for HEAD).
  Resp read_response(bool head_request = false) {
    Resp r;
    size_t head_end;
    while ((head_end = buffered_.find("\r\n\r\n")) == std::string::npos) {
      REQUIRE(fill());
    }
    std::string head = buffered_.substr(0, head_end);
    buffered_.erase(0, head_end + 4);
    REQUIRE(head.rfind("HTTP/1.1 ", 0) == 0);
    r.status = std::stoi(head.substr(9, 3));
    size_t pos = head.find("\r\n");
    while (pos != std::string::npos) {
      size_t next = head.find("\r\n", pos + 2);
      std::string line =
          head.substr(pos + 2, next == std::string::npos ? std::string::npos : next - pos - 2);
      size_t colon = line.find(':');
      REQUIRE(colon != std::string::npos);
      std::string name = line.substr(0, colon);
      for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      r.headers[name] = line.substr(colon + 2);
      pos = next;
    }
    size_t len = head_request ? 0 : std::stoul(r.headers.at("content-length"));
    while (buffered_.size() < len) REQUIRE(fill());
    r.body = buffered_.substr(0, len);
    buffered_.erase(0, len);
    return r;
  }

  // True if the server closed the connection (EOF) with nothing more to read.
  bool expect_eof() {
    std::string rest = read_all();
    return (closed_ || reset_) && rest.empty();
  }

 private:
  bool fill() {
    char buf[8192];
    ssize_t n = recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return false;
    buffered_.append(buf, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  std::string buffered_;
  bool closed_ = false;
  bool reset_ = false;
};

}  // namespace

TEST_CASE("http: query parameters are decoded", "[http]") {
  Request r;
  r.query = "a=1&name=hello+w%6Frld&empty=&flag&bad=%zz&a=2";
  CHECK(r.query_param("a") == "1");
  CHECK(r.query_param("name") == "hello world");
  CHECK(r.query_param("empty").empty());
  CHECK(r.has_query_param("flag"));
  CHECK(r.has_query_param("empty"));
  CHECK_FALSE(r.has_query_param("missing"));
  CHECK(r.query_param("bad") == "%zz");
  CHECK(reason_phrase(431) == std::string("Request Header Fields Too Large"));
}

TEST_CASE("http: GET, HEAD and keep-alive on one connection", "[http]") {
  TestServer ts;
  Client c(ts.addr());
  REQUIRE(c.send("GET /hello?name=warren HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto r = c.read_response();
  CHECK(r.status == 200);
  CHECK(r.body == "hello warren\n");
  CHECK(r.headers["content-type"] == "text/plain; charset=utf-8");
  CHECK(r.headers["x-test"] == "yesInjected: no");  // CR/LF stripped from handler headers
  CHECK(r.headers.count("connection") == 0);
  CHECK(r.headers.count("injected") == 0);

  REQUIRE(c.send("HEAD /hello?name=x HTTP/1.1\r\nHost: x\r\n\r\n"));
  r = c.read_response(/*head_request=*/true);
  CHECK(r.status == 200);
  CHECK(r.headers["content-length"] == "8");  // "hello x\n", not sent
  CHECK(r.body.empty());

  REQUIRE(c.send("GET /echo HTTP/1.1\r\nX-Tag: one\r\nx-tag: two\r\n\r\n"));
  r = c.read_response();
  CHECK(r.body == "one, two");  // repeated headers joined, names lower-cased

  REQUIRE(c.send("POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nab\ncd"));
  r = c.read_response();
  CHECK(r.body == "ab\ncd");
  CHECK(r.headers["content-type"] == "application/octet-stream");

  REQUIRE(
      c.send("POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
             "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"));
  r = c.read_response();
  CHECK(r.body == "abcde");

  REQUIRE(c.send("GET /conns HTTP/1.1\r\nConnection: close\r\n\r\n"));
  r = c.read_response();
  CHECK(r.body == "1");
  CHECK(r.headers["connection"] == "close");
  CHECK(c.expect_eof());
}

TEST_CASE("http: pipelined requests are answered in order", "[http]") {
  TestServer ts;
  Client c(ts.addr());
  std::string batch;
  for (int i = 0; i < 20; ++i)
    batch += "GET /hello?name=" + std::to_string(i) + " HTTP/1.1\r\n\r\n";
  batch += "GET /echo HTTP/1.1\r\nX-Tag: last\r\nConnection: close\r\n\r\n";
  batch += "GET /hello?name=after-close HTTP/1.1\r\n\r\n";  // never answered
  REQUIRE(c.send(batch));
  for (int i = 0; i < 20; ++i) {
    auto r = c.read_response();
    CHECK(r.status == 200);
    CHECK(r.body == "hello " + std::to_string(i) + "\n");
  }
  auto r = c.read_response();
  CHECK(r.body == "last");
  CHECK(c.expect_eof());
}

TEST_CASE("http: 404 lists endpoints, 405 gives Allow", "[http]") {
  TestServer ts;
  Client c(ts.addr());
  REQUIRE(c.send("GET /nope HTTP/1.1\r\n\r\n"));
  auto r = c.read_response();
  CHECK(r.status == 404);
  CHECK(r.body.find("GET /hello\n") != std::string::npos);
  CHECK(r.body.find("POST /echo\n") != std::string::npos);
  CHECK(r.body.find("GET /echo\n") != std::string::npos);
  CHECK(r.body.find("/nope") == std::string::npos);  // request text is not reflected

  REQUIRE(c.send("DELETE /echo HTTP/1.1\r\n\r\n"));
  r = c.read_response();
  CHECK(r.status == 405);
  CHECK(r.headers["allow"] == "GET, POST");

  REQUIRE(c.send("GET /throw HTTP/1.1\r\n\r\n"));
  r = c.read_response();
  CHECK(r.status == 500);
  CHECK(r.body.find("handler bug") != std::string::npos);

  // The connection survived all of that.
  REQUIRE(c.send("GET /hello HTTP/1.1\r\n\r\n"));
  CHECK(c.read_response().status == 200);
}

TEST_CASE("http: malformed requests get 400 and the connection is closed", "[http]") {
  TestServer ts;
  {
    Client c(ts.addr());
    REQUIRE(c.send("GET / HTTP/9.9\r\n\r\n"));
    CHECK(c.read_response().status == 505);
    CHECK(c.expect_eof());
  }
  for (const char* bad : {
           "GARBAGE\r\n\r\n",
           "GET /a b c HTTP/1.1\r\n\r\n",
           "GET /hello HTTP/1.1\r\nHost: a\rb\r\n\r\n",
           "GET /hello HTTP/1.1\r\nBad Header\r\n\r\n",
           "GET /hello HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
           "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
       }) {
    INFO(bad);
    Client c(ts.addr());
    // A good request first: its response must still arrive before the 400.
    REQUIRE(c.send(std::string("GET /hello?name=ok HTTP/1.1\r\n\r\n") + bad));
    auto r = c.read_response();
    CHECK(r.status == 200);
    r = c.read_response();
    CHECK(r.status == 400);
    CHECK(r.headers["connection"] == "close");
    CHECK(c.expect_eof());
  }
}

TEST_CASE("http: oversized head gets 431, oversized body 413", "[http]") {
  TestServer ts;
  {
    Client c(ts.addr());
    std::string req = "GET /hello HTTP/1.1\r\n";
    for (int i = 0; i < 40; ++i)
      req += "X-Filler-" + std::to_string(i) + ": " + std::string(500, 'a') + "\r\n";
    req += "\r\n";
    c.send(req);  // the server may stop reading part way
    auto r = c.read_response();
    CHECK(r.status == 431);
    CHECK(c.expect_eof());
  }
  {
    Client c(ts.addr());
    c.send("GET /" + std::string(17 * 1024, 'p') + " HTTP/1.1\r\n\r\n");  // long URL
    CHECK(c.read_response().status == 431);
    CHECK(c.expect_eof());
  }
  {
    Client c(ts.addr());  // declared length over the limit: refused before the body
    REQUIRE(c.send("POST /echo HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n"));
    CHECK(c.read_response().status == 413);
    CHECK(c.expect_eof());
  }
  {
    Client c(ts.addr());  // chunked body that grows past the limit
    std::string req = "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    std::string chunk = "10000\r\n" + std::string(0x10000, 'b') + "\r\n";
    for (int i = 0; i < 17; ++i) req += chunk;
    c.send(req);
    CHECK(c.read_response().status == 413);
    CHECK(c.expect_eof());
  }
  {
    Client c(ts.addr());  // exactly at the limit is fine
    std::string body(1024 * 1024, 'z');
    REQUIRE(c.send("POST /echo HTTP/1.1\r\nContent-Length: " + std::to_string(body.size()) +
                   "\r\n\r\n" + body));
    auto r = c.read_response();
    CHECK(r.status == 200);
    CHECK(r.body.size() == body.size());
  }
}

TEST_CASE("http: idle and slow clients are closed", "[http]") {
  Options o;
  o.idle_timeout_ms = 200;
  TestServer ts(o);
  auto start = std::chrono::steady_clock::now();
  Client idle(ts.addr());
  Client slow(ts.addr());
  REQUIRE(slow.send("GET /hello HTTP/1.1\r\nX-Slow: "));  // never finishes
  CHECK(idle.expect_eof());
  CHECK(slow.expect_eof());
  auto took = std::chrono::steady_clock::now() - start;
  CHECK(took < std::chrono::seconds(4));  // well before the client's own 5 s timeout

  // A keep-alive client that keeps completing requests is not cut off.
  Client busy(ts.addr());
  for (int i = 0; i < 3; ++i) {
    REQUIRE(busy.send("GET /hello HTTP/1.1\r\n\r\n"));
    CHECK(busy.read_response().status == 200);
  }
}

TEST_CASE("http: HTTP/1.0 closes unless keep-alive is asked for", "[http]") {
  TestServer ts;
  {
    Client c(ts.addr());
    REQUIRE(c.send("GET /hello HTTP/1.0\r\n\r\n"));
    auto r = c.read_response();
    CHECK(r.status == 200);
    CHECK(r.headers["connection"] == "close");
    CHECK(c.expect_eof());
  }
  {
    Client c(ts.addr());
    REQUIRE(c.send("GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    auto r = c.read_response();
    CHECK(r.headers["connection"] == "keep-alive");
    REQUIRE(c.send("GET /hello HTTP/1.0\r\n\r\n"));
    CHECK(c.read_response().status == 200);
    CHECK(c.expect_eof());
  }
}

TEST_CASE("http: connection limit", "[http]") {
  Options o;
  o.max_connections = 2;
  TestServer ts(o);
  Client a(ts.addr()), b(ts.addr());
  REQUIRE(a.send("GET /hello HTTP/1.1\r\n\r\n"));
  REQUIRE(b.send("GET /hello HTTP/1.1\r\n\r\n"));
  CHECK(a.read_response().status == 200);
  CHECK(b.read_response().status == 200);
  Client extra(ts.addr());  // accepted by the kernel, closed by the server
  CHECK(extra.expect_eof());
}

TEST_CASE("http: destroying the server closes open connections", "[http]") {
  auto ts = std::make_unique<TestServer>();
  Client a(ts->addr()), b(ts->addr());
  REQUIRE(a.send("GET /hello HTTP/1.1\r\n\r\n"));
  CHECK(a.read_response().status == 200);
  REQUIRE(b.send("GET /hel"));  // half a request
  ts.reset();                   // joins the loop thread; checks uv_loop_close() == 0
  CHECK(a.expect_eof());
  CHECK(b.expect_eof());
}

TEST_CASE("http: listen errors and explicit close", "[http]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    Server s1(&loop), s2(&loop);
    auto a = s1.listen(*SockAddr::parse("127.0.0.1:0"));
    REQUIRE(a.ok());
    auto again = s1.listen(*SockAddr::parse("127.0.0.1:0"));
    CHECK_FALSE(again.ok());
    auto clash = s2.listen(*a);
    REQUIRE_FALSE(clash.ok());
    CHECK(clash.error().code == Errc::kSystem);
    CHECK(clash.error().message.find("127.0.0.1") != std::string::npos);
    s1.close();
    uv_run(&loop, UV_RUN_NOWAIT);
    // The port is free again after close.
    Server s3(&loop);
    CHECK(s3.listen(*a).ok());
  }
  uv_run(&loop, UV_RUN_DEFAULT);  // run the close callbacks of the destroyed servers
  CHECK(uv_loop_close(&loop) == 0);
}
