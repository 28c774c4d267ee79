// One manifest file's text → the Kubernetes objects in it (the local source's
// parsing, apart from its file watching so it can be tested on strings).
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "warren/result.h"

namespace warren::controller {

struct ManifestObject {
  nlohmann::json obj;
  int line = 1;  // where its document starts (1-based; 1 for JSON)
};

// YAML with any number of documents ("---"), or JSON (one object, or an array
// of objects). `kind: List` (and typed lists such as PodList) contribute their
// items; items of a typed list without kind/apiVersion get the list's.
// Empty and null documents are skipped. A syntax error anywhere fails the
// whole file: "line 3, column 7: illegal map value". A document that is not
// an object fails it too ("document at line 5: must be an object, got an array").
Result<std::vector<ManifestObject>> parse_manifest(const std::string& text, bool is_json);

}  // namespace warren::controller
