// JwksResolver against a small HTTP server on loopback: fetch, refresh,
// change notification, last good keys kept on errors, inlining.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <mutex>
#include <thread>

#include "jwks_resolver.h"

using warren::controller::inline_jwks;
using warren::controller::JwksResolver;
using warren::controller::JwksResolverOptions;
using nlohmann::json;

namespace {

// Answers every request with the current status and body, one per connection.
class TinyHttp {
 public:
  TinyHttp() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    REQUIRE(::listen(fd_, 16) == 0);
    th_ = std::thread([this] { run(); });
  }
  ~TinyHttp() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    th_.join();
  }
  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port_) + path; }
  void set(int status, std::string body) {
    std::lock_guard<std::mutex> g(mu_);
    status_ = status;
    body_ = std::move(body);
  }
  int requests() const { return requests_; }
  std::string last_path() {
    std::lock_guard<std::mutex> g(mu_);
    return last_path_;
  }

 private:
  void run() {
    while (!stop_) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string req;
      char buf[4096];
      while (req.find("\r\n\r\n") == std::string::npos) {
        ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        req.append(buf, static_cast<size_t>(n));
      }
      std::string out;
      {
        std::lock_guard<std::mutex> g(mu_);
        auto sp = req.find(' ');
        last_path_ = req.substr(sp + 1, req.find(' ', sp + 1) - sp - 1);
        out = "HTTP/1.1 " + std::to_string(status_) + " X\r\nContent-Type: application/json\r\nContent-Length: " +
              std::to_string(body_.size()) + "\r\nConnection: close\r\n\r\n" + body_;
      }
      ++requests_;
      ::send(c, out.data(), out.size(), MSG_NOSIGNAL);
      ::close(c);
    }
  }
  int fd_ = -1;
  uint16_t port_ = 0;
  std::thread th_;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::mutex mu_;
  int status_ = 200;
  std::string body_;
  std::string last_path_;
};

template <typename F>
bool run_until(uv_loop_t* loop, F cond, std::chrono::milliseconds limit = std::chrono::milliseconds(5000)) {
  auto end = std::chrono::steady_clock::now() + limit;
  uv_timer_t tick;
  uv_timer_init(loop, &tick);
  uv_timer_start(&tick, [](uv_timer_t*) {}, 10, 10);
  bool ok = false;
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) {
      ok = true;
      break;
    }
    uv_run(loop, UV_RUN_ONCE);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
  uv_run(loop, UV_RUN_NOWAIT);
  return ok;
}

const char* kKeys1 = R"({"keys":[{"kty":"EC","crv":"P-256","kid":"a","x":"AA","y":"AA"}]})";
const char* kKeys2 = R"({"keys":[{"kty":"EC","crv":"P-256","kid":"b","x":"AA","y":"AA"}]})";

json request_authn(const std::string& uri) {
  return {{"apiVersion", "security.istio.io/v1"},
          {"kind", "RequestAuthentication"},
          {"metadata", {{"name", "jwt"}, {"namespace", "default"}}},
          {"spec", {{"jwtRules", json::array({{{"issuer", "https://idp"}, {"jwksUri", uri}},
                                              {{"issuer", "inline"}, {"jwksUri", uri}, {"jwks", "{\"keys\":[]}"}}})}}}};
}

}  // namespace

TEST_CASE("jwks resolver: fetches refreshes and reports changes only", "[controller][jwks]") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    TinyHttp idp;
    idp.set(200, kKeys1);
    JwksResolverOptions o;
    o.refresh = std::chrono::milliseconds(100);
    JwksResolver r(&loop, o);
    int changes = 0;
    r.set_on_change([&] { changes++; });
    std::string uri = idp.url("/.well-known/jwks.json?x=1");
    r.set_uris({uri});
    REQUIRE(run_until(&loop, [&] { return r.find(uri) && !r.find(uri)->jwks.empty(); }));
    CHECK(idp.last_path() == "/.well-known/jwks.json?x=1");
    CHECK(r.find(uri)->jwks == kKeys1);
    CHECK(changes == 1);
    // Refreshes with the same keys are not changes.
    REQUIRE(run_until(&loop, [&] { return idp.requests() >= 3; }));
    CHECK(changes == 1);
    // New keys: one change.
    idp.set(200, kKeys2);
    REQUIRE(run_until(&loop, [&] { return r.find(uri)->jwks == kKeys2; }));
    CHECK(changes == 2);

    // The keys go inline into rules that have none; inline keys win.
    auto out = inline_jwks(request_authn(uri), r);
    CHECK(out["spec"]["jwtRules"][0]["jwks"] == kKeys2);
    CHECK(out["spec"]["jwtRules"][0]["jwksUri"] == uri);
    CHECK(out["spec"]["jwtRules"][1]["jwks"] == "{\"keys\":[]}");
    CHECK(warren::controller::jwks_uris(request_authn(uri)) == std::set<std::string>{uri});

    // No longer wanted: dropped.
    r.set_uris({});
    CHECK(r.find(uri) == nullptr);
    CHECK(inline_jwks(request_authn(uri), r)["spec"]["jwtRules"][0].count("jwks") == 0);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("jwks resolver: bad answers keep the last good keys and say why", "[controller][jwks]") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    TinyHttp idp;
    idp.set(503, "down");
    JwksResolverOptions o;
    o.refresh = std::chrono::milliseconds(100);
    o.retry = std::chrono::milliseconds(20);
    JwksResolver r(&loop, o);
    int changes = 0;
    r.set_on_change([&] { changes++; });
    std::string uri = idp.url("/jwks");
    r.set_uris({uri, "ftp://idp/jwks"});
    REQUIRE(run_until(&loop, [&] { return r.find(uri)->failures >= 2; }));
    CHECK(r.find(uri)->error == "HTTP status 503");
    CHECK(r.find(uri)->jwks.empty());
    CHECK(r.find("ftp://idp/jwks")->error == "not an http:// or https:// URI");
    // Not fetched: nothing inlined (the waypoint fails closed).
    CHECK(inline_jwks(request_authn(uri), r)["spec"]["jwtRules"][0].count("jwks") == 0);
    // Retries reach it once it answers.
    idp.set(200, kKeys1);
    REQUIRE(run_until(&loop, [&] { return r.find(uri)->jwks == kKeys1; }));
    CHECK(r.find(uri)->error.empty());
    CHECK(changes == 1);
    // Not JSON, then not a JWKS: errors, the keys stay.
    idp.set(200, "<html>");
    REQUIRE(run_until(&loop, [&] { return r.find(uri)->error == "the answer is not JSON"; }));
    idp.set(200, R"({"issuer":"x"})");
    REQUIRE(run_until(&loop, [&] { return r.find(uri)->error.find("not a JWKS") != std::string::npos; }));
    CHECK(r.find(uri)->jwks == kKeys1);
    CHECK(changes == 1);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("jwks resolver: an unreachable server is an error and retried", "[controller][jwks]") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    // A port nothing listens on (bound and closed).
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    JwksResolverOptions o;
    o.retry = std::chrono::milliseconds(20);
    JwksResolver r(&loop, o);
    std::string uri = "http://127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "/jwks";
    r.set_uris({uri});
    REQUIRE(run_until(&loop, [&] { return r.find(uri)->failures >= 2; }));
    CHECK(!r.find(uri)->error.empty());
    CHECK(r.find(uri)->jwks.empty());
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}
