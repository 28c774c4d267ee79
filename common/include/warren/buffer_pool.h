// A per-thread free list of byte buffers, so the data path reuses the
// capacity of buffers handed to the kernel instead of allocating per write.
#pragma once

#include <string>

namespace warren {

// A cleared buffer with at least `reserve` bytes of capacity.
std::string take_buffer(size_t reserve = 64 * 1024);
// Returns a buffer to this thread's free list (dropped if the list is full or
// the buffer is too large or too small to be worth keeping).
void give_buffer(std::string&& buf);

}  // namespace warren
