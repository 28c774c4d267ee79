#include "waypoint_launcher.h"

#include <spdlog/spdlog.h>

#include <sstream>

namespace warren::controller {

// One command in flight; owns its uv_process_t until libuv has closed it.
struct WaypointLauncher::Run {
  uv_process_t proc{};
  std::weak_ptr<bool> alive;
  WaypointLauncher* owner = nullptr;
  PlacementPlan::Step step;
};

WaypointLauncher::WaypointLauncher(uv_loop_t* loop, const std::string& command, std::chrono::milliseconds retry)
    : loop_(loop), retry_(retry), timer_(loop) {
  std::istringstream in(command);
  std::string w;
  while (in >> w) argv_.push_back(w);
}

WaypointLauncher::~WaypointLauncher() { stop(); }

void WaypointLauncher::stop() {
  stopped_ = true;
  timer_.stop();
}

void WaypointLauncher::sync(const std::map<std::string, WaypointGateway>& want) {
  plan_.want = want;
  next();
}

void WaypointLauncher::next() {
  if (stopped_ || running_ || argv_.empty()) return;
  uint64_t now = uv_now(loop_), wake = 0;
  auto step = plan_.next(now, &wake);
  if (!step) {
    if (wake) timer_.start(wake - now, 0, [this] { next(); });
    return;
  }
  std::string action = step->remove ? "down" : "up";
  const WaypointGateway& g = step->g;
  auto* run = new Run;
  run->alive = alive_;
  run->owner = this;
  run->step = *step;
  std::vector<std::string> args = argv_;
  args.insert(args.end(), {action, g.ns, g.name, g.service_account});
  std::vector<char*> cargs;
  for (auto& a : args) cargs.push_back(a.data());
  cargs.push_back(nullptr);
  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = 1;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  uv_process_options_t o{};
  o.file = cargs[0];
  o.args = cargs.data();
  o.stdio = stdio;
  o.stdio_count = 3;
  o.exit_cb = [](uv_process_t* p, int64_t status, int signal) {
    auto* r = static_cast<Run*>(p->data);
    int code = signal ? 128 + signal : static_cast<int>(status);
    if (auto alive = r->alive.lock()) r->owner->finished(r->step, code);
    uv_close(reinterpret_cast<uv_handle_t*>(p), [](uv_handle_t* h) { delete static_cast<Run*>(h->data); });
  };
  run->proc.data = run;
  spdlog::info("waypoints: {} {}/{} (service account {})", action, g.ns, g.name, g.service_account);
  if (int rc = uv_spawn(loop_, &run->proc, &o); rc != 0) {
    spdlog::error("waypoints: cannot run {}: {}", argv_[0], uv_strerror(rc));
    // uv_spawn failed: the handle still needs closing.
    uv_close(reinterpret_cast<uv_handle_t*>(&run->proc), [](uv_handle_t* h) { delete static_cast<Run*>(h->data); });
    finished(run->step, -1);
    return;
  }
  running_ = run;
}

void WaypointLauncher::finished(const PlacementPlan::Step& step, int status) {
  running_ = nullptr;
  std::string action = step.remove ? "down" : "up";
  if (status == 0) {
    plan_.succeeded(step);
  } else {
    spdlog::error("waypoints: \"{} {} {} {}\" failed (status {}); retrying in {} ms", action, step.g.ns, step.g.name,
                  step.g.service_account, status, retry_.count());
    plan_.failed(step, uv_now(loop_) + static_cast<uint64_t>(retry_.count()));
  }
  if (on_done) on_done(action, step.g, status);
  defer(loop_, [this, alive = std::weak_ptr<bool>(alive_)] {
    if (alive.lock()) next();
  });
}

}  // namespace warren::controller
