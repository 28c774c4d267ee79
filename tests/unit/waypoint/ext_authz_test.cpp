#include "ext_authz.h"

#include <catch2/catch.hpp>
#include <string>

using namespace warren::waypoint;
using nlohmann::json;

namespace {

ExtAuthzProvider provider(const char* http) {
  json entry = {{"name", "opa"}, {"envoyExtAuthzHttp", json::parse(http)}};
  auto r = parse_ext_authz_provider(entry, "/extensionProviders/0");
  if (!r.ok()) FAIL(r.error().message);
  return std::move(*r);
}

std::string parse_error(const json& entry) {
  auto r = parse_ext_authz_provider(entry, "/extensionProviders/0");
  REQUIRE_FALSE(r.ok());
  return r.error().message;
}

bool has_line(const std::string& req, const std::string& line) {
  return req.find("\r\n" + line + "\r\n") != std::string::npos;
}

const Headers* find(const Headers& h, const char* name) {
  static Headers one;
  one.clear();
  for (const auto& x : h)
    if (iequals(x.name, name)) one.push_back(x);
  return &one;
}

}  // namespace

TEST_CASE("ext authz: provider fields and defaults", "[ext_authz]") {
  auto p = provider(R"({"service":"opa.authz.svc.cluster.local","port":8181})");
  CHECK(p.name == "opa");
  CHECK(p.service == "opa.authz.svc.cluster.local");
  CHECK(p.port == 8181);
  CHECK(p.timeout == std::chrono::seconds(600));
  CHECK_FALSE(p.fail_open);
  CHECK(p.status_on_error == 403);
  auto q =
      provider(R"({"service":"x","port":9000,"pathPrefix":"/check","timeout":"0.5s","failOpen":true,
      "statusOnError":"503","includeRequestHeadersInCheck":["x-user","x-b3-*"],
      "includeAdditionalHeadersInCheck":{"X-Auth-From":"waypoint"},
      "headersToUpstreamOnAllow":["x-user-id"],"headersToDownstreamOnDeny":["x-reason"]})");
  CHECK(q.path_prefix == "/check");
  CHECK(q.timeout == std::chrono::milliseconds(500));
  CHECK(q.fail_open);
  CHECK(q.status_on_error == 503);
  CHECK(q.additional_headers.at("x-auth-from") == "waypoint");
}

TEST_CASE("ext authz: provider errors name the pointer", "[ext_authz]") {
  CHECK(parse_error({{"envoyExtAuthzHttp", {{"service", "x"}, {"port", 1}}}}) ==
        "/extensionProviders/0/name: is required");
  CHECK(parse_error({{"name", "a"}, {"envoyExtAuthzGrpc", {{"service", "x"}, {"port", 1}}}}) ==
        "/extensionProviders/0/envoyExtAuthzHttp: is required (only the HTTP ext-authz provider is "
        "supported)");
  std::string e = parse_error({{"name", "a"},
                               {"envoyExtAuthzHttp",
                                {{"service", "x"},
                                 {"port", 70000},
                                 {"timeout", "soon"},
                                 {"pathPrefix", "x"},
                                 {"includeAdditionalHeadersInCheck", {{"x-a", "1\r\nx-b: 2"}}}}}});
  CHECK(e.find("/extensionProviders/0/envoyExtAuthzHttp/port: is required (1-65535)") !=
        std::string::npos);
  CHECK(e.find("/extensionProviders/0/envoyExtAuthzHttp/timeout: \"soon\" is not a duration") !=
        std::string::npos);
  CHECK(e.find("/extensionProviders/0/envoyExtAuthzHttp/pathPrefix:") != std::string::npos);
  CHECK(e.find("/extensionProviders/0/envoyExtAuthzHttp/includeAdditionalHeadersInCheck/x-a:") !=
        std::string::npos);
  CHECK(parse_error(
            {{"name", "a"},
             {"envoyExtAuthzHttp", {{"service", "x"}, {"port", 1}, {"statusOnError", "99"}}}}) ==
        "/extensionProviders/0/envoyExtAuthzHttp/statusOnError: must be an HTTP status (200-599)");
}

TEST_CASE("ext authz: the check request carries only allowed headers", "[ext_authz]") {
  auto p = provider(R"({"service":"x","port":9000,"pathPrefix":"/check",
      "includeRequestHeadersInCheck":["x-user","X-B3-*"],
      "includeAdditionalHeadersInCheck":{"x-auth-from":"waypoint","x-user":"override"}})");
  Headers h = {{"Authorization", "Bearer t"},
               {"X-User", "alice"},
               {"x-b3-traceid", "abc"},
               {"cookie", "secret"},
               {"Transfer-Encoding", "chunked"},
               {"Content-Length", "10"},
               {"x-b3-bad", "a\r\nx-injected: 1"},
               {"Host", "spoofed"},
               {":authority", "a"}};
  std::string req = build_check_request(p, "POST", "/api/v1?q=1", "reviews:9080", h, "10.0.0.5");
  CHECK(req.rfind("POST /check/api/v1?q=1 HTTP/1.1\r\nHost: reviews:9080\r\n", 0) == 0);
  CHECK(has_line(req, "Authorization: Bearer t"));
  CHECK(has_line(req, "x-b3-traceid: abc"));
  CHECK(has_line(req, "x-auth-from: waypoint"));
  CHECK(has_line(req, "x-user: override"));
  CHECK_FALSE(has_line(req, "X-User: alice"));
  CHECK(has_line(req, "x-forwarded-for: 10.0.0.5"));
  CHECK(req.find("cookie") == std::string::npos);
  CHECK(req.find("chunked") == std::string::npos);
  CHECK(req.find("injected") == std::string::npos);
  CHECK(req.find("spoofed") == std::string::npos);
  CHECK(req.find("Content-Length: 10") == std::string::npos);
  CHECK(req.size() >= 4);
  CHECK(req.substr(req.size() - 21) == "Content-Length: 0\r\n\r\n");
}

TEST_CASE("ext authz: 200 allows and passes the chosen headers upstream", "[ext_authz]") {
  auto p = provider(R"({"service":"x","port":1,"headersToUpstreamOnAllow":["x-user-id","x-auth-*"],
                        "headersToDownstreamOnAllow":["set-cookie"]})");
  Headers resp = {
      {"x-user-id", "42"},     {"x-auth-level", "2"},
      {"x-other", "no"},       {"set-cookie", "s=1"},
      {"content-length", "0"}, {"x-envoy-auth-headers-to-remove", "authorization, x-drop"}};
  auto v = interpret(p, 200, resp, "ignored");
  CHECK(v.allow);
  CHECK(v.upstream_set == Headers{{"x-user-id", "42"}, {"x-auth-level", "2"}});
  CHECK(v.upstream_remove == std::vector<std::string>{"authorization", "x-drop"});
  CHECK(v.downstream == Headers{{"set-cookie", "s=1"}});
  // Without a list, the upstream request is not changed.
  auto plain = interpret(provider(R"({"service":"x","port":1})"), 200, resp, "");
  CHECK(plain.allow);
  CHECK(plain.upstream_set.empty());
}

TEST_CASE("ext authz: other statuses deny with the service's answer", "[ext_authz]") {
  Headers resp = {{"www-authenticate", "Bearer"},
                  {"x-reason", "nope"},
                  {"x-other", "1"},
                  {"host", "authz"},
                  {"content-length", "4"}};
  auto all = interpret(provider(R"({"service":"x","port":1})"), 401, resp, "nope");
  CHECK_FALSE(all.allow);
  CHECK(all.status == 401);
  CHECK(all.body == "nope");
  CHECK(all.downstream ==
        Headers{{"www-authenticate", "Bearer"}, {"x-reason", "nope"}, {"x-other", "1"}});
  auto some =
      interpret(provider(R"({"service":"x","port":1,"headersToDownstreamOnDeny":["x-reason"]})"),
                403, resp, "");
  CHECK(some.downstream == Headers{{"www-authenticate", "Bearer"}, {"x-reason", "nope"}});
  CHECK(find(some.downstream, "x-other")->empty());
  // 204 is not 200: a denial (as Envoy).
  CHECK_FALSE(interpret(provider(R"({"service":"x","port":1})"), 204, {}, "").allow);
}

TEST_CASE("ext authz: failures deny unless failOpen", "[ext_authz]") {
  auto closed = provider(R"({"service":"x","port":1})");
  auto f = on_failure(closed);
  CHECK_FALSE(f.allow);
  CHECK(f.status == 403);
  auto err = provider(R"({"service":"x","port":1,"statusOnError":"503"})");
  CHECK(on_failure(err).status == 503);
  // A 5xx from the service is a failure, not a denial with its status.
  CHECK(interpret(err, 500, {}, "boom").status == 503);
  CHECK(interpret(closed, 502, {}, "").status == 403);
  auto open = provider(R"({"service":"x","port":1,"failOpen":true})");
  CHECK(on_failure(open).allow);
  CHECK(interpret(open, 503, {}, "").allow);
}
