// Kubernetes API vocabulary shared by the source's parts: which kinds live
// under which REST paths, how a path is built, how an API error (a Status
// object) reads, and the small encodings the API uses (base64 for Secret data
// and kubeconfig *-data fields, percent-encoding for query values, MicroTime).
//
//   const KindInfo* pod = find_kind("Pod");
//   collection_path(*pod)                  -> "/api/v1/pods" (all namespaces)
//   object_path(*pod, "shop", "web-1")     -> "/api/v1/namespaces/shop/pods/web-1"
//   object_path(*find_kind("Node"), "", "n1") + "/status"
//                                          -> "/api/v1/nodes/n1/status"
//
// Kinds known here: the 13 the controller watches (source.h kKinds) plus
// Lease (leader election), Secret (the CA's user root) and TokenReview.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "warren/result.h"

namespace warren::controller::k8s {

struct KindInfo {
  const char* kind;     // "Pod"
  const char* group;    // "" for the core group
  const char* version;  // "v1"
  const char* plural;   // "pods"
  bool namespaced;
  // Whether the controller may write an "Accepted" condition to the object's
  // /status (status_writer.h): the Istio and Gateway API kinds.
  bool status_writable;

  std::string api_version() const;  // "v1", "security.istio.io/v1"
  std::string list_kind() const { return std::string(kind) + "List"; }
};

// nullptr for a kind not in the table.
const KindInfo* find_kind(std::string_view kind);
// The kinds the source lists and watches, in source.h kKinds order.
std::vector<const KindInfo*> watched_kinds();

// "/api/v1" or "/apis/<group>/<version>".
std::string group_prefix(const KindInfo& k);
// The collection: across all namespaces when `ns` is empty.
std::string collection_path(const KindInfo& k, std::string_view ns = {});
// One object; `ns` is ignored for cluster-scoped kinds.
std::string object_path(const KindInfo& k, std::string_view ns, std::string_view name);

// A Kubernetes Status object ({kind: Status, code, reason, message}) read from
// a response body; fields left empty/0 when the body is not one.
struct ApiStatus {
  int code = 0;
  std::string reason;  // "Expired", "Conflict", "NotFound", ...
  std::string message;
};
ApiStatus parse_status(const nlohmann::json& j);
ApiStatus parse_status_body(std::string_view body);

// An Error for a non-2xx response: "<what>: HTTP 409 Conflict: <message>".
// 404 maps to kNotFound, 401/403 to kPermissionDenied, 409 to
// kInvalidArgument, 5xx to kUnavailable, others to kProtocol.
Error http_error(const std::string& what, int http_status, std::string_view body);

// RFC 4648 base64 (with padding; whitespace in the input is skipped).
Result<std::string> base64_decode(std::string_view in);
std::string base64_encode(std::string_view in);

// Percent-encodes everything but RFC 3986 unreserved characters.
std::string url_encode(std::string_view s);

// metav1.MicroTime / Time: "2024-05-01T12:34:56.123456Z" / "2024-05-01T12:34:56Z".
std::string micro_time(std::chrono::system_clock::time_point t);
std::string rfc3339(std::chrono::system_clock::time_point t);

// The whole file (errors name it).
Result<std::string> read_text_file(const std::string& path);

// The string at obj.metadata.<field>, "" when missing.
std::string meta_string(const nlohmann::json& obj, const char* field);

}  // namespace warren::controller::k8s
