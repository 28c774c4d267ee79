// gRPC helpers (status of local replies, content types, grpc-message
// encoding) and the HTTP/2 <-> MessageHead conversions of the waypoint.
#include <catch2/catch.hpp>

#include "grpc.h"
#include "h2_message.h"

using namespace warren;
using namespace warren::waypoint;

TEST_CASE("grpc: local reply status follows Envoy's HTTP to gRPC mapping", "[grpc]") {
  CHECK(grpc_status_for_http(400) == 13);
  CHECK(grpc_status_for_http(401) == 16);
  CHECK(grpc_status_for_http(403) == 7);
  CHECK(grpc_status_for_http(404) == 12);
  CHECK(grpc_status_for_http(429) == 14);
  CHECK(grpc_status_for_http(502) == 14);
  CHECK(grpc_status_for_http(503) == 14);
  CHECK(grpc_status_for_http(504) == 14);
  CHECK(grpc_status_for_http(500) == 2);
  CHECK(grpc_status_for_http(418) == 2);
  CHECK(grpc_status_for_http(200) == 2);
}

TEST_CASE("grpc: content types and grpc-status values", "[grpc]") {
  CHECK(is_grpc_content_type("application/grpc"));
  CHECK(is_grpc_content_type("application/grpc+proto"));
  CHECK(is_grpc_content_type("application/grpc;charset=utf-8"));
  CHECK(is_grpc_content_type("Application/GRPC"));
  CHECK_FALSE(is_grpc_content_type("application/grpc-web"));
  CHECK_FALSE(is_grpc_content_type("application/json"));
  CHECK_FALSE(is_grpc_content_type(""));
  CHECK(is_grpc_request({{"Content-Type", "application/grpc"}}));
  CHECK_FALSE(is_grpc_request({{"accept", "application/grpc"}}));
  CHECK(grpc_status_of({{"grpc-status", "5"}}) == 5);
  CHECK_FALSE(grpc_status_of({{"grpc-status", "5x"}}).has_value());
  CHECK_FALSE(grpc_status_of({{"grpc-status", ""}}).has_value());
  CHECK_FALSE(grpc_status_of({}).has_value());
}

TEST_CASE("grpc: grpc-message is percent-encoded", "[grpc]") {
  CHECK(grpc_message_encode("RBAC: access denied") == "RBAC: access denied");
  CHECK(grpc_message_encode("100%") == "100%25");
  CHECK(grpc_message_encode("a\nb") == "a%0Ab");
  CHECK(grpc_message_encode("caf\xc3\xa9") == "caf%C3%A9");
}

TEST_CASE("h2 message: a request becomes a head with Host from :authority", "[h2_message]") {
  h2::Headers h = {{":method", "POST"},
                   {":scheme", "http"},
                   {":authority", "echo:80"},
                   {":path", "/a?b=1"},
                   {"content-type", "application/grpc"},
                   {"te", "trailers"},
                   {"host", "other"}};
  auto r = request_head_from_h2(h, false);
  REQUIRE(r.ok());
  CHECK(r->method == "POST");
  CHECK(r->target == "/a?b=1");
  CHECK(r->framing == BodyFraming::kUntilClose);
  CHECK(r->headers ==
        Headers{{"host", "echo:80"}, {"content-type", "application/grpc"}, {"te", "trailers"}});
  auto g = request_head_from_h2(
      {{":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {"content-length", "0"}}, true);
  REQUIRE(g.ok());
  CHECK(g->framing == BodyFraming::kNone);
}

TEST_CASE("h2 message: malformed and connection-specific requests are refused", "[h2_message]") {
  const h2::Headers base = {
      {":method", "GET"}, {":scheme", "http"}, {":authority", "a"}, {":path", "/"}};
  auto with = [&](std::string k, std::string v) {
    auto h = base;
    h.push_back({std::move(k), std::move(v)});
    return request_head_from_h2(h, true);
  };
  CHECK_FALSE(with("X-Upper", "1").ok());
  CHECK_FALSE(with("connection", "close").ok());
  CHECK_FALSE(with("keep-alive", "1").ok());
  CHECK_FALSE(with("proxy-connection", "1").ok());
  CHECK_FALSE(with("transfer-encoding", "chunked").ok());
  CHECK_FALSE(with("upgrade", "websocket").ok());
  CHECK_FALSE(with("te", "gzip").ok());
  CHECK_FALSE(with("x-a", "a\r\nb").ok());
  CHECK_FALSE(with("x-a", std::string("a\0b", 3)).ok());
  CHECK_FALSE(with("content-length", "12a").ok());
  CHECK(with("te", "trailers").ok());
  CHECK_FALSE(request_head_from_h2({{":method", "GET"}, {":scheme", "http"}}, true).ok());
  CHECK_FALSE(request_head_from_h2(
                  {{":method", "CONNECT"}, {":protocol", "websocket"}, {":path", "/"}}, true)
                  .ok());
}

TEST_CASE("h2 message: forwarded heads drop hop-by-hop and internal fields", "[h2_message]") {
  MessageHead m;
  m.method = "GET";
  m.target = "/p";
  m.headers = {{"host", "echo"},         {"X-Route", "a"},
               {"x-warren-secret", "s"}, {"te", "trailers"},
               {"connection", "x-drop"}, {"x-drop", "1"},
               {"content-length", "3"},  {"x-forwarded-for", "1.2.3.4"}};
  auto h = h2_request_headers(m);
  CHECK(h == h2::Headers{{":method", "GET"},
                         {":scheme", "http"},
                         {":authority", "echo"},
                         {":path", "/p"},
                         {"x-route", "a"},
                         {"te", "trailers"},
                         {"x-forwarded-for", "1.2.3.4"}});
  auto f = h2_fields({{"grpc-status", "0"}, {"Keep-Alive", "1"}, {"x-warren-x", "1"}});
  CHECK(f == h2::Headers{{"grpc-status", "0"}});
  ForwardOptions local;
  local.strip_internal = false;
  CHECK(h2_fields({{"x-warren-x", "1"}}, local) == h2::Headers{{"x-warren-x", "1"}});
}

TEST_CASE("h2 message: responses and trailers", "[h2_message]") {
  auto r = response_head_from_h2({{":status", "204"}, {"x-a", "b"}}, true);
  REQUIRE(r.ok());
  CHECK(r->status == 204);
  CHECK(r->framing == BodyFraming::kNone);
  CHECK(r->headers == Headers{{"x-a", "b"}});
  CHECK_FALSE(response_head_from_h2({{"x-a", "b"}}, false).ok());
  CHECK_FALSE(response_head_from_h2({{":status", "abc"}}, false).ok());
  CHECK_FALSE(response_head_from_h2({{":status", "200"}, {":path", "/"}}, false).ok());
  auto t = trailers_from_h2({{"grpc-status", "0"}});
  REQUIRE(t.ok());
  CHECK(*t == Headers{{"grpc-status", "0"}});
  CHECK_FALSE(trailers_from_h2({{":status", "200"}}).ok());
}

TEST_CASE("grpc: grpc-timeout values as Envoy reads them", "[grpc]") {
  using std::chrono::milliseconds;
  CHECK(parse_grpc_timeout("1S") == milliseconds(1000));
  CHECK(parse_grpc_timeout("300m") == milliseconds(300));
  CHECK(parse_grpc_timeout("2M") == milliseconds(120000));
  CHECK(parse_grpc_timeout("1H") == milliseconds(3600000));
  CHECK(parse_grpc_timeout("1500u") == milliseconds(2));  // rounded up
  CHECK(parse_grpc_timeout("1n") == milliseconds(1));
  CHECK(parse_grpc_timeout("0m") == milliseconds(0));
  CHECK(parse_grpc_timeout("99999999S") == milliseconds(99999999000LL));
  CHECK_FALSE(parse_grpc_timeout(""));
  CHECK_FALSE(parse_grpc_timeout("S"));
  CHECK_FALSE(parse_grpc_timeout("10"));
  CHECK_FALSE(parse_grpc_timeout("10s"));  // units are case-sensitive: s is not a unit
  CHECK_FALSE(parse_grpc_timeout("123456789S"));  // more than 8 digits
  CHECK_FALSE(parse_grpc_timeout("-1S"));
  CHECK_FALSE(parse_grpc_timeout("1 S"));
}
