// The enrollment message between warren-cni (the chained CNI plugin) and
// warren-node: one JSON object per line over a SOCK_STREAM Unix socket.
//
//   request: {"op":"add"|"del"|"check","namespace":"shop","name":"sleep-1",
//             "uid":"...","netns":"/var/run/netns/x","containerId":"...",
//             "ips":["10.1.0.2"]}
//   reply:   {"ok":true} | {"ok":false,"error":"..."}
//
// Decoding is strict: unknown keys, wrong types and out-of-range values are
// rejected with an error naming the field.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "warren/ip.h"
#include "warren/result.h"

namespace warren::cni {

inline constexpr const char* kDefaultSocketPath = "/var/run/warren/cni.sock";
// A request or reply line, newline excluded, is at most this long.
inline constexpr size_t kMaxLineBytes = 64 * 1024;

enum class Op { kAdd, kDel, kCheck };

const char* op_name(Op op);

struct EnrollRequest {
  Op op = Op::kAdd;
  std::string pod_namespace;  // "namespace": DNS-1123 label
  std::string name;           // DNS-1123 subdomain
  std::string uid;            // may be empty (runtimes that do not pass it)
  std::string netns;          // absolute path; may be empty for del only
  std::string container_id;   // non-empty
  std::vector<IpAddr> ips;    // at least one for add; may be empty for del/check

  bool operator==(const EnrollRequest&) const = default;
};

struct EnrollReply {
  bool ok = true;
  std::string error;  // non-empty when !ok

  static EnrollReply success() { return EnrollReply{}; }
  static EnrollReply failure(std::string msg) { return EnrollReply{false, std::move(msg)}; }
  bool operator==(const EnrollReply&) const = default;
};

// Checks the request's fields as decode_request would (for the sender).
Result<void> validate(const EnrollRequest& req);

// Compact JSON followed by '\n'.
std::string encode_request(const EnrollRequest& req);
std::string encode_reply(const EnrollReply& reply);

// `line` is one JSON object; a trailing "\n" or "\r\n" is allowed.
Result<EnrollRequest> decode_request(std::string_view line);
Result<EnrollReply> decode_reply(std::string_view line);

}  // namespace warren::cni
