#include "warren/defer.h"

namespace warren {

void defer(uv_loop_t* loop, std::function<void()> fn) {
  struct Job {
    uv_timer_t t;
    std::function<void()> fn;
  };
  auto* j = new Job{{}, std::move(fn)};
  uv_timer_init(loop, &j->t);
  j->t.data = j;
  uv_timer_start(
      &j->t,
      [](uv_timer_t* t) {
        auto* j = static_cast<Job*>(t->data);
        j->fn();
        uv_close(reinterpret_cast<uv_handle_t*>(&j->t),
                 [](uv_handle_t* h) { delete static_cast<Job*>(h->data); });
      },
      0, 0);
}

// The uv handle outlives the Timer when closed (uv_close is asynchronous), so it
// lives in a separately allocated block that frees itself.
struct Timer::Impl {
  uv_timer_t t;
  std::function<void()> fn;
};

// The handle is made on first start(): objects holding several timers of
// which most never run (a waypoint's per-request Session has five) then cost
// neither an allocation nor a handle to close.
Timer::Timer(uv_loop_t* loop) : loop_(loop) {}

Timer::~Timer() {
  if (!impl_) return;
  uv_timer_stop(&impl_->t);
  impl_->fn = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&impl_->t),
           [](uv_handle_t* h) { delete static_cast<Impl*>(h->data); });
}

void Timer::start(uint64_t ms, uint64_t repeat_ms, std::function<void()> fn) {
  if (!impl_) {
    impl_ = new Impl;
    uv_timer_init(loop_, &impl_->t);
    impl_->t.data = impl_;
  }
  impl_->fn = std::move(fn);
  // libuv counts from the time cached when this loop iteration began: a
  // timer started late in a busy iteration would fire up to that much early
  // (a 100 ms fault delay answered in 90 ms). A clock read (vDSO) fixes it.
  uv_update_time(impl_->t.loop);
  uv_timer_start(
      &impl_->t,
      [](uv_timer_t* t) {
        auto* i = static_cast<Impl*>(t->data);
        if (i->fn) {
          auto fn = i->fn;  // the callback may destroy the Timer
          fn();
        }
      },
      ms, repeat_ms);
}

void Timer::stop() {
  if (impl_) uv_timer_stop(&impl_->t);
}

}  // namespace warren
