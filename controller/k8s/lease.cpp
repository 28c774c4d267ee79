#include "k8s/lease.h"

#include <spdlog/spdlog.h>
#include <unistd.h>
#include <uv.h>

#include <cstdlib>
#include <random>

#include "k8s/api.h"

namespace warren::controller::k8s {

namespace {

using Clock = std::chrono::steady_clock;

int lease_seconds(std::chrono::milliseconds d) {
  auto s = (d.count() + 999) / 1000;
  return static_cast<int>(std::max<long long>(1, s));
}

}  // namespace

std::string default_identity() {
  std::string base;
  if (const char* p = std::getenv("POD_NAME"); p && *p) {
    base = p;
  } else {
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) == 0) base = host;
  }
  if (base.empty()) base = "warren-controller";
  std::random_device rd;
  char suffix[16];
  snprintf(suffix, sizeof suffix, "_%08x", rd());
  return base + suffix;
}

LeaderElector::LeaderElector(Client* client, LeaseOptions opts)
    : client_(client), opts_(std::move(opts)) {
  if (opts_.identity.empty()) opts_.identity = default_identity();
  const KindInfo* lease = find_kind("Lease");
  path_ = object_path(*lease, opts_.ns, opts_.name);
  collection_ = collection_path(*lease, opts_.ns);
  timer_ = new uv_timer_t;
  uv_timer_init(client_->loop(), timer_);
  timer_->data = this;
}

LeaderElector::~LeaderElector() {
  running_ = false;
  if (call_) client_->cancel(call_);
  timer_->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(timer_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
}

void LeaderElector::start() {
  if (running_) return;
  running_ = true;
  spdlog::info("kubernetes: leader election on Lease {}/{} as {}", opts_.ns, opts_.name,
               opts_.identity);
  round();
}

void LeaderElector::stop() {
  running_ = false;
  if (call_) client_->cancel(call_);
  call_ = 0;
  uv_timer_stop(timer_);
  set_leader(false);
}

void LeaderElector::release(std::function<void()> done) {
  bool was_leader = leader_;
  stop();
  if (!was_leader) {
    if (done) done();
    return;
  }
  // Read, then write an empty holder with the version read (a 409 means
  // someone else holds it now: nothing to release).
  // Short timeouts: this runs while the process shuts down.
  HttpRequest get;
  get.path = path_;
  get.timeout = std::chrono::milliseconds(2000);
  call_ = client_->start(std::move(get), [this, done](Result<HttpResponse> r) {
    call_ = 0;
    auto lease = r && r->status == 200 ? nlohmann::json::parse(r->body, nullptr, false)
                                       : nlohmann::json();
    if (!lease.is_object() || !lease["spec"].is_object() ||
        lease["spec"].value("holderIdentity", "") != opts_.identity) {
      if (done) done();
      return;
    }
    lease["spec"]["holderIdentity"] = "";
    lease["spec"]["leaseDurationSeconds"] = 1;
    lease["spec"]["renewTime"] = micro_time(std::chrono::system_clock::now());
    HttpRequest put;
    put.method = "PUT";
    put.path = path_;
    put.content_type = "application/json";
    put.body = lease.dump();
    put.timeout = std::chrono::milliseconds(2000);
    call_ = client_->start(std::move(put), [this, done](Result<HttpResponse> r2) {
      call_ = 0;
      if (r2 && r2->status == 200) spdlog::info("kubernetes: released Lease {}", opts_.name);
      if (done) done();
    });
  });
}

void LeaderElector::set_leader(bool leader) {
  if (leader == leader_) return;
  leader_ = leader;
  spdlog::info("kubernetes: {} {} leader (Lease {}/{})", opts_.identity,
               leader ? "is now" : "is no longer", opts_.ns, opts_.name);
  auto cbs = callbacks_;  // a callback may register another
  for (auto& cb : cbs) cb(leader);
}

void LeaderElector::schedule() {
  if (!running_) return;
  auto d = leader_ ? opts_.renew_period : opts_.retry_period;
  uv_timer_start(
      timer_,
      [](uv_timer_t* t) {
        if (auto* self = static_cast<LeaderElector*>(t->data)) self->round();
      },
      static_cast<uint64_t>(d.count()), 0);
}

void LeaderElector::round() {
  if (!running_ || call_) return;
  HttpRequest req;
  req.path = path_;
  req.timeout = opts_.renew_deadline;
  call_ = client_->start(std::move(req), [this](Result<HttpResponse> r) {
    call_ = 0;
    on_get(std::move(r));
  });
}

nlohmann::json LeaderElector::make_spec(int transitions, const std::string& acquire_time) const {
  return {{"holderIdentity", opts_.identity},
          {"leaseDurationSeconds", lease_seconds(opts_.lease_duration)},
          {"acquireTime", acquire_time},
          {"renewTime", micro_time(std::chrono::system_clock::now())},
          {"leaseTransitions", transitions}};
}

void LeaderElector::on_get(Result<HttpResponse> r) {
  if (!running_) return;
  if (!r) {
    spdlog::warn("kubernetes: lease {}/{}: {}", opts_.ns, opts_.name, r.error().message);
    failed_round();
    return;
  }
  std::string now = micro_time(std::chrono::system_clock::now());
  if (r->status == 404) {
    nlohmann::json lease = {
        {"apiVersion", "coordination.k8s.io/v1"},
        {"kind", "Lease"},
        {"metadata", {{"name", opts_.name}, {"namespace", opts_.ns}}},
        {"spec", make_spec(0, now)}};
    write(std::move(lease), true, true);
    return;
  }
  if (r->status != 200) {
    spdlog::warn("kubernetes: {}", http_error("get lease", r->status, r->body).message);
    failed_round();
    return;
  }
  auto lease = nlohmann::json::parse(r->body, nullptr, false);
  if (!lease.is_object()) {
    failed_round();
    return;
  }
  if (!lease["spec"].is_object()) lease["spec"] = nlohmann::json::object();
  nlohmann::json& spec = lease["spec"];
  std::string holder = spec.value("holderIdentity", "");
  std::string rv = meta_string(lease, "resourceVersion");
  auto t = Clock::now();
  if (rv != observed_rv_) {
    observed_rv_ = rv;
    observed_at_ = t;
  }
  if (holder == opts_.identity) {
    spec["renewTime"] = now;
    spec["leaseDurationSeconds"] = lease_seconds(opts_.lease_duration);
    write(std::move(lease), false, !leader_);
    return;
  }
  if (leader_) {
    spdlog::warn("kubernetes: Lease {}/{} is held by {} now", opts_.ns, opts_.name, holder);
    set_leader(false);
  }
  int secs = spec.contains("leaseDurationSeconds") && spec["leaseDurationSeconds"].is_number()
                 ? spec["leaseDurationSeconds"].get<int>()
                 : lease_seconds(opts_.lease_duration);
  bool expired = holder.empty() || t - observed_at_ >= std::chrono::seconds(secs);
  if (!expired) {
    schedule();
    return;
  }
  int transitions = spec.contains("leaseTransitions") && spec["leaseTransitions"].is_number()
                        ? spec["leaseTransitions"].get<int>()
                        : 0;
  if (!holder.empty()) {
    spdlog::info("kubernetes: Lease {}/{} held by {} expired, taking over", opts_.ns, opts_.name,
                 holder);
  }
  spec = make_spec(transitions + 1, now);
  write(std::move(lease), false, true);
}

void LeaderElector::write(nlohmann::json lease, bool create, bool acquiring) {
  HttpRequest req;
  req.method = create ? "POST" : "PUT";
  req.path = create ? collection_ : path_;
  req.content_type = "application/json";
  req.body = lease.dump();
  req.timeout = opts_.renew_deadline;
  call_ = client_->start(std::move(req), [this, acquiring](Result<HttpResponse> r) {
    call_ = 0;
    on_write(acquiring, std::move(r));
  });
}

void LeaderElector::on_write(bool acquiring, Result<HttpResponse> r) {
  if (!running_) return;
  if (!r) {
    spdlog::warn("kubernetes: lease {}/{}: {}", opts_.ns, opts_.name, r.error().message);
    failed_round();
    return;
  }
  if (r->status == 200 || r->status == 201) {
    auto lease = nlohmann::json::parse(r->body, nullptr, false);
    observed_rv_ = meta_string(lease, "resourceVersion");
    observed_at_ = last_renew_ = Clock::now();
    set_leader(true);
    schedule();
    return;
  }
  if (r->status == 409) {
    spdlog::info("kubernetes: lease {}/{}: another replica wrote first", opts_.ns, opts_.name);
    set_leader(false);
    schedule();
    return;
  }
  spdlog::warn("kubernetes: {}",
               http_error(acquiring ? "acquire lease" : "renew lease", r->status, r->body).message);
  failed_round();
}

void LeaderElector::failed_round() {
  if (leader_ && Clock::now() - last_renew_ >= opts_.renew_deadline) {
    spdlog::warn("kubernetes: could not renew Lease {}/{} for {} ms, stepping down", opts_.ns,
                 opts_.name, opts_.renew_deadline.count());
    set_leader(false);
  }
  schedule();
}

}  // namespace warren::controller::k8s
