#include "warren/push_proto.h"

namespace warren::push {

ResourceKind resource_kind(std::string_view id) {
  static const std::pair<std::string_view, ResourceKind> kinds[] = {
      {"workload", ResourceKind::kWorkload},
      {"service", ResourceKind::kService},
      {"policy", ResourceKind::kPolicy},
      {"peerauth", ResourceKind::kPeerAuth},
      {"namespace", ResourceKind::kNamespace},
      {"virtualservice", ResourceKind::kVirtualService},
      {"destinationrule", ResourceKind::kDestinationRule},
      {"httproute", ResourceKind::kHttpRoute},
      {"requestauthentication", ResourceKind::kRequestAuthentication},
      {"waypoint", ResourceKind::kWaypoint},
  };
  auto slash = id.find('/');
  if (slash == std::string_view::npos) return ResourceKind::kUnknown;
  std::string_view type = id.substr(0, slash);
  for (const auto& [name, k] : kinds)
    if (name == type) return k;
  return ResourceKind::kUnknown;
}

bool node_kind(ResourceKind k) {
  return k == ResourceKind::kWorkload || k == ResourceKind::kService || k == ResourceKind::kPolicy ||
         k == ResourceKind::kPeerAuth || k == ResourceKind::kNamespace;
}

bool parse_waypoint_principal(std::string_view s, std::string* ns, std::string* gateway) {
  std::string_view prefix = kWaypointPrincipalPrefix;
  if (s.substr(0, prefix.size()) != prefix) return false;
  s.remove_prefix(prefix.size());
  auto slash = s.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 == s.size() ||
      s.find('/', slash + 1) != std::string_view::npos)
    return false;
  *ns = s.substr(0, slash);
  *gateway = s.substr(slash + 1);
  return true;
}

std::string frame_header(size_t len) {
  std::string h(4, '\0');
  h[0] = static_cast<char>((len >> 24) & 0xff);
  h[1] = static_cast<char>((len >> 16) & 0xff);
  h[2] = static_cast<char>((len >> 8) & 0xff);
  h[3] = static_cast<char>(len & 0xff);
  return h;
}

void append_frame(std::string* out, std::string_view json) {
  out->append(frame_header(json.size()));
  out->append(json);
}

Result<void> FrameReader::feed(const uint8_t* data, size_t len, std::vector<std::string>* out) {
  buf_.append(reinterpret_cast<const char*>(data), len);
  size_t off = 0;
  size_t need = 0;  // size of the incomplete message at the end, with its header
  while (buf_.size() - off >= 4) {
    const auto* p = reinterpret_cast<const uint8_t*>(buf_.data() + off);
    uint32_t n = (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
    if (n > max_)
      return make_error(Errc::kInvalidArgument,
                        "message of " + std::to_string(n) + " bytes exceeds the limit of " +
                            std::to_string(max_));
    if (buf_.size() - off - 4 < n) {
      need = 4 + size_t{n};
      break;
    }
    out->emplace_back(buf_, off + 4, n);
    off += 4 + n;
  }
  buf_.erase(0, off);
  if (need > buf_.capacity()) {
    // A big message is on its way: room for all of it at once rather than by
    // doubling (a 60 MB snapshot would otherwise leave 128 MB reserved).
    buf_.reserve(need);
  } else if (buf_.capacity() > kKeepBuffer && need < kKeepBuffer && buf_.size() < kKeepBuffer) {
    // Do not keep a snapshot-sized buffer for the small deltas that follow.
    std::string(buf_).swap(buf_);
  }
  return {};
}

}  // namespace warren::push
