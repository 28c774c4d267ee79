// Leader election on a coordination.k8s.io/v1 Lease, as client-go's
// leaderelection does it, so only one controller replica writes to the API.
//
//   LeaseOptions o;                        // warren-system/warren-controller, 15 s
//   LeaderElector le(client, o);
//   le.on_change([](bool leader) { ... });
//   le.start();
//   le.is_leader();
//
// Each round (every renew_period while leading, every retry_period otherwise):
//   GET the Lease.
//   - 404: create it (POST) holding it ourselves; 409 AlreadyExists means
//     someone else created it first.
//   - held by us: renew (PUT with renewTime = now).
//   - held by another: take it over (PUT, leaseTransitions + 1) only when it
//     has expired: the holder left it empty, or the Lease object has not
//     changed for spec.leaseDurationSeconds as measured on *our* clock since
//     we first saw that version (client-go's rule; no clock-skew trouble).
//   Every PUT carries the resourceVersion we read: a 409 Conflict means
//   another replica wrote in between, and it won.
// A leader that cannot renew for renew_deadline (or learns that someone else
// holds the Lease) steps down. Callbacks run on the loop thread.
//
// stop() (and the destructor) only stop renewing; the Lease then expires
// after its duration and another replica takes over. release() ends the
// lease at once by writing an empty holderIdentity (as client-go's
// ReleaseOnCancel), for a graceful shutdown.
//
// Durations are milliseconds for tests; the Lease stores whole seconds, so
// leaseDurationSeconds = ceil(lease_duration), at least 1.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "k8s/http_client.h"

typedef struct uv_timer_s uv_timer_t;  // NOLINT: same declaration as uv.h

namespace warren::controller::k8s {

struct LeaseOptions {
  std::string ns = "warren-system";
  std::string name = "warren-controller";
  // Empty: $POD_NAME or the hostname, plus "_" and 8 random hex digits.
  std::string identity;
  std::chrono::milliseconds lease_duration{15'000};
  std::chrono::milliseconds renew_period{5'000};
  std::chrono::milliseconds retry_period{2'000};
  std::chrono::milliseconds renew_deadline{10'000};
};

// $POD_NAME or the hostname, "_", 8 random hex digits.
std::string default_identity();

class LeaderElector {
 public:
  LeaderElector(Client* client, LeaseOptions opts);
  ~LeaderElector();
  LeaderElector(const LeaderElector&) = delete;
  LeaderElector& operator=(const LeaderElector&) = delete;

  void start();
  // Stops trying and renewing; reports the loss of leadership when leading.
  void stop();
  // Stops, then writes an empty holder when we hold the Lease; `done` (may
  // be empty) runs when the write finished or failed.
  void release(std::function<void()> done = {});

  bool is_leader() const { return leader_; }
  const std::string& identity() const { return opts_.identity; }
  // Called with true when this replica becomes leader, false when it stops
  // being one. Several callbacks may be registered.
  void on_change(std::function<void(bool)> cb) { callbacks_.push_back(std::move(cb)); }

 private:
  void round();
  void on_get(Result<HttpResponse> r);
  void on_write(bool acquiring, Result<HttpResponse> r);
  void write(nlohmann::json lease, bool create, bool acquiring);
  nlohmann::json make_spec(int transitions, const std::string& acquire_time) const;
  void failed_round();
  void set_leader(bool leader);
  void schedule();

  Client* client_;
  LeaseOptions opts_;
  std::string path_, collection_;
  bool running_ = false;
  bool leader_ = false;
  Client::CallId call_ = 0;
  uv_timer_t* timer_ = nullptr;
  std::string observed_rv_;
  std::chrono::steady_clock::time_point observed_at_;
  std::chrono::steady_clock::time_point last_renew_;
  std::vector<std::function<void(bool)>> callbacks_;
};

}  // namespace warren::controller::k8s
