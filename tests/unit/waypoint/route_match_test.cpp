#include "route_match.h"

#include <catch2/catch.hpp>
#include <string>

#include "path.h"

using namespace warren::waypoint;
using nlohmann::json;

namespace {

RouteMatch compile(const char* spec) {
  auto r = compile_route_match(json::parse(spec), "/http/0/match");
  if (!r.ok()) FAIL(r.error().message);
  return std::move(*r);
}

std::string compile_error(const char* spec) {
  auto r = compile_route_match(json::parse(spec), "/http/0/match");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == warren::Errc::kInvalidArgument);
  return r.error().message;
}

struct Req {
  std::string method = "GET";
  std::string authority = "reviews:9080";
  std::string target = "/";
  Headers headers;
  std::optional<uint16_t> port = 9080;
};

bool match(const RouteMatch& m, const Req& q) {
  auto n = normalize_target(q.target, q.method);
  REQUIRE(n.ok());
  RequestView v;
  v.method = q.method;
  v.authority = q.authority;
  v.path = n->path;
  v.query = n->query;
  v.headers = &q.headers;
  v.port = q.port;
  return matches(m, v);
}

Req path(const char* t) {
  Req q;
  q.target = t;
  return q;
}

}  // namespace

TEST_CASE("route match: empty or absent match list matches all", "[route_match]") {
  CHECK(match(compile("null"), path("/anything")));
  CHECK(match(compile("[]"), path("/anything")));
  CHECK(match(compile("[{}]"), path("/anything")));
}

TEST_CASE("route match: uri exact prefix regex on the normalised path", "[route_match]") {
  auto exact = compile(R"([{"uri": {"exact": "/admin"}}])");
  for (const char* t : {"/admin", "//admin", "/%61dmin", "/public/../admin", "/admin?x=1"})
    CHECK(match(exact, path(t)));
  CHECK_FALSE(match(exact, path("/admin/")));
  CHECK_FALSE(match(exact, path("/Admin")));
  auto prefix = compile(R"([{"uri": {"prefix": "/api/"}}])");
  CHECK(match(prefix, path("/api/v1")));
  CHECK(match(prefix, path("/x/../api//v1")));
  CHECK_FALSE(match(prefix, path("/apiv1")));
  auto regex = compile(R"([{"uri": {"regex": "/v[0-9]+/.*"}}])");
  CHECK(match(regex, path("/v12/x")));
  CHECK_FALSE(match(regex, path("/x/v12/x")));  // full match, not search
  CHECK_FALSE(match(regex, path("/v12")));
}

TEST_CASE("route match: ignoreUriCase for exact and prefix only", "[route_match]") {
  auto m = compile(R"([{"uri": {"prefix": "/API"}, "ignoreUriCase": true}])");
  CHECK(match(m, path("/api/x")));
  auto r = compile(R"([{"uri": {"regex": "/API"}, "ignoreUriCase": true}])");
  CHECK_FALSE(match(r, path("/api")));
  CHECK(match(r, path("/API")));
}

TEST_CASE("route match: method authority port scheme", "[route_match]") {
  auto m = compile(
      R"([{"method": {"exact": "POST"}, "authority": {"prefix": "reviews"}, "port": 9080}])");
  Req q = path("/");
  q.method = "POST";
  CHECK(match(m, q));
  q.method = "GET";
  CHECK_FALSE(match(m, q));
  q.method = "POST";
  q.port = 80;
  CHECK_FALSE(match(m, q));
  q.port = std::nullopt;
  CHECK_FALSE(match(m, q));
  q.port = 9080;
  q.authority = "ratings:9080";
  CHECK_FALSE(match(m, q));
  auto s = compile(R"([{"scheme": {"exact": "https"}}])");
  CHECK_FALSE(match(s, path("/")));
}

TEST_CASE("route match: headers exact prefix regex presence and withoutHeaders", "[route_match]") {
  auto m = compile(R"([{"headers": {"End-User": {"exact": "jason"}, "x-canary": {},
                                   "x-ver": {"regex": "v[12]"}, "x-p": {"prefix": "ab"}}}])");
  Req q = path("/");
  q.headers = {{"end-user", "jason"}, {"X-Canary", ""}, {"x-ver", "v2"}, {"x-p", "abc"}};
  CHECK(match(m, q));
  q.headers[0].value = "Jason";
  CHECK_FALSE(match(m, q));  // values are case-sensitive
  q.headers[0].value = "jason";
  q.headers.erase(q.headers.begin() + 1);
  CHECK_FALSE(match(m, q));  // presence required
  q.headers.push_back({"x-canary", "1"});
  q.headers.push_back({"x-ver", "v1"});  // two values: "v2,v1", as Envoy joins them
  CHECK_FALSE(match(m, q));

  auto w = compile(R"([{"withoutHeaders": {"x-debug": {}, "x-env": {"exact": "prod"}}}])");
  Req r = path("/");
  CHECK(match(w, r));
  r.headers = {{"x-env", "dev"}};
  CHECK(match(w, r));
  r.headers = {{"x-env", "prod"}};
  CHECK_FALSE(match(w, r));
  r.headers = {{"x-debug", ""}};
  CHECK_FALSE(match(w, r));
}

TEST_CASE("route match: queryParams exact regex presence", "[route_match]") {
  auto m =
      compile(R"([{"queryParams": {"v": {"exact": "2"}, "id": {"regex": "[0-9]+"}, "flag": {}}}])");
  CHECK(match(m, path("/?v=2&id=42&flag")));
  CHECK(match(m, path("/?flag=&id=7&v=2&v=3")));
  CHECK_FALSE(match(m, path("/?v=3&v=2&id=42&flag")));  // first value counts
  CHECK_FALSE(match(m, path("/?v=2&id=x&flag")));
  CHECK_FALSE(match(m, path("/?v=2&id=4")));
  CHECK_FALSE(match(m, path("/")));
  CHECK(query_param("a=1&&b", "b").has_value());
  CHECK_FALSE(query_param("ab=1", "a").has_value());
}

TEST_CASE("route match: blocks are ORed and fields ANDed", "[route_match]") {
  auto m = compile(R"([{"uri": {"prefix": "/a"}, "method": {"exact": "GET"}},
                        {"uri": {"prefix": "/b"}}])");
  Req q = path("/a/1");
  CHECK(match(m, q));
  q.method = "PUT";
  CHECK_FALSE(match(m, q));
  q.target = "/b/1";
  CHECK(match(m, q));
}

TEST_CASE("route match: source labels and namespace fail closed without a source",
          "[route_match]") {
  auto m = compile(R"([{"name": "n", "sourceLabels": {"app": "x", "version": "v1"},
                        "sourceNamespace": "ns", "gateways": ["mesh"], "statPrefix": "s"}])");
  REQUIRE(m.blocks.size() == 1);
  CHECK(m.blocks[0].source_labels.size() == 2);
  CHECK(m.blocks[0].gateways == std::vector<std::string>{"mesh"});
  CHECK_FALSE(match(m, path("/")));  // the view carries no source
  std::vector<std::pair<std::string, std::string>> labels{
      {"app", "x"}, {"version", "v1"}, {"z", "1"}};
  Headers none;
  RequestView v;
  v.path = "/";
  v.headers = &none;
  v.source_labels = &labels;
  v.source_namespace = "ns";
  CHECK(matches(m, v));
  v.source_namespace = "other";
  CHECK_FALSE(matches(m, v));
  v.source_namespace = "ns";
  labels[1].second = "v2";
  CHECK_FALSE(matches(m, v));
  CHECK(compile_error(R"([{"sourceLabels": {"app": 1}}])") ==
        "/http/0/match/0/sourceLabels/app: must be a string");
}

TEST_CASE("route match: pseudo-headers read the request view", "[route_match]") {
  auto m = compile(R"([{"headers": {":authority": {"regex": "reviews(:[0-9]+)?"},
                                   ":method": {"exact": "GET"}, ":path": {"prefix": "/a?"}}}])");
  CHECK(match(m, path("/a?x=1")));
  CHECK_FALSE(match(m, path("/a")));
  Req q = path("/a?x");
  q.authority = "ratings:9080";
  CHECK_FALSE(match(m, q));
  CHECK(compile_error(R"([{"headers": {":status": {}}}])") ==
        "/http/0/match/0/headers/:status: unknown pseudo-header");
}

TEST_CASE("route match: compile errors name the JSON pointer and reason", "[route_match]") {
  CHECK(compile_error(R"([{"uri": {"exact": "/"}}, {"uri": {"regex": "("}}])") ==
        "/http/0/match/1/uri/regex: \"(\" is not a valid RE2 expression: missing )");
  CHECK(compile_error(R"([{"uri": {"exact": "/", "prefix": "/"}}])") ==
        "/http/0/match/0/uri: only one of exact, prefix, regex may be set");
  CHECK(compile_error(R"([{"uri": {}}])") ==
        "/http/0/match/0/uri: one of exact, prefix, regex is required");
  CHECK(compile_error(R"([{"uri": {"suffix": "x"}}])") ==
        "/http/0/match/0/uri/suffix: unknown field (expected exact, prefix or regex)");
  CHECK(compile_error(R"([{"uri": {"exact": 1}}])") ==
        "/http/0/match/0/uri/exact: must be a string");
  CHECK(compile_error(R"([{"url": {}}])") == "/http/0/match/0/url: unknown field");
  CHECK(compile_error(R"([{"port": 70000}])") ==
        "/http/0/match/0/port: must be a port number 1-65535");
  CHECK(compile_error(R"([{"ignoreUriCase": "yes"}])") ==
        "/http/0/match/0/ignoreUriCase: must be a boolean");
  CHECK(compile_error(R"([{"headers": {"a/b c": {}}}])") ==
        "/http/0/match/0/headers/a~1b c: not a valid header name");
  CHECK(compile_error(R"([{"headers": {"x": {"regex": "a**"}}}])")
            .rfind("/http/0/match/0/headers/x/regex: \"a**\" is not a valid RE2 expression: ", 0) ==
        0);
  CHECK(compile_error(R"([{"queryParams": {"q": {"prefix": "a"}}}])") ==
        "/http/0/match/0/queryParams/q/prefix: prefix is not supported for query parameters");
  CHECK(compile_error(R"({"uri": {}})") == "/http/0/match: must be a list of match blocks");
  CHECK(compile_error(R"([1])") == "/http/0/match/0: must be an object");
}
