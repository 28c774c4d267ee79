// The controller's push protocol on 15012 (DESIGN.md §6): HTTP/2 over TLS 1.3.
//
// Configuration stream: the node POSTs to kStreamPath with
//   authorization: Bearer <token>       (bootstrap token locally; the service
//                                         account token in Kubernetes)
//   x-warren-node: <node name>            (a waypoint: "waypoint:<ns>/<gateway>")
//   x-warren-pod: <pod name>             (waypoints: the pod it runs in)
//   x-warren-epoch, x-warren-version     (optional: resume from what it holds)
// and keeps both directions open. Each direction carries messages framed as a
// 4-byte big-endian length followed by that many bytes of JSON:
//   controller -> node
//     {"type":"snapshot","epoch":E,"version":V,"trustBundle":PEM,
//      "resources":{"<id>":<body>,...}}                 replaces everything
//     {"type":"delta","epoch":E,"version":V,"since":S,"trustBundle":PEM?,
//      "upserts":{"<id>":<body>,...},"removes":["<id>",...]}
//                                                      applies on top of S
//   node -> controller
//     {"type":"ack","version":V}
//     {"type":"nack","version":V,"rejected":{"<id>":"<reason>",...}}
// A nack still moves the node to V: the resources it names are left out (the
// previous version of each stays in force) and everything else is applied.
// Resource ids and bodies: controller/model.h.
//
// Certificates: POST kSignPath with the same authorization and x-warren-node
// headers and the body {"identity":"spiffe://...","csr":PEM}; the answer is
// 200 {"chain":PEM,"trustBundle":PEM} or 4xx {"error":"..."}. A node only
// gets identities of pods scheduled on it; a waypoint only the identity its
// Gateway's pods run as (in Kubernetes: also the one its token belongs to).
//
// What each proxy receives (resource ids and bodies: controller/model.h):
// nodes get the node kinds (workload, service, policy, peerauth, namespace);
// a waypoint gets those, the routing objects (virtualservice,
// destinationrule, httproute, requestauthentication) of its namespace and of
// the mesh root namespace, and the waypoint block of its own pod
// (waypoint/<ns>/<gateway>/<pod>).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "warren/result.h"

namespace warren::push {

inline constexpr const char* kStreamPath = "/warren.push.v1/Stream";
inline constexpr const char* kSignPath = "/warren.ca.v1/Sign";
inline constexpr uint16_t kDefaultPort = 15012;
// The controller's SPIFFE identity: spiffe://<td>/ns/<kControllerNs>/sa/<kControllerSa>.
inline constexpr const char* kControllerNs = "warren-system";
inline constexpr const char* kControllerSa = "warren-controller";
// x-warren-node of a waypoint: kWaypointPrincipalPrefix + "<ns>/<gateway>".
inline constexpr const char* kWaypointPrincipalPrefix = "waypoint:";

// Resource kinds, by the id's first segment ("workload/<uid>" ...).
enum class ResourceKind : uint8_t {
  kWorkload,
  kService,
  kPolicy,
  kPeerAuth,
  kNamespace,
  kVirtualService,
  kDestinationRule,
  kHttpRoute,
  kRequestAuthentication,
  kWaypoint,
  kUnknown,
};
ResourceKind resource_kind(std::string_view id);
// The kinds warren-node reads (and waypoints too).
bool node_kind(ResourceKind k);
// "waypoint:<ns>/<gateway>" -> {ns, gateway}; false when `s` is not of that form.
bool parse_waypoint_principal(std::string_view s, std::string* ns, std::string* gateway);

// Largest message either side accepts (a 100k-workload snapshot is ~40 MB).
inline constexpr uint32_t kMaxMessage = 512u << 20;

// Appends one framed message.
void append_frame(std::string* out, std::string_view json);
// The 4-byte header for a message of `len` bytes.
std::string frame_header(size_t len);

// Reassembles messages from a byte stream.
class FrameReader {
 public:
  explicit FrameReader(uint32_t max = kMaxMessage) : max_(max) {}
  // Appends complete messages to `out`; an error (message too large) is final.
  Result<void> feed(const uint8_t* data, size_t len, std::vector<std::string>* out);
  size_t pending() const { return buf_.size(); }
  size_t capacity() const { return buf_.capacity(); }

 private:
  static constexpr size_t kKeepBuffer = 1 << 20;  // capacity kept between messages
  uint32_t max_;
  std::string buf_;
};

}  // namespace warren::push
