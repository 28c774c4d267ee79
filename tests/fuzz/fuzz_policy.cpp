// Policy evaluation over fuzzed configs: parse the input as a config document,
// then authorize/check_inbound a few fixed connections against every workload.
#include <cstdint>
#include <cstdlib>

#include "policy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto doc = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return 0;
  auto r = warren::config::parse(doc);
  if (!r.ok()) return 0;
  const auto& snap = **r;
  using warren::IpAddr;
  const std::optional<std::string> ids[] = {std::nullopt, "spiffe://cluster.local/ns/client/sa/sleep",
                                             "spiffe://cluster.local/ns/default/sa/default",
                                             "spiffe://weird", ""};
  const char* srcs[] = {"10.1.0.5", "127.0.0.1", "::1"};
  const uint16_t ports[] = {80, 8080, 15008};
  for (const auto& wp : snap.workloads) {
    const auto& w = *wp;
    IpAddr dst = w.ips.empty() ? *IpAddr::parse("10.0.0.1") : w.ips[0];
    for (const auto& id : ids)
      for (const char* src : srcs)
        for (uint16_t port : ports) {
          warren::policy::ConnFacts f{*IpAddr::parse(src), dst, port, id};
          auto a = warren::policy::authorize(snap, w, f);
          auto c = warren::policy::check_inbound(snap, w, f);
          if (a.reason.empty() || c.reason.empty()) std::abort();
          if (c.allow && !a.allow) std::abort();  // PeerAuthentication only narrows
          auto mode = warren::policy::peer_auth_mode(snap, w, port);
          if (mode == warren::config::PeerAuthMode::kUnset) std::abort();
        }
  }
  return 0;
}
