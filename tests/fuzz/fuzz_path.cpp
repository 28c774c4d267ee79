// Path normalisation: the first byte picks the options, the rest is the
// request target. A normalised path is a fixed point, starts with `/`, and
// carries no dot segments (with normalisation) and no `//` (with merging).
#include <cstdint>
#include <cstdlib>
#include <string>

#include "path.h"

using namespace warren::waypoint;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  PathOptions o;
  o.normalize = data[0] & 1;
  o.merge_slashes = data[0] & 2;
  o.escaped_slashes = static_cast<EscapedSlashes>((data[0] >> 2) & 3);
  o.backslash = static_cast<Backslash>(((data[0] >> 4) & 3) % 3);
  std::string_view target(reinterpret_cast<const char*>(data + 1), size - 1);
  const char* method = (data[0] & 0x40) ? "OPTIONS" : "GET";
  auto r = normalize_target(target, method, o);
  if (!r.ok()) {
    if (r.error().message.empty()) std::abort();
    return 0;
  }
  const std::string& p = r->path;
  if (p == "*") {
    if (target != "*") std::abort();
    return 0;
  }
  if (p.empty() || p[0] != '/') std::abort();
  for (unsigned char c : p)
    if (c < 0x20 || c == 0x7f || c == ' ' || c == '#' || c == '?') std::abort();
  if (o.merge_slashes && p.find("//") != std::string::npos) std::abort();
  if (o.normalize) {
    if (p.find("/./") != std::string::npos || p.find("/../") != std::string::npos) std::abort();
    if (p.ends_with("/.") || p.ends_with("/..")) std::abort();
    if (o.backslash == Backslash::kToSlash && p.find('\\') != std::string::npos) std::abort();
  }
  if (o.escaped_slashes == EscapedSlashes::kUnescapeAndForward ||
      o.escaped_slashes == EscapedSlashes::kUnescapeAndRedirect) {
    if (p.find("%2F") != std::string::npos || p.find("%5C") != std::string::npos) std::abort();
  }
  auto again = normalize_path(p, o);
  if (!again.ok() || *again != p) std::abort();  // idempotent
  auto t2 = normalize_target(r->target(), method, o);
  if (!t2.ok() || t2->target() != r->target() || t2->redirect) std::abort();
  return 0;
}
