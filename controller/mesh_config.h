// Istio's meshConfig, the part warren-controller reads: extensionProviders
// of type envoyExtAuthzHttp, the ext-authz services AuthorizationPolicy
// action CUSTOM names (waypoint/ext_authz.h has the semantics).
//
// Where it comes from, as Istio users write it, in both modes: the ConfigMap
// `istio` of the root namespace (--root-namespace, istio-system), data key
// `mesh` holding MeshConfig as YAML:
//
//   apiVersion: v1
//   kind: ConfigMap
//   metadata: {name: istio, namespace: istio-system}
//   data:
//     mesh: |
//       extensionProviders:
//       - name: ext-authz
//         envoyExtAuthzHttp:
//           service: ext-authz.foo.svc.cluster.local
//           port: 8000
//           includeRequestHeadersInCheck: ["x-ext-authz"]
//
// In Kubernetes the controller watches that one ConfigMap; locally it is a
// manifest of the watched directory like any other. Other ConfigMaps are
// ignored, as are the other fields of MeshConfig.
//
// Validation: the fields warren-waypoint reads (parse_ext_authz_provider),
// with the same checks, so a waypoint never refuses what it is sent. A bad
// provider is left out alone (its problems are reported against the
// ConfigMap: "data.mesh.extensionProviders[1].envoyExtAuthzHttp.port: ...");
// the others apply. Providers of other types (envoyExtAuthzGrpc, and the
// telemetry ones: zipkin, prometheus, envoyFileAccessLog...) are left out:
// envoyExtAuthzGrpc is reported (a CUSTOM policy may need it), the telemetry
// ones are not. A `mesh` that is not YAML or an extensionProviders that is
// not a list rejects the ConfigMap (the last good version stays).
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "validate.h"

namespace warren::controller {

inline constexpr const char* kMeshConfigMapName = "istio";
inline constexpr const char* kMeshConfigKey = "mesh";

struct MeshConfig {
  // The accepted providers, in order: {name, envoyExtAuthzHttp: {...}} with
  // port as a number (a quoted "8000" is accepted).
  nlohmann::json extension_providers = nlohmann::json::array();
  bool operator==(const MeshConfig&) const = default;
};

struct MeshConfigResult {
  MeshConfig config;
  // fatal: the ConfigMap is rejected whole; otherwise `problems` name the
  // providers left out.
  bool fatal = false;
  Problems problems;
};

// Reads the ConfigMap (any name: the caller decides which one counts).
MeshConfigResult mesh_config_from_configmap(const nlohmann::json& configmap);

// One extensionProviders entry checked as warren-waypoint parses it; the
// normalised entry, or problems under `path` (empty problems and a null
// result: a provider type Warren does not use, left out silently).
nlohmann::json check_extension_provider(const nlohmann::json& entry, const std::string& path, Problems& problems);

}  // namespace warren::controller
