// Run a function on the next loop iteration: used to destroy objects whose
// methods are still on the stack (a connection closed from its own callback).
#pragma once

#include <uv.h>

#include <functional>

namespace warren {

void defer(uv_loop_t* loop, std::function<void()> fn);

// A repeating or one-shot timer owned by an object; stops on destruction.
class Timer {
 public:
  explicit Timer(uv_loop_t* loop);
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  void start(uint64_t ms, uint64_t repeat_ms, std::function<void()> fn);
  void stop();

 private:
  struct Impl;
  uv_loop_t* loop_;
  Impl* impl_ = nullptr;
};

inline uint64_t now_ms(uv_loop_t* loop) { return uv_now(loop); }

}  // namespace warren
