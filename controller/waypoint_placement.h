// What placing waypoints needs in both modes (waypoint_launcher.h locally,
// waypoint_deployer.h in Kubernetes): the Gateways wanted, the ones placed,
// and which one to act on next. Gone ones are removed first; new and changed
// ones are placed (a changed one is removed first when `restart_changed`).
// A key whose last attempt failed waits until its retry time.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "translate.h"

namespace warren::controller {

class PlacementPlan {
 public:
  explicit PlacementPlan(bool restart_changed) : restart_changed_(restart_changed) {}

  struct Step {
    bool remove = false;
    std::string key;  // "<ns>/<name>"
    WaypointGateway g;  // what to place, or what was placed (remove)
  };
  // The next step at `now` (ms); none when everything is in place or waits
  // for a retry, then *wake is the earliest retry time (0: none).
  std::optional<Step> next(uint64_t now, uint64_t* wake) const;
  void succeeded(const Step& s);
  void failed(const Step& s, uint64_t retry_at);
  // Forget what was placed (a new leader does not know): everything wanted is placed again.
  void forget();

  std::map<std::string, WaypointGateway> want;
  const std::map<std::string, WaypointGateway>& placed() const { return placed_; }

 private:
  bool restart_changed_;
  std::map<std::string, WaypointGateway> placed_;
  std::map<std::string, uint64_t> retry_at_;
};

}  // namespace warren::controller
