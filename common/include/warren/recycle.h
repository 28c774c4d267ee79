// Per-thread reuse of the memory of objects made and destroyed once per
// request. glibc's malloc serves blocks up to ~1 KB from per-thread caches;
// bigger ones (a waypoint's per-request Session and Exchange) go through its
// general path, which also consolidates the small free lists each time.
// Deriving from Recycled<T> gives T a class operator new/delete that keeps up
// to kKeep freed blocks of exactly sizeof(T) for the next object.
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace warren {

template <class T, size_t kKeep = 512>
class Recycled {
 public:
  static void* operator new(size_t n) {
    auto& f = blocks();
    if (n == sizeof(T) && !f.v.empty()) {
      void* p = f.v.back();
      f.v.pop_back();
      return p;
    }
    return ::operator new(n);
  }
  static void operator delete(void* p, size_t n) noexcept {
    auto& f = blocks();
    if (n == sizeof(T) && f.v.size() < kKeep) {
      // push_back may allocate; the capacity is reserved once.
      f.v.push_back(p);
      return;
    }
    ::operator delete(p);
  }

 private:
  struct Blocks {
    std::vector<void*> v;
    Blocks() { v.reserve(kKeep); }
    ~Blocks() {
      for (void* p : v) ::operator delete(p);
    }
  };
  static Blocks& blocks() {
    static thread_local Blocks b;
    return b;
  }
};

}  // namespace warren
