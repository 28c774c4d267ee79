// Route matching: the first line is a VirtualService `match` list (JSON), each
// further line a request "METHOD TARGET header:value...". Compile errors name
// a JSON pointer under the match; matching is pure; an empty list matches all.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "path.h"
#include "route_match.h"

using namespace warren::waypoint;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  size_t nl = in.find('\n');
  auto spec = nlohmann::json::parse(in.substr(0, nl), nullptr, /*allow_exceptions=*/false);
  if (spec.is_discarded()) return 0;
  auto m = compile_route_match(spec, "/http/0/match");
  if (!m.ok()) {
    if (m.error().message.rfind("/http/0/match", 0) != 0) std::abort();
    return 0;
  }
  while (nl != std::string_view::npos) {
    size_t start = nl + 1;
    nl = in.find('\n', start);
    std::string_view line = in.substr(start, nl == std::string_view::npos ? nl : nl - start);
    size_t sp = line.find(' ');
    std::string_view method = line.substr(0, sp);
    std::string_view rest = sp == std::string_view::npos ? std::string_view{} : line.substr(sp + 1);
    size_t sp2 = rest.find(' ');
    std::string_view target = rest.substr(0, sp2);
    Headers headers;
    while (sp2 != std::string_view::npos) {
      rest = rest.substr(sp2 + 1);
      sp2 = rest.find(' ');
      auto field = rest.substr(0, sp2);
      auto colon = field.find(':');
      if (colon != std::string_view::npos)
        headers.push_back(
            {std::string(field.substr(0, colon)), std::string(field.substr(colon + 1))});
    }
    auto n = normalize_target(target, method);
    if (!n.ok()) continue;
    RequestView v;
    v.method = method;
    v.authority = "svc:80";
    v.path = n->path;
    v.query = n->query;
    v.headers = &headers;
    v.port = 80;
    bool a = matches(*m, v);
    if (a != matches(*m, v)) std::abort();
    if (m->blocks.empty() && !a) std::abort();
    bool any = false;
    for (const auto& b : m->blocks) any |= matches(b, v);
    if (!m->blocks.empty() && any != a) std::abort();
  }
  return 0;
}
