// L4 authorization with Istio's AuthorizationPolicy semantics, as a pure
// function of (snapshot, destination workload, connection facts) (STYLE.md §6).
#pragma once

#include <optional>
#include <string>

#include "config.h"

namespace warren::policy {

struct ConnFacts {
  IpAddr src_ip;
  IpAddr dst_ip;
  uint16_t dst_port = 0;
  // Full SPIFFE ID of the peer ("spiffe://td/ns/x/sa/y"); nullopt for plaintext.
  std::optional<std::string> src_identity;
};

struct Decision {
  bool allow = true;
  // "<namespace>/<name>" of the deciding policy, or a fixed reason like
  // "no ALLOW policy matched" / "STRICT mTLS: plaintext refused".
  std::string reason;
  // An ALLOW policy matched (not merely "no ALLOW policy applies").
  bool explicit_allow = false;
};

// Authorization only (DENY first, then ALLOW; deny when ALLOW policies apply and
// none matches). Policies apply by scope: root namespace without selector
// (mesh-wide), the destination's namespace without selector, or a selector that
// matches the destination's labels.
Decision authorize(const config::Snapshot& snap, const config::Workload& dst,
                   const ConnFacts& facts);

// Effective PeerAuthentication mode for the destination and port: workload
// selector beats namespace beats mesh-wide; port-level beats workload-level.
// Unset everywhere means PERMISSIVE.
config::PeerAuthMode peer_auth_mode(const config::Snapshot& snap, const config::Workload& dst,
                                    uint16_t port);

// Both checks together, as the inbound path applies them. A workload behind
// a waypoint (Workload::waypoint) accepts only its waypoint's pods, unless an
// ALLOW policy explicitly matches the connection (DESIGN.md §7, issue 5).
Decision check_inbound(const config::Snapshot& snap, const config::Workload& dst,
                       const ConnFacts& facts);

}  // namespace warren::policy
