// A node's configuration in controller mode: its own bootstrap file (node
// name and address, listeners, capture) plus the resources the controller
// pushed (controller/model.h), assembled into the one document shape
// warren::config::parse reads. A resource the parser rejects is left out and
// reported by id, so one bad resource never blocks the rest.
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <string>

#include "warren/config.h"

namespace warren::node {

struct Assembled {
  config::SnapshotPtr snap;                      // null when even the bootstrap alone fails
  std::map<std::string, std::string> rejected;  // id -> reason
  std::string error;                             // why snap is null
};

// `resources` is borrowed (its bodies are moved into the document and back),
// so it is unchanged on return.
Assembled assemble(const nlohmann::json& bootstrap, std::map<std::string, nlohmann::json>& resources);

// The document array a resource id belongs to ("workload/x" -> "workloads"),
// or "" for an id this node does not know (kept, ignored).
const char* array_of(const std::string& id);

}  // namespace warren::node
