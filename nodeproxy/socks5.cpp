// RFC 1928: greeting  VER NMETHODS METHODS[n]      → VER METHOD
//           request   VER CMD RSV ATYP ADDR PORT   → VER REP RSV ATYP BND.ADDR BND.PORT
#include "socks5.h"

#include <algorithm>
#include <cstring>

namespace warren::socks5 {
namespace {

constexpr uint8_t kVersion = 5;
constexpr uint8_t kNoAuth = 0x00, kNoAcceptableMethod = 0xFF;
constexpr uint8_t kCmdConnect = 1;
constexpr uint8_t kAtypV4 = 1, kAtypDomain = 3, kAtypV6 = 4;

uint8_t at(const std::string& b, size_t i) { return static_cast<uint8_t>(b[i]); }

}  // namespace

size_t ServerParser::needed() const {
  if (phase_ == Phase::kGreeting) return buf_.size() < 2 ? 2 : 2 + at(buf_, 1);
  if (buf_.size() < 5) return 5;  // through ATYP and the first address byte
  switch (at(buf_, 3)) {
    case kAtypV4: return 4 + 4 + 2;
    case kAtypV6: return 4 + 16 + 2;
    case kAtypDomain: return 4 + 1 + at(buf_, 4) + 2;
    default: return buf_.size();  // rejected by check_prefix already
  }
}

State ServerParser::fail(std::string reason, std::string& out, int rep) {
  if (rep >= 0) out += make_reply(static_cast<uint8_t>(rep), SockAddr{IpAddr::v4(0), 0});
  error_ = std::move(reason);
  phase_ = Phase::kError;
  buf_.clear();
  return state_ = State::kError;
}

State ServerParser::feed(const uint8_t* data, size_t len, std::string& out) {
  if (phase_ == Phase::kError) return state_;
  if (phase_ == Phase::kDone) {
    leftover_.append(reinterpret_cast<const char*>(data), len);
    return state_;
  }
  size_t i = 0;
  for (;;) {
    size_t need = needed();
    if (buf_.size() < need) {
      if (i == len) return state_ = State::kNeedMore;
      size_t take = std::min(need - buf_.size(), len - i);
      buf_.append(reinterpret_cast<const char*>(data + i), take);
      i += take;
      // Reject a bad header as soon as its byte arrives: no waiting on garbage.
      if (at(buf_, 0) != kVersion) {
        bool greeting = phase_ == Phase::kGreeting;
        return fail("unsupported SOCKS version " + std::to_string(at(buf_, 0)), out,
                    greeting ? -1 : kGeneralFailure);
      }
      if (phase_ == Phase::kRequest && buf_.size() >= 4) {
        if (at(buf_, 1) != kCmdConnect)
          return fail("unsupported command " + std::to_string(at(buf_, 1)), out, kCommandNotSupported);
        if (at(buf_, 2) != 0) return fail("reserved byte not zero", out, kGeneralFailure);
        uint8_t atyp = at(buf_, 3);
        if (atyp != kAtypV4 && atyp != kAtypV6 && atyp != kAtypDomain)
          return fail("unsupported address type " + std::to_string(atyp), out, kAddressTypeNotSupported);
      }
      continue;
    }
    State s = phase_ == Phase::kGreeting ? on_greeting(out) : on_request(out);
    if (s == State::kError) return s;
    buf_.clear();
    if (phase_ == Phase::kDone) {
      leftover_.append(reinterpret_cast<const char*>(data + i), len - i);
      return state_ = State::kDone;
    }
  }
}

State ServerParser::on_greeting(std::string& out) {
  bool no_auth = false;
  for (size_t k = 2; k < buf_.size(); k++) no_auth = no_auth || at(buf_, k) == kNoAuth;
  if (!no_auth) {
    out += static_cast<char>(kVersion);
    out += static_cast<char>(kNoAcceptableMethod);
    return fail("client offers no acceptable authentication method", out);
  }
  out += static_cast<char>(kVersion);
  out += static_cast<char>(kNoAuth);
  phase_ = Phase::kRequest;
  return State::kNeedMore;
}

State ServerParser::on_request(std::string& out) {
  const auto* b = reinterpret_cast<const uint8_t*>(buf_.data());
  size_t n = buf_.size();
  uint16_t port = static_cast<uint16_t>(b[n - 2] << 8 | b[n - 1]);
  Target t;
  t.port = port;
  switch (b[3]) {
    case kAtypV4: {
      uint32_t v = uint32_t(b[4]) << 24 | uint32_t(b[5]) << 16 | uint32_t(b[6]) << 8 | b[7];
      t.addr = SockAddr{IpAddr::v4(v), port};
      break;
    }
    case kAtypV6: {
      sockaddr_in6 sa{};
      sa.sin6_family = AF_INET6;
      std::memcpy(&sa.sin6_addr, b + 4, 16);
      sa.sin6_port = htons(port);
      t.addr = SockAddr::from_sockaddr(reinterpret_cast<const sockaddr*>(&sa));
      break;
    }
    default: {  // domain, validated length by needed()
      size_t dlen = b[4];
      if (dlen == 0) return fail("empty domain name", out, kGeneralFailure);
      for (size_t k = 0; k < dlen; k++)
        if (b[5 + k] < 0x21 || b[5 + k] > 0x7e)
          return fail("domain name has a non-printable byte", out, kGeneralFailure);
      t.host.assign(reinterpret_cast<const char*>(b + 5), dlen);
    }
  }
  if (port == 0) return fail("destination port 0", out, kGeneralFailure);
  target_ = std::move(t);
  phase_ = Phase::kDone;
  return State::kDone;
}

std::string make_reply(uint8_t rep, const SockAddr& bound) {
  std::string r;
  r += static_cast<char>(kVersion);
  r += static_cast<char>(rep);
  r += '\0';
  const auto& bytes = bound.ip.bytes();
  r += static_cast<char>(bound.ip.is_v4() ? kAtypV4 : kAtypV6);
  r.append(reinterpret_cast<const char*>(bytes.data()), bound.ip.is_v4() ? 4 : 16);
  r += static_cast<char>(bound.port >> 8);
  r += static_cast<char>(bound.port & 0xff);
  return r;
}

}  // namespace warren::socks5
