#include "source.h"

namespace warren::controller {

ObjectKey key_of(const nlohmann::json& obj) {
  ObjectKey k;
  if (!obj.is_object()) return k;
  auto str = [](const nlohmann::json& o, const char* f) {
    auto it = o.find(f);
    return it != o.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  k.kind = str(obj, "kind");
  if (auto md = obj.find("metadata"); md != obj.end() && md->is_object()) {
    k.ns = str(*md, "namespace");
    k.name = str(*md, "name");
  }
  return k;
}

}  // namespace warren::controller
