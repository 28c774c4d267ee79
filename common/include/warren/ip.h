// IP addresses and socket addresses as plain values (no sockaddr juggling in callers).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace warren {

class IpAddr {
 public:
  IpAddr() = default;
  static std::optional<IpAddr> parse(std::string_view s);
  static IpAddr v4(uint32_t host_order);
  static IpAddr from_sockaddr(const sockaddr* sa);

  bool is_v4() const { return v4_; }
  // Network-order bytes; for v4 only the first 4 are used.
  const std::array<uint8_t, 16>& bytes() const { return b_; }
  std::string to_string() const;
  bool operator==(const IpAddr& o) const { return v4_ == o.v4_ && b_ == o.b_; }
  bool operator!=(const IpAddr& o) const { return !(*this == o); }
  bool operator<(const IpAddr& o) const { return v4_ != o.v4_ ? v4_ : b_ < o.b_; }
  size_t hash() const;

 private:
  bool v4_ = true;
  std::array<uint8_t, 16> b_{};
};

// "ip:port" or "[v6]:port".
struct SockAddr {
  IpAddr ip;
  uint16_t port = 0;

  static std::optional<SockAddr> parse(std::string_view s);
  static SockAddr from_sockaddr(const sockaddr* sa);
  // Fills storage; returns the length to pass to bind/connect.
  socklen_t to_sockaddr(sockaddr_storage* out) const;
  std::string to_string() const;
  bool operator==(const SockAddr& o) const { return ip == o.ip && port == o.port; }
  bool operator<(const SockAddr& o) const { return ip == o.ip ? port < o.port : ip < o.ip; }
};

// "10.0.0.0/8", "::1/128" or a bare address (full-length prefix).
class Cidr {
 public:
  static std::optional<Cidr> parse(std::string_view s);
  bool contains(const IpAddr& ip) const;
  std::string to_string() const;

 private:
  IpAddr base_;
  int prefix_ = 0;
};

}  // namespace warren

template <>
struct std::hash<warren::IpAddr> {
  size_t operator()(const warren::IpAddr& ip) const noexcept { return ip.hash(); }
};
