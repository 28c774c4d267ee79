#include "path.h"

#include <catch2/catch.hpp>
#include <string>

using namespace warren::waypoint;

namespace {

std::string norm(std::string_view t, const PathOptions& o = {}) {
  auto r = normalize_target(t, "GET", o);
  REQUIRE(r.ok());
  return r->target();
}

std::string err(std::string_view t, const PathOptions& o = {}, std::string_view method = "GET") {
  auto r = normalize_target(t, method, o);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == warren::Errc::kInvalidArgument);
  return r.error().message;
}

}  // namespace

TEST_CASE("path: deny-rule bypasses from the issue all become /admin", "[path]") {
  for (const char* t : {"/admin", "//admin", "/%61dmin", "/public/../admin", "/%2e%2e/admin",
                        "/./admin", "/public/%2E%2E/admin", "/a/b/../../admin", "/../../admin",
                        "/public/..\\admin", "/public/./../admin", "/%2e/admin"}) {
    INFO(t);
    auto r = normalize_target(t);
    REQUIRE(r.ok());
    CHECK(r->path == "/admin");
  }
  CHECK(norm("///admin/") == "/admin/");
  // Case is kept (Envoy does no case normalisation): %41%44 -> AD.
  CHECK(norm("/%41%44min") == "/ADmin");
}

TEST_CASE("path: percent-escapes decoded only when unreserved and hex upper-cased", "[path]") {
  CHECK(norm("/%61%2d%5f%7e%30") == "/a-_~0");
  CHECK(norm("/a%2fb") == "/a%2Fb");
  CHECK(norm("/a%3a%3Fb") == "/a%3A%3Fb");
  CHECK(norm("/%25") == "/%25");
  CHECK(norm("/caf\xc3\xa9") == "/caf%C3%A9");
}

TEST_CASE("path: remove_dot_segments as RFC 3986 5.2.4", "[path]") {
  CHECK(norm("/a/b/c/./../../g") == "/a/g");
  CHECK(norm("/a/b/..") == "/a/");
  CHECK(norm("/a/b/.") == "/a/b/");
  CHECK(norm("/..") == "/");
  CHECK(norm("/../..") == "/");
  CHECK(norm("/a/..b/c") == "/a/..b/c");
  CHECK(norm("/a/.b") == "/a/.b");
  CHECK(norm("/") == "/");
}

TEST_CASE("path: merge slashes by option", "[path]") {
  CHECK(norm("//a///b//") == "/a/b/");
  PathOptions base = PathOptions::from_istio("BASE").value();
  CHECK(norm("//a///b//", base) == "//a///b//");
  CHECK(norm("/a//../b", base) == "/a/b");
}

TEST_CASE("path: query split at the first question mark and kept verbatim", "[path]") {
  auto r = normalize_target("/a/../b?x=%2f&y=/../?z");
  REQUIRE(r.ok());
  CHECK(r->path == "/b");
  CHECK(r->has_query);
  CHECK(r->query == "x=%2f&y=/../?z");
  CHECK(r->target() == "/b?x=%2f&y=/../?z");
  auto e = normalize_target("/b?");
  REQUIRE(e.ok());
  CHECK(e->has_query);
  CHECK(e->query.empty());
}

TEST_CASE("path: bad targets are refused with a reason", "[path]") {
  CHECK(err(std::string("/a\0b", 4)).find("NUL") != std::string::npos);
  CHECK(err("/a%00b").find("NUL") != std::string::npos);
  CHECK(err("/a\x01").find("control") != std::string::npos);
  CHECK(err("/a\x7f").find("control") != std::string::npos);
  CHECK(err("/a b").find("space") != std::string::npos);
  CHECK(err("/a#frag").find("fragment") != std::string::npos);
  CHECK(err("/a?q#frag").find("fragment") != std::string::npos);
  CHECK(err("/a?q\r\n").find("control") != std::string::npos);
  CHECK(err("a/b").find("must start with /") != std::string::npos);
  CHECK(err("").find("must start with /") != std::string::npos);
  CHECK(err("http://x/y").find("must start with /") != std::string::npos);
  CHECK(err("\\admin").find("must start with /") != std::string::npos);
  CHECK(err("/%zz").find("percent") != std::string::npos);
  CHECK(err("/%4").find("percent") != std::string::npos);
  CHECK(err("/%").find("percent") != std::string::npos);
}

TEST_CASE("path: asterisk only for OPTIONS", "[path]") {
  auto r = normalize_target("*", "OPTIONS");
  REQUIRE(r.ok());
  CHECK(r->path == "*");
  CHECK(err("*", {}, "GET").find("OPTIONS") != std::string::npos);
  CHECK(err("*x", {}, "OPTIONS").find("must start with /") != std::string::npos);
}

TEST_CASE("path: escaped slashes KEEP_UNCHANGED", "[path]") {
  PathOptions o;
  o.escaped_slashes = EscapedSlashes::kKeepUnchanged;
  CHECK(norm("/a%2f..%2fadmin", o) == "/a%2F..%2Fadmin");
  CHECK(norm("/a%5cb", o) == "/a%5Cb");
}

TEST_CASE("path: escaped slashes REJECT_REQUEST", "[path]") {
  PathOptions o;
  o.escaped_slashes = EscapedSlashes::kRejectRequest;
  CHECK(err("/a%2Fb", o).find("escaped slash") != std::string::npos);
  CHECK(err("/a%5cb", o).find("escaped slash") != std::string::npos);
  CHECK(norm("/a%252Fb", o) == "/a%252Fb");  // an escaped %, not a slash
  CHECK(norm("/a?x=%2F", o) == "/a?x=%2F");  // the query is not the path
}

TEST_CASE("path: escaped slashes UNESCAPE_AND_FORWARD then normalise", "[path]") {
  PathOptions o = PathOptions::from_istio("DECODE_AND_MERGE_SLASHES").value();
  CHECK(o.escaped_slashes == EscapedSlashes::kUnescapeAndForward);
  CHECK(norm("/public%2F..%2Fadmin", o) == "/admin");
  CHECK(norm("/a%2F%2Fb", o) == "/a/b");
  CHECK(norm("/a%5Cb", o) == "/a/b");  // %5C -> backslash -> slash
  auto r = normalize_target("/a%2Fb", "GET", o);
  REQUIRE(r.ok());
  CHECK_FALSE(r->redirect);
}

TEST_CASE("path: escaped slashes UNESCAPE_AND_REDIRECT flags a redirect", "[path]") {
  PathOptions o;
  o.escaped_slashes = EscapedSlashes::kUnescapeAndRedirect;
  auto r = normalize_target("/a%2fb?q=1", "GET", o);
  REQUIRE(r.ok());
  CHECK(r->redirect);
  CHECK(r->target() == "/a/b?q=1");
  auto plain = normalize_target("/a/b?q=%2F", "GET", o);
  REQUIRE(plain.ok());
  CHECK_FALSE(plain->redirect);
}

TEST_CASE("path: backslash handling", "[path]") {
  CHECK(norm("/a\\b\\..\\c") == "/a/c");
  PathOptions keep;
  keep.backslash = Backslash::kKeep;
  CHECK(norm("/a\\b", keep) == "/a\\b");
  PathOptions rej;
  rej.backslash = Backslash::kReject;
  CHECK(err("/a\\b", rej).find("backslash") != std::string::npos);
}

TEST_CASE("path: Istio levels", "[path]") {
  auto none = PathOptions::from_istio("NONE");
  REQUIRE(none.ok());
  CHECK(norm("//a/../%61%2f", *none) == "//a/../%61%2f");
  auto base = PathOptions::from_istio("BASE");
  REQUIRE(base.ok());
  CHECK_FALSE(base->merge_slashes);
  CHECK(base->normalize);
  auto merge = PathOptions::from_istio("MERGE_SLASHES");
  REQUIRE(merge.ok());
  CHECK(merge->merge_slashes);
  CHECK(merge->escaped_slashes == EscapedSlashes::kKeepUnchanged);
  auto bad = PathOptions::from_istio("merge_slashes");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().message.find("pathNormalization") != std::string::npos);
}

TEST_CASE("path: normalisation is idempotent on examples", "[path]") {
  for (const char* t : {"/a/./b/../../c//d/%2e%2E/e%2f", "/%7Euser/%7e", "/\\..\\..\\x",
                        "/a/..%2F..", "/.//..//./a"}) {
    INFO(t);
    auto once = normalize_path(t);
    REQUIRE(once.ok());
    auto twice = normalize_path(*once);
    REQUIRE(twice.ok());
    CHECK(*once == *twice);
    CHECK(once->find("//") == std::string::npos);
    CHECK(once->find("/../") == std::string::npos);
    CHECK(once->find("/./") == std::string::npos);
  }
}
