// SOCKS5 (RFC 1928) server side, CONNECT with "no authentication" only, as a
// pure byte-in/byte-out parser: no sockets, any fragmentation (STYLE.md §2).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "warren/ip.h"

namespace warren::socks5 {

enum class State { kNeedMore, kDone, kError };

// addr for the IPv4/IPv6 address types, host for DOMAINNAME; port always set.
struct Target {
  std::optional<SockAddr> addr;
  std::string host;
  uint16_t port = 0;
};

// Reply codes (RFC 1928 §6).
inline constexpr uint8_t kSucceeded = 0, kGeneralFailure = 1, kNotAllowed = 2,
                         kHostUnreachable = 4, kConnectionRefused = 5,
                         kCommandNotSupported = 7, kAddressTypeNotSupported = 8;

class ServerParser {
 public:
  // Feed bytes received from the client. Appends bytes to send back to `out`
  // (the method selection reply; on error a failure reply where the RFC has
  // one). After kDone, further bytes are kept as leftover data.
  State feed(const uint8_t* data, size_t len, std::string& out);

  const Target& target() const { return target_; }  // valid when kDone
  // Client bytes that followed the request (pipelined payload).
  size_t leftover() const { return leftover_.size(); }
  std::string_view leftover_data() const { return leftover_; }
  const std::string& error() const { return error_; }  // reason when kError
  State state() const { return state_; }

  // Longest message either phase needs: a request with a 255-byte domain.
  static constexpr size_t kMaxMessage = 4 + 1 + 255 + 2;

 private:
  enum class Phase { kGreeting, kRequest, kDone, kError };
  // Bytes the current message needs in total, given what is buffered so far.
  size_t needed() const;
  State on_greeting(std::string& out);
  State on_request(std::string& out);
  State fail(std::string reason, std::string& out, int rep = -1);

  Phase phase_ = Phase::kGreeting;
  State state_ = State::kNeedMore;
  std::string buf_;  // current message, never more than kMaxMessage
  Target target_;
  std::string leftover_;
  std::string error_;
};

// The reply sent after the upstream decision (rep: kSucceeded, kNotAllowed ...).
std::string make_reply(uint8_t rep, const SockAddr& bound);

}  // namespace warren::socks5
