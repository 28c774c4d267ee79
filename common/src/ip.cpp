#include "warren/ip.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace warren {

std::optional<IpAddr> IpAddr::parse(std::string_view s) {
  if (s.empty() || s.size() >= INET6_ADDRSTRLEN) return std::nullopt;
  char buf[INET6_ADDRSTRLEN];
  std::memcpy(buf, s.data(), s.size());
  buf[s.size()] = 0;
  IpAddr ip;
  if (inet_pton(AF_INET, buf, ip.b_.data()) == 1) {
    ip.v4_ = true;
    return ip;
  }
  if (inet_pton(AF_INET6, buf, ip.b_.data()) == 1) {
    ip.v4_ = false;
    return ip;
  }
  return std::nullopt;
}

IpAddr IpAddr::v4(uint32_t host_order) {
  IpAddr ip;
  uint32_t n = htonl(host_order);
  std::memcpy(ip.b_.data(), &n, 4);
  return ip;
}

IpAddr IpAddr::from_sockaddr(const sockaddr* sa) { return SockAddr::from_sockaddr(sa).ip; }

namespace {
// Dotted quad into p (at least 15 bytes); returns the end. inet_ntop formats
// IPv4 with sprintf, which showed in the waypoint's per-request profile.
char* put_v4(char* p, const uint8_t* b) {
  for (int i = 0; i < 4; ++i) {
    if (i) *p++ = '.';
    p = std::to_chars(p, p + 3, static_cast<unsigned>(b[i])).ptr;
  }
  return p;
}
}  // namespace

std::string IpAddr::to_string() const {
  char buf[INET6_ADDRSTRLEN];
  if (v4_) return std::string(buf, put_v4(buf, b_.data()));
  inet_ntop(AF_INET6, b_.data(), buf, sizeof buf);
  return buf;
}

size_t IpAddr::hash() const {
  uint64_t a, b;
  std::memcpy(&a, b_.data(), 8);
  std::memcpy(&b, b_.data() + 8, 8);
  return std::hash<uint64_t>{}(a * 0x9E3779B97F4A7C15ull ^ b ^ (v4_ ? 1 : 0));
}

static std::optional<uint16_t> parse_port(std::string_view s) {
  unsigned v = 0;
  if (s.empty() || s.size() > 5) return std::nullopt;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v > 65535) return std::nullopt;
  return static_cast<uint16_t>(v);
}

std::optional<SockAddr> SockAddr::parse(std::string_view s) {
  std::string_view host, port;
  if (!s.empty() && s.front() == '[') {
    auto close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':')
      return std::nullopt;
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
    auto ip = IpAddr::parse(host);
    if (!ip || ip->is_v4()) return std::nullopt;
    auto p = parse_port(port);
    if (!p) return std::nullopt;
    return SockAddr{*ip, *p};
  }
  auto colon = s.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  host = s.substr(0, colon);
  port = s.substr(colon + 1);
  auto ip = IpAddr::parse(host);
  if (!ip || !ip->is_v4()) return std::nullopt;  // bare v6 must be bracketed
  auto p = parse_port(port);
  if (!p) return std::nullopt;
  return SockAddr{*ip, *p};
}

SockAddr SockAddr::from_sockaddr(const sockaddr* sa) {
  SockAddr out;
  if (sa->sa_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    out.ip = IpAddr::v4(ntohl(in->sin_addr.s_addr));
    out.port = ntohs(in->sin_port);
  } else if (sa->sa_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
    out.ip = *IpAddr::parse(buf);
    out.port = ntohs(in6->sin6_port);
  }
  return out;
}

socklen_t SockAddr::to_sockaddr(sockaddr_storage* out) const {
  std::memset(out, 0, sizeof *out);
  if (ip.is_v4()) {
    auto* in = reinterpret_cast<sockaddr_in*>(out);
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    std::memcpy(&in->sin_addr, ip.bytes().data(), 4);
    return sizeof(sockaddr_in);
  }
  auto* in6 = reinterpret_cast<sockaddr_in6*>(out);
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons(port);
  std::memcpy(&in6->sin6_addr, ip.bytes().data(), 16);
  return sizeof(sockaddr_in6);
}

std::string SockAddr::to_string() const {
  char buf[INET6_ADDRSTRLEN + 8];
  char* p = buf;
  if (ip.is_v4()) {
    p = put_v4(p, ip.bytes().data());
  } else {
    *p++ = '[';
    inet_ntop(AF_INET6, ip.bytes().data(), p, INET6_ADDRSTRLEN);
    p += std::strlen(p);
    *p++ = ']';
  }
  *p++ = ':';
  p = std::to_chars(p, buf + sizeof buf, port).ptr;
  return std::string(buf, p);
}

std::optional<Cidr> Cidr::parse(std::string_view s) {
  auto slash = s.find('/');
  auto ip = IpAddr::parse(s.substr(0, slash));
  if (!ip) return std::nullopt;
  int max = ip->is_v4() ? 32 : 128;
  int prefix = max;
  if (slash != std::string_view::npos) {
    auto ps = s.substr(slash + 1);
    auto [p, ec] = std::from_chars(ps.data(), ps.data() + ps.size(), prefix);
    if (ps.empty() || ec != std::errc() || p != ps.data() + ps.size() || prefix < 0 ||
        prefix > max)
      return std::nullopt;
  }
  Cidr c;
  c.base_ = *ip;
  c.prefix_ = prefix;
  return c;
}

bool Cidr::contains(const IpAddr& ip) const {
  if (ip.is_v4() != base_.is_v4()) return false;
  const auto& a = ip.bytes();
  const auto& b = base_.bytes();
  int full = prefix_ / 8, rem = prefix_ % 8;
  if (std::memcmp(a.data(), b.data(), full) != 0) return false;
  if (rem == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xFF << (8 - rem));
  return (a[full] & mask) == (b[full] & mask);
}

std::string Cidr::to_string() const { return base_.to_string() + "/" + std::to_string(prefix_); }


}  // namespace warren
