// SOCKS5 handshakes from untrusted local clients. The first byte picks the
// chunk size, so fragmentation is fuzzed along with the content.
#include <cstdint>
#include <cstdlib>

#include "socks5.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  size_t chunk = data[0] % 16 + 1;
  data++;
  size--;
  warren::socks5::ServerParser p;
  std::string out;
  auto state = warren::socks5::State::kNeedMore;
  for (size_t off = 0; off < size; off += chunk) {
    state = p.feed(data + off, std::min(chunk, size - off), out);
    if (out.size() > 2 + 22) std::abort();  // method reply + one failure reply at most
  }
  if (state == warren::socks5::State::kDone) {
    const auto& t = p.target();
    if (t.port == 0 || (t.addr.has_value() == !t.host.empty())) std::abort();
    if (p.leftover_data().size() != p.leftover()) std::abort();
  }
  if (state == warren::socks5::State::kError && p.error().empty()) std::abort();
  return 0;
}
