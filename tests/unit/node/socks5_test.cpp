#include <catch2/catch.hpp>

#include "socks5.h"

using namespace warren;
using namespace warren::socks5;

namespace {

std::string bytes(std::initializer_list<int> v) {
  std::string s;
  for (int b : v) s += static_cast<char>(b);
  return s;
}

State feed(ServerParser& p, const std::string& in, std::string& out) {
  return p.feed(reinterpret_cast<const uint8_t*>(in.data()), in.size(), out);
}

const std::string kGreeting = bytes({5, 1, 0});
const std::string kConnectV4 = bytes({5, 1, 0, 1, 10, 0, 0, 7, 0x1f, 0x90});  // 10.0.0.7:8080

}  // namespace

TEST_CASE("socks5: CONNECT to IPv4 in one piece, with pipelined payload") {
  ServerParser p;
  std::string out;
  REQUIRE(feed(p, kGreeting + kConnectV4 + "GET /", out) == State::kDone);
  CHECK(out == bytes({5, 0}));
  REQUIRE(p.target().addr);
  CHECK(p.target().addr->to_string() == "10.0.0.7:8080");
  CHECK(p.target().port == 8080);
  CHECK(p.target().host.empty());
  CHECK(p.leftover() == 5);
  CHECK(p.leftover_data() == "GET /");
  // Later bytes are leftover too.
  CHECK(feed(p, "x", out) == State::kDone);
  CHECK(p.leftover_data() == "GET /x");
}

TEST_CASE("socks5: byte-by-byte fragmentation, domain target") {
  std::string req = kGreeting + bytes({5, 1, 0, 3, 11}) + "example.com" + bytes({0, 80});
  ServerParser p;
  std::string out;
  for (size_t i = 0; i < req.size(); i++) {
    State s = p.feed(reinterpret_cast<const uint8_t*>(req.data()) + i, 1, out);
    CHECK(s == (i + 1 == req.size() ? State::kDone : State::kNeedMore));
  }
  CHECK(out == bytes({5, 0}));
  CHECK(p.target().host == "example.com");
  CHECK(p.target().port == 80);
  CHECK_FALSE(p.target().addr);
  CHECK(p.leftover() == 0);
}

TEST_CASE("socks5: IPv6 target and every split point") {
  std::string req = kGreeting + bytes({5, 1, 0, 4, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x01, 0xbb});
  for (size_t cut = 0; cut <= req.size(); cut++) {
    ServerParser p;
    std::string out;
    p.feed(reinterpret_cast<const uint8_t*>(req.data()), cut, out);
    REQUIRE(p.feed(reinterpret_cast<const uint8_t*>(req.data()) + cut, req.size() - cut, out) == State::kDone);
    REQUIRE(p.target().addr);
    CHECK(p.target().addr->to_string() == "[2001:db8::1]:443");
  }
}

TEST_CASE("socks5: rejections") {
  struct Case {
    const char* name;
    std::string in;
    std::string reply;  // expected bytes written
  };
  std::string fail_tail = bytes({0, 1, 0, 0, 0, 0, 0, 0});
  std::vector<Case> cases = {
      {"SOCKS4", bytes({4, 1, 0, 80, 10, 0, 0, 1}), ""},
      {"HTTP garbage", "GET / HTTP/1.1\r\n", ""},
      {"no method 0 offered", bytes({5, 2, 1, 2}), bytes({5, 0xff})},
      {"zero methods", bytes({5, 0}), bytes({5, 0xff})},
      {"BIND", kGreeting + bytes({5, 2, 0, 1, 1, 2, 3, 4, 0, 80}), bytes({5, 0, 5, 7}) + fail_tail},
      {"UDP ASSOCIATE", kGreeting + bytes({5, 3, 0, 1}), bytes({5, 0, 5, 7}) + fail_tail},
      {"bad ATYP", kGreeting + bytes({5, 1, 0, 2}), bytes({5, 0, 5, 8}) + fail_tail},
      {"request version 4", kGreeting + bytes({4, 1, 0, 1}), bytes({5, 0, 5, 1}) + fail_tail},
      {"reserved not zero", kGreeting + bytes({5, 1, 7, 1}), bytes({5, 0, 5, 1}) + fail_tail},
      {"empty domain", kGreeting + bytes({5, 1, 0, 3, 0, 0, 80}), bytes({5, 0, 5, 1}) + fail_tail},
      {"domain with NUL", kGreeting + bytes({5, 1, 0, 3, 3, 'a', 0, 'b', 0, 80}), bytes({5, 0, 5, 1}) + fail_tail},
      {"port 0", kGreeting + bytes({5, 1, 0, 1, 1, 2, 3, 4, 0, 0}), bytes({5, 0, 5, 1}) + fail_tail},
  };
  for (auto& c : cases) {
    SECTION(c.name) {
      ServerParser p;
      std::string out;
      CHECK(feed(p, c.in, out) == State::kError);
      CHECK(out == c.reply);
      CHECK_FALSE(p.error().empty());
      // Stays in error; nothing more is written.
      std::string more;
      CHECK(feed(p, kConnectV4, more) == State::kError);
      CHECK(more.empty());
    }
  }
}

TEST_CASE("socks5: a bad header is rejected without waiting for the rest") {
  ServerParser p;
  std::string out;
  // Greeting announces 255 methods but the version is wrong: fail on byte one.
  CHECK(feed(p, bytes({9}), out) == State::kError);
  ServerParser q;
  out.clear();
  CHECK(feed(q, kGreeting + bytes({5, 1, 0, 9}), out) == State::kError);
  CHECK(out == bytes({5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0}));
}

TEST_CASE("socks5: the maximum messages fit, the buffer stays bounded") {
  ServerParser p;
  std::string out;
  std::string greeting = bytes({5, 255});
  for (int i = 0; i < 255; i++) greeting += static_cast<char>(254 - i);  // 0 offered last
  std::string req = bytes({5, 1, 0, 3, 255}) + std::string(255, 'a') + bytes({1, 0});
  std::string payload(100000, 'z');
  REQUIRE(feed(p, greeting + req + payload, out) == State::kDone);
  CHECK(p.target().host.size() == 255);
  CHECK(p.target().port == 256);
  CHECK(p.leftover() == payload.size());
}

TEST_CASE("socks5: make_reply") {
  CHECK(make_reply(kSucceeded, *SockAddr::parse("127.0.0.1:15080")) ==
        bytes({5, 0, 0, 1, 127, 0, 0, 1, 0x3a, 0xe8}));
  CHECK(make_reply(kNotAllowed, *SockAddr::parse("[::1]:1")) ==
        bytes({5, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1}));
  CHECK(make_reply(kHostUnreachable, *SockAddr::parse("0.0.0.0:0")).size() == 10);
}
