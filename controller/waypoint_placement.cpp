#include "waypoint_placement.h"

namespace warren::controller {

std::optional<PlacementPlan::Step> PlacementPlan::next(uint64_t now, uint64_t* wake) const {
  *wake = 0;
  auto ready = [&](const std::string& key) {
    auto b = retry_at_.find(key);
    if (b == retry_at_.end() || b->second <= now) return true;
    if (!*wake || b->second < *wake) *wake = b->second;
    return false;
  };
  for (const auto& [k, was] : placed_) {
    auto w = want.find(k);
    bool gone = w == want.end(), changed = !gone && !(w->second == was);
    if ((gone || (changed && restart_changed_)) && ready(k)) return Step{true, k, was};
  }
  for (const auto& [k, g] : want) {
    auto p = placed_.find(k);
    if ((p == placed_.end() || !(p->second == g)) && ready(k)) return Step{false, k, g};
  }
  return std::nullopt;
}

void PlacementPlan::succeeded(const Step& s) {
  retry_at_.erase(s.key);
  if (s.remove) placed_.erase(s.key);
  else placed_[s.key] = s.g;
}

void PlacementPlan::failed(const Step& s, uint64_t retry_at) { retry_at_[s.key] = retry_at; }

void PlacementPlan::forget() {
  placed_.clear();
  retry_at_.clear();
}

}  // namespace warren::controller
