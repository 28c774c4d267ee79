// Request telemetry of the waypoint: Istio's standard HTTP metrics
// (reporter="waypoint") and the Envoy/Istio JSON access log line.
//
// The request path fills one RequestRecord per request (after the response
// is done or the downstream went away) and hands it to RequestMetrics::record()
// and access_log_json(). Nothing here does I/O.
//
// Label conventions follow REFERENCE.md "Metrics and logs": an empty string
// in a record means "not known" and is written "unknown" (metrics) or null
// (access log), with the Istio defaults below for app/version.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "warren/metrics.h"

namespace warren::waypoint {

struct RequestRecord {
  // ---- timing
  std::chrono::system_clock::time_point start{};  // first byte of the request
  std::chrono::microseconds duration{0};          // start to last response byte
  // Start to the first byte of the upstream response (Envoy's
  // x-envoy-upstream-service-time); unset when no upstream answered.
  std::optional<std::chrono::microseconds> upstream_service_time;

  // ---- request / response
  std::string method;
  std::string path;                   // as received (before normalisation), query included
  std::string authority;              // :authority / Host as received
  std::string protocol = "HTTP/1.1";  // "HTTP/1.1", "HTTP/2"
  bool grpc = false;                  // content-type application/grpc*: request_protocol="grpc"
  // Istio's istio_request_bytes / istio_response_bytes count headers and body
  // (Envoy's request header byte size + body). The access log's bytes_received
  // / bytes_sent are body bytes only, as Envoy's %BYTES_RECEIVED%/%BYTES_SENT%.
  // A caller that does not count header bytes may leave them 0: the metrics
  // then hold body bytes only.
  uint64_t request_header_bytes = 0;
  uint64_t request_body_bytes = 0;
  uint64_t response_header_bytes = 0;
  uint64_t response_body_bytes = 0;
  int response_code = 0;  // 0: no response was sent (downstream reset first)
  // Envoy short flags, comma separated when several: "-" (none), "UO", "UF",
  // "URX", "UH", "DI", "FI", "UT", "UC", "NR", "RL", "UAEX", "DC", "LR", "UMSDR".
  std::string response_flags = "-";
  std::string response_code_details;  // Envoy's %RESPONSE_CODE_DETAILS%, e.g. "via_upstream"
  std::optional<int> grpc_status;     // grpc-status of the response (trailers or headers)

  // ---- peers
  struct Source {
    std::string workload, namespace_, principal;  // principal: full SPIFFE id
    std::string app, version;                     // app/version labels; "" -> canonical
    std::string canonical_service, canonical_revision;
    std::string cluster;  // Kubernetes cluster id; "" -> RequestMetrics default
    std::string address;  // downstream remote "ip:port"
  } source;
  struct Destination {
    std::string service_host;  // reviews.default.svc.cluster.local
    std::string service_name, service_namespace;
    std::string workload, namespace_, principal;
    std::string app, version;
    std::string canonical_service, canonical_revision;
    std::string cluster;           // Kubernetes cluster id; "" -> RequestMetrics default
    std::string upstream_cluster;  // Envoy cluster name:
                                   // "outbound|9080|v1|reviews.default.svc.cluster.local"
    std::string upstream_host;     // chosen endpoint "ip:port"
  } destination;

  // ---- the rest of the access log
  std::string downstream_local_address;  // "ip:port" the request came in on
  std::string requested_server_name;     // SNI, if any
  std::string route_name;
  std::string request_id;       // x-request-id
  std::string trace_id;         // 32 hex (W3C / B3 trace id), "" if untraced
  std::string x_forwarded_for;  // as received
  std::string user_agent;
  std::string connection_security_policy = "mutual_tls";  // "mutual_tls", "none", "unknown"
  uint32_t attempts = 1;  // upstream attempts (retries + 1); 0: none made
  // An AUDIT AuthorizationPolicy matched (Envoy's RBAC LOG action sets
  // envoy.common access_log_hint): logged as "access_log_hint": true and
  // "audit_policy" (the fields are left out otherwise).
  bool audit = false;
  std::string audit_policy;
};

// istio_requests_total, istio_request_duration_milliseconds, istio_request_bytes
// and istio_response_bytes, with Istio's 25 standard labels (reporter, source_*,
// destination_*, request_protocol, response_code, grpc_response_status,
// response_flags, connection_security_policy) and reporter="waypoint".
//
// Cost of record(): the label values are appended into a per-thread key
// buffer (no allocation once it has grown), then one lookup in a hash map
// under a mutex maps the key to the four resolved series; the update is then
// one relaxed atomic add and three histogram observes. Only the first record of
// a new label tuple builds label vectors and takes the registry's locks.
// The cache holds at most `max_series` tuples; past that, new tuples are
// counted in one overflow series whose labels are all "unknown" (except
// reporter), so a client cannot grow memory without bound through labels it
// controls.
class RequestMetrics {
 public:
  explicit RequestMetrics(metrics::Registry& reg, std::string cluster = "Kubernetes",
                          size_t max_series = 20000);
  RequestMetrics(const RequestMetrics&) = delete;
  RequestMetrics& operator=(const RequestMetrics&) = delete;

  // Thread-safe; throws only std::bad_alloc.
  void record(const RequestRecord& r);

  // Label tuples cached so far (tests, admin).
  size_t series() const;

  static const std::vector<std::string>& label_names();

 private:
  struct Handles {
    metrics::Counter* requests = nullptr;
    metrics::Histogram* duration = nullptr;
    metrics::Histogram* request_bytes = nullptr;
    metrics::Histogram* response_bytes = nullptr;
  };
  struct KeyHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
  };
  struct KeyEq {
    using is_transparent = void;
    bool operator()(std::string_view a, std::string_view b) const { return a == b; }
  };

  void label_values(const RequestRecord& r, std::vector<std::string>& out) const;
  Handles resolve(const std::vector<std::string>& values);

  metrics::CounterFamily& requests_;
  metrics::HistogramFamily& duration_;
  metrics::HistogramFamily& request_bytes_;
  metrics::HistogramFamily& response_bytes_;
  std::string cluster_;
  size_t max_series_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Handles, KeyHash, KeyEq> cache_;
  Handles overflow_;  // resolved on first use
};

// One access log line (no trailing newline): a JSON object with the field
// names of Istio's default JSON access log format (start_time, route_name,
// method, path, protocol, response_code, response_flags, response_code_details,
// bytes_received, bytes_sent, duration, upstream_service_time, x_forwarded_for,
// user_agent, request_id, authority, upstream_host, upstream_cluster,
// downstream_local_address, downstream_remote_address, requested_server_name)
// plus trace_id, grpc_status and upstream_request_attempt_count. As in Envoy's
// JSON format, numbers are numbers and unknown strings are null.
std::string access_log_json(const RequestRecord& r);

// Appends `s` as a JSON string literal (quotes included). Any bytes are safe:
// control characters, '"' and '\' are escaped, U+2028/U+2029 too, and each
// maximal invalid UTF-8 subsequence becomes U+FFFD (written \ufffd).
void append_json_string(std::string& out, std::string_view s);

}  // namespace warren::waypoint
