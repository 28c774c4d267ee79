#include "warren/buffer_pool.h"

#include <vector>

namespace warren {

namespace {
constexpr size_t kMaxKept = 64;
constexpr size_t kMinCap = 16 * 1024;
constexpr size_t kMaxCap = 1024 * 1024;
thread_local std::vector<std::string> g_free;
}  // namespace

std::string take_buffer(size_t reserve) {
  std::string s;
  if (!g_free.empty()) {
    s = std::move(g_free.back());
    g_free.pop_back();
    s.clear();
  }
  if (s.capacity() < reserve) s.reserve(reserve);
  return s;
}

void give_buffer(std::string&& buf) {
  if (buf.capacity() < kMinCap || buf.capacity() > kMaxCap || g_free.size() >= kMaxKept) return;
  g_free.push_back(std::move(buf));
}

}  // namespace warren
