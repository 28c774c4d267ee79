#include "http1_forward.h"

#include <catch2/catch.hpp>
#include <string>

using namespace warren::waypoint;

namespace {

MessageHead request(Headers h) {
  MessageHead m;
  m.method = "GET";
  m.target = "/x";
  m.headers = std::move(h);
  return m;
}

}  // namespace

TEST_CASE("http1 forward: hop-by-hop fields dropped and framing redone", "[http1_forward]") {
  auto h = request({{"Host", "svc"},
                    {"Connection", "keep-alive, X-Secret-Hop"},
                    {"X-Secret-Hop", "1"},
                    {"Keep-Alive", "timeout=5"},
                    {"Proxy-Connection", "keep-alive"},
                    {"TE", "trailers, deflate"},
                    {"Transfer-Encoding", "chunked"},
                    {"Content-Length", "5"},
                    {"Upgrade", "websocket"},
                    {"Accept", "*/*"}});
  ForwardOptions o;
  o.framing = BodyFraming::kContentLength;
  o.content_length = 12;
  auto s = serialize_request_head(h, o);
  REQUIRE(s.ok());
  CHECK(*s == "GET /x HTTP/1.1\r\nHost: svc\r\nAccept: */*\r\ncontent-length: 12\r\n\r\n");

  o.framing = BodyFraming::kChunked;
  o.keep_alive = false;
  auto c = serialize_request_head(request({{"Host", "svc"}, {"TE", "trailers"}}), o);
  REQUIRE(c.ok());
  CHECK(*c ==
        "GET /x HTTP/1.1\r\nHost: svc\r\nTE: trailers\r\ntransfer-encoding: chunked\r\n"
        "connection: close\r\n\r\n");
}

TEST_CASE("http1 forward: Upgrade kept only when upgrading", "[http1_forward]") {
  auto h = request({{"Host", "svc"}, {"Connection", "Upgrade"}, {"Upgrade", "websocket"}});
  ForwardOptions o;
  o.upgrade = true;
  auto s = serialize_request_head(h, o);
  REQUIRE(s.ok());
  CHECK(*s == "GET /x HTTP/1.1\r\nHost: svc\r\nUpgrade: websocket\r\nconnection: upgrade\r\n\r\n");
}

TEST_CASE("http1 forward: incoming x-warren fields stripped", "[http1_forward]") {
  auto h = request({{"Host", "svc"},
                    {"X-Warren-Source", "spoofed"},
                    {"x-warren-id", "1"},
                    {"x-warrenish", "kept"}});
  auto s = serialize_request_head(h, {});
  REQUIRE(s.ok());
  CHECK(*s == "GET /x HTTP/1.1\r\nHost: svc\r\nx-warrenish: kept\r\n\r\n");
  ForwardOptions own;
  own.strip_internal = false;
  auto t = serialize_request_head(request({{"x-warren-id", "1"}}), own);
  REQUIRE(t.ok());
  CHECK(t->find("x-warren-id: 1\r\n") != std::string::npos);
}

TEST_CASE("http1 forward: Connection cannot strip the fields the proxy vouches for",
          "[http1_forward]") {
  auto h = request({{"Host", "svc"},
                    {"Connection", "x-forwarded-for, host, x-request-id, authorization"},
                    {"x-forwarded-for", "10.0.0.1"},
                    {"x-request-id", "abc"},
                    {"authorization", "Bearer t"}});
  auto s = serialize_request_head(h, {});
  REQUIRE(s.ok());
  CHECK(*s ==
        "GET /x HTTP/1.1\r\nHost: svc\r\nx-forwarded-for: 10.0.0.1\r\nx-request-id: abc\r\n\r\n");
}

TEST_CASE("http1 forward: unsafe fields refused", "[http1_forward]") {
  CHECK_FALSE(serialize_request_head(request({{"X", "a\r\nInjected: 1"}}), {}).ok());
  CHECK_FALSE(serialize_request_head(request({{"X Y", "a"}}), {}).ok());
  CHECK_FALSE(serialize_request_head(request({{"X", std::string("a\0b", 3)}}), {}).ok());
  auto bad_target = request({});
  bad_target.target = "/a b";
  CHECK_FALSE(serialize_request_head(bad_target, {}).ok());
  MessageHead resp;
  resp.request = false;
  resp.status = 200;
  resp.reason = "OK\r\nX: 1";
  CHECK_FALSE(serialize_response_head(resp, {}).ok());
}

TEST_CASE("http1 forward: response head and chunks", "[http1_forward]") {
  MessageHead r;
  r.request = false;
  r.status = 404;
  r.reason = "Not Found";
  r.headers = {{"Content-Type", "text/plain"}, {"Keep-Alive", "x"}};
  ForwardOptions o;
  o.framing = BodyFraming::kChunked;
  auto s = serialize_response_head(r, o);
  REQUIRE(s.ok());
  CHECK(*s ==
        "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n");
  CHECK(encode_chunk("hello world, hello!") == "13\r\nhello world, hello!\r\n");
  CHECK(encode_chunk("").empty());
  auto last = encode_last_chunk({{"grpc-status", "0"}});
  REQUIRE(last.ok());
  CHECK(*last == "0\r\ngrpc-status: 0\r\n\r\n");
  CHECK_FALSE(encode_last_chunk({{"x", "a\nb"}}).ok());
}

TEST_CASE("http1 forward: HTTP/2 header lists checked before HTTP/1", "[http1_forward]") {
  Headers good{{":method", "GET"},  {":path", "/"},     {":authority", "svc"},
               {":scheme", "http"}, {"te", "trailers"}, {"x-a", "b c"}};
  CHECK(validate_h2_headers(good).ok());
  auto why = [](Headers h) {
    auto r = validate_h2_headers(h);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == warren::Errc::kProtocol);
    return r.error().message;
  };
  CHECK(why({{"X-Upper", "1"}}) == "header \"X-Upper\": upper-case name");
  for (const char* n :
       {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})
    CHECK(why({{n, "x"}}).find("connection-specific") != std::string::npos);
  CHECK(why({{"te", "gzip"}}).find("TE other than") != std::string::npos);
  CHECK(why({{"x", "a\r\nb: c"}}).find("CR, LF or NUL") != std::string::npos);
  CHECK(why({{"x", "a\nb"}}).find("CR, LF or NUL") != std::string::npos);
  CHECK(why({{"x", std::string("a\0", 2)}}).find("CR, LF or NUL") != std::string::npos);
  CHECK(why({{"x", " a"}}).find("whitespace") != std::string::npos);
  CHECK(why({{"x y", "a"}}).find("not a token") != std::string::npos);
  CHECK(why({{"x", "a"}, {":path", "/"}}).find("pseudo-header after") != std::string::npos);
  CHECK(why({{":foo", "a"}}).find("unknown pseudo-header") != std::string::npos);
  CHECK(why({{"", "a"}}).find("empty name") != std::string::npos);
}
