#include "http1.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "http1_util.h"

using namespace warren::waypoint;
using namespace warren::waypoint::testing;

TEST_CASE("http1: simple request in any split", "[http1]") {
  std::string in = "GET /a?b=1 HTTP/1.1\r\nHost: svc:80\r\nX-A: 1\r\nx-a:  two \r\n\r\n";
  for (size_t step : {size_t{0}, size_t{1}, size_t{3}, size_t{10}}) {
    Recorder rec;
    Http1Parser p(Http1Parser::Kind::kRequest, rec);
    auto r = feed(p, in, step);
    REQUIRE(r.ok());
    CHECK(*r == in.size());
    REQUIRE(rec.heads.size() == 1);
    auto& h = rec.heads[0];
    CHECK(h.method == "GET");
    CHECK(h.target == "/a?b=1");
    CHECK(h.version_minor == 1);
    CHECK(h.keep_alive);
    CHECK_FALSE(h.upgrade);
    CHECK(h.framing == BodyFraming::kNone);
    REQUIRE(h.headers.size() == 3);
    CHECK(h.headers[0] == Header{"Host", "svc:80"});
    CHECK(h.headers[2] == Header{"x-a", "two"});
    CHECK(rec.complete == 1);
    CHECK(p.idle());
  }
}

TEST_CASE("http1: content-length body streamed and pipelined requests", "[http1]") {
  std::string in =
      "POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world"
      "\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n";
  for (size_t step : {size_t{0}, size_t{1}, size_t{5}}) {
    Recorder rec;
    Http1Parser p(Http1Parser::Kind::kRequest, rec);
    auto r = feed(p, in, step);
    REQUIRE(r.ok());
    CHECK(*r == in.size());
    REQUIRE(rec.heads.size() == 2);
    CHECK(rec.heads[0].framing == BodyFraming::kContentLength);
    CHECK(rec.heads[0].content_length == 11);
    CHECK(rec.bodies[0] == "hello world");
    CHECK(rec.heads[1].target == "/next");
    CHECK(rec.complete == 2);
    if (step == 1) CHECK(rec.body_calls == 11);  // streamed, not buffered
  }
}

TEST_CASE("http1: chunked body with extensions and trailers", "[http1]") {
  std::string in =
      "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5;ext=1\r\nhello\r\n006\r\n world\r\n0\r\ngrpc-status: 0\r\nx-t: v\r\n\r\n";
  for (size_t step : {size_t{0}, size_t{1}, size_t{4}}) {
    Recorder rec;
    Http1Parser p(Http1Parser::Kind::kRequest, rec);
    auto r = feed(p, in, step);
    REQUIRE(r.ok());
    CHECK(*r == in.size());
    REQUIRE(rec.heads.size() == 1);
    CHECK(rec.heads[0].framing == BodyFraming::kChunked);
    CHECK(rec.bodies[0] == "hello world");
    REQUIRE(rec.trailers.size() == 1);
    CHECK(rec.trailers[0] == Headers{{"grpc-status", "0"}, {"x-t", "v"}});
    CHECK(rec.complete == 1);
  }
}

TEST_CASE("http1: response framings", "[http1]") {
  Recorder rec;
  Http1Parser p(Http1Parser::Kind::kResponse, rec);
  std::string in =
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
      "HTTP/1.1 204 No Content\r\n\r\n";
  auto r = p.feed(in);
  REQUIRE(r.ok());
  CHECK(*r == in.size());
  REQUIRE(rec.heads.size() == 3);
  CHECK(rec.heads[0].status == 100);
  CHECK(rec.heads[1].status == 200);
  CHECK(rec.heads[1].reason == "OK");
  CHECK(rec.bodies[1] == "ok");
  CHECK(rec.heads[2].status == 204);
  CHECK(rec.complete == 3);

  Recorder eof;
  Http1Parser q(Http1Parser::Kind::kResponse, eof);
  REQUIRE(q.feed("HTTP/1.0 200 OK\r\n\r\nuntil ").ok());
  REQUIRE(q.feed("close").ok());
  CHECK(eof.complete == 0);
  CHECK(eof.heads[0].framing == BodyFraming::kUntilClose);
  REQUIRE(q.finish().ok());
  CHECK(eof.bodies[0] == "until close");
  CHECK(eof.complete == 1);
  CHECK(q.closed());
}

TEST_CASE("http1: response to HEAD has no body", "[http1]") {
  Recorder rec;
  Http1Parser p(Http1Parser::Kind::kResponse, rec);
  p.set_request_method("HEAD");
  std::string in = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
  REQUIRE(p.feed(in).ok());
  CHECK(rec.complete == 1);
  CHECK(rec.heads[0].framing == BodyFraming::kNone);
  CHECK(p.idle());
}

TEST_CASE("http1: CONNECT and upgrade stop at the end of the head", "[http1]") {
  Recorder rec;
  Http1Parser p(Http1Parser::Kind::kRequest, rec);
  std::string in = "CONNECT svc:443 HTTP/1.1\r\nHost: svc:443\r\n\r\n\x16\x03\x01tls bytes";
  auto r = p.feed(in);
  REQUIRE(r.ok());
  CHECK(*r == in.find('\x16'));
  CHECK(p.upgraded());
  CHECK(rec.heads[0].upgrade);
  CHECK(rec.heads[0].method == "CONNECT");

  Recorder ws;
  Http1Parser q(Http1Parser::Kind::kRequest, ws);
  std::string up =
      "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nframes";
  auto r2 = q.feed(up);
  REQUIRE(r2.ok());
  CHECK(*r2 == up.size() - 6);
  CHECK(ws.heads[0].upgrade);

  Recorder resp;
  Http1Parser s(Http1Parser::Kind::kResponse, resp);
  s.set_request_method("CONNECT");
  std::string ok = "HTTP/1.1 200 OK\r\n\r\ntunnel";
  auto r3 = s.feed(ok);
  REQUIRE(r3.ok());
  CHECK(*r3 == ok.size() - 6);
  CHECK(s.upgraded());
}

TEST_CASE("http1: connection close ends parsing", "[http1]") {
  Recorder rec;
  Http1Parser p(Http1Parser::Kind::kRequest, rec);
  std::string in =
      "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /smuggled HTTP/1.1\r\n";
  auto r = p.feed(in);
  REQUIRE(r.ok());
  CHECK(*r == in.find("GET /smuggled"));
  CHECK(p.closed());
  CHECK_FALSE(rec.heads[0].keep_alive);
  CHECK(rec.heads.size() == 1);
}

TEST_CASE("http1: start line and Host", "[http1]") {
  refused_as("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Http1Reason::kInvalidStartLine, 400);
  refused_as("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", Http1Reason::kInvalidStartLine, 400);
  refused_as("GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n", Http1Reason::kInvalidTarget, 400);
  refused_as("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", Http1Reason::kInvalidStartLine, 400);
  refused_as("BREW / HTTP/1.1\r\nHost: a\r\n\r\n", Http1Reason::kInvalidMethod, 501);
  refused_as("GET / HTTP/2.0\r\nHost: a\r\n\r\n", Http1Reason::kInvalidVersion, 505);
  refused_as("GET / HTTP/1.1\r\n\r\n", Http1Reason::kMissingHost, 400);
  refused_as("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Http1Reason::kDuplicateHost, 400);
  Recorder rec;
  Http1Parser p(Http1Parser::Kind::kRequest, rec);
  REQUIRE(p.feed("\r\n\r\nGET / HTTP/1.0\r\n\r\n").ok());  // leading empty lines; 1.0 needs no Host
  CHECK(rec.complete == 1);
  CHECK_FALSE(rec.heads[0].keep_alive);
}

TEST_CASE("http1: early close is an error", "[http1]") {
  Recorder rec;
  Http1Parser p(Http1Parser::Kind::kRequest, rec);
  REQUIRE(p.feed("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc").ok());
  auto r = p.finish();
  REQUIRE_FALSE(r.ok());
  CHECK(p.failure().reason == Http1Reason::kUnexpectedEof);
  Recorder idle;
  Http1Parser q(Http1Parser::Kind::kRequest, idle);
  REQUIRE(q.finish().ok());
  Recorder half;
  Http1Parser s(Http1Parser::Kind::kRequest, half);
  REQUIRE(s.feed("GET / HT").ok());
  CHECK_FALSE(s.finish().ok());
}

TEST_CASE("http1: bad responses answer 502", "[http1]") {
  Recorder rec;
  Http1Parser p(Http1Parser::Kind::kResponse, rec);
  auto r = p.feed("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
  REQUIRE_FALSE(r.ok());
  CHECK(p.failure().reason == Http1Reason::kDuplicateContentLength);
  CHECK(p.failure().status == 502);
  Recorder rec2;
  Http1Parser q(Http1Parser::Kind::kResponse, rec2);
  REQUIRE_FALSE(q.feed("HTTP/1.1 20 OK\r\n\r\n").ok());
  CHECK(q.failure().reason == Http1Reason::kInvalidStartLine);
}
