// Config documents from the outside (files, the controller's push): parse and
// validate arbitrary JSON; a valid snapshot must survive to_json → parse.
#include <cstdint>
#include <cstdlib>

#include "config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto doc = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    // Not JSON: try it as YAML instead (the file loader's other format).
    auto y = warren::config::yaml_to_json(std::string(reinterpret_cast<const char*>(data), size));
    if (!y.ok()) return 0;
    doc = std::move(y.value());
  }
  auto r = warren::config::parse(doc);
  if (!r.ok()) {
    if (r.error().message.empty()) std::abort();  // every rejection says why
    return 0;
  }
  auto again = warren::config::parse(warren::config::to_json(**r));
  if (!again.ok()) std::abort();  // what we dump, we must accept
  return 0;
}
