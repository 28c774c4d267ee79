// The outbound decision as a pure function (STYLE.md §6): from the snapshot,
// the client's address and the requested target, decide where the connection
// goes and how. The I/O driver (socks_entry.cpp) only carries it out.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "config.h"

namespace warren::node {

struct OutboundTarget {
  std::optional<SockAddr> addr;  // an IP target
  std::string host;              // or a hostname (service hostnames only)
  uint16_t port = 0;
};

struct OutboundPlan {
  enum class Kind { kReject, kPassthrough, kHbone };
  Kind kind = Kind::kReject;
  std::string reason;        // why rejected (for logs and metrics)
  uint8_t socks_rep = 1;     // SOCKS5 reply code on rejection
  const config::Workload* src = nullptr;
  const config::Workload* dst = nullptr;   // HBONE: the chosen endpoint
  const config::Service* svc = nullptr;    // when the target was a service
  SockAddr connect_to;   // passthrough: the target; HBONE: <dst workload ip>:15008
  SockAddr authority;    // HBONE: <dst workload ip>:<target port> (the CONNECT :authority)
  // The destination is behind a waypoint: dst is the waypoint's pod and
  // authority what the client asked for (service VIP:port or pod IP:port).
  bool waypoint = false;
};

// `rr` picks among a service's endpoints (round robin when the caller increments it).
OutboundPlan plan_outbound(const config::Snapshot& snap, const IpAddr& client_ip,
                           const OutboundTarget& target, uint64_t rr);

}  // namespace warren::node
