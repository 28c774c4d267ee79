#include "telemetry.h"

#include <cstdio>
#include <cstring>

#include "warren/log.h"

namespace warren::waypoint {

namespace {

const std::vector<std::string> kLabels = {
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
};

constexpr std::string_view kReporter = "waypoint";

std::string or_unknown(const std::string& s) {
  return s.empty() ? std::string(metrics::kUnknown) : s;
}

// Istio: app/version labels fall back to the canonical service/revision; the
// canonical revision of a known workload defaults to "latest".
std::string canonical_rev(const std::string& rev, const std::string& workload) {
  if (!rev.empty()) return rev;
  return workload.empty() ? std::string(metrics::kUnknown) : "latest";
}

// Length-prefixed, so no value can forge a field boundary.
void key_add(std::string& k, std::string_view v) {
  uint32_t n = static_cast<uint32_t>(v.size());
  k.append(reinterpret_cast<const char*>(&n), sizeof n);
  k.append(v);
}

void key_add_int(std::string& k, int64_t v) {
  k.append(reinterpret_cast<const char*>(&v), sizeof v);
}

}  // namespace

// ---------------------------------------------------------------- metrics

const std::vector<std::string>& RequestMetrics::label_names() {
  return kLabels;
}

RequestMetrics::RequestMetrics(metrics::Registry& reg, std::string cluster, size_t max_series)
    : requests_(
          reg.counter("istio_requests_total", "Total requests handled by the mesh.", kLabels)),
      duration_(reg.histogram("istio_request_duration_milliseconds",
                              "Duration of requests in milliseconds.", kLabels,
                              metrics::istio_duration_ms_buckets())),
      request_bytes_(reg.histogram("istio_request_bytes",
                                   "Size of HTTP requests (headers and body) in bytes.", kLabels,
                                   metrics::istio_bytes_buckets())),
      response_bytes_(reg.histogram("istio_response_bytes",
                                    "Size of HTTP responses (headers and body) in bytes.", kLabels,
                                    metrics::istio_bytes_buckets())),
      cluster_(std::move(cluster)),
      max_series_(max_series) {}

void RequestMetrics::label_values(const RequestRecord& r, std::vector<std::string>& v) const {
  const auto& s = r.source;
  const auto& d = r.destination;
  auto app = [](const std::string& a, const std::string& canon) {
    return or_unknown(a.empty() ? canon : a);
  };
  std::string s_rev = canonical_rev(s.canonical_revision, s.workload);
  std::string d_rev = canonical_rev(d.canonical_revision, d.workload);
  v = {
      std::string(kReporter),
      or_unknown(s.workload),
      or_unknown(s.namespace_),
      or_unknown(s.principal),
      app(s.app, s.canonical_service),
      s.version.empty() ? s_rev : s.version,
      or_unknown(s.canonical_service.empty() ? s.app : s.canonical_service),
      s_rev,
      s.cluster.empty() ? cluster_ : s.cluster,
      or_unknown(d.workload),
      or_unknown(d.namespace_),
      or_unknown(d.principal),
      app(d.app, d.canonical_service),
      d.version.empty() ? d_rev : d.version,
      or_unknown(d.service_host),
      or_unknown(d.service_name),
      or_unknown(d.service_namespace),
      or_unknown(d.canonical_service.empty() ? d.app : d.canonical_service),
      d_rev,
      d.cluster.empty() ? cluster_ : d.cluster,
      r.grpc ? "grpc" : "http",
      std::to_string(r.response_code),
      r.grpc_status ? std::to_string(*r.grpc_status) : std::string(metrics::kUnknown),
      or_unknown(r.response_flags),
      or_unknown(r.connection_security_policy),
  };
}

RequestMetrics::Handles RequestMetrics::resolve(const std::vector<std::string>& values) {
  Handles h;
  h.requests = requests_.with(values);
  h.duration = duration_.with(values);
  h.request_bytes = request_bytes_.with(values);
  h.response_bytes = response_bytes_.with(values);
  return h;
}

void RequestMetrics::record(const RequestRecord& r) {
  thread_local std::string key;
  key.clear();
  const auto& s = r.source;
  const auto& d = r.destination;
  for (const std::string* f : {&s.workload,
                               &s.namespace_,
                               &s.principal,
                               &s.app,
                               &s.version,
                               &s.canonical_service,
                               &s.canonical_revision,
                               &s.cluster,
                               &d.workload,
                               &d.namespace_,
                               &d.principal,
                               &d.app,
                               &d.version,
                               &d.service_host,
                               &d.service_name,
                               &d.service_namespace,
                               &d.canonical_service,
                               &d.canonical_revision,
                               &d.cluster,
                               &r.response_flags,
                               &r.connection_security_policy})
    key_add(key, *f);
  key_add_int(key, r.response_code);
  key_add_int(key, r.grpc_status ? int64_t{*r.grpc_status} : int64_t{1} << 40);
  key_add_int(key, r.grpc ? 1 : 0);

  Handles h;
  {
    std::lock_guard lk(mu_);
    auto it = cache_.find(std::string_view(key));
    if (it != cache_.end()) {
      h = it->second;
    } else if (cache_.size() >= max_series_) {
      if (!overflow_.requests)
        overflow_ = resolve(std::vector<std::string>{std::string(kReporter)});
      h = overflow_;
    } else {
      std::vector<std::string> values;
      label_values(r, values);
      h = resolve(values);
      cache_.emplace(key, h);
    }
  }
  h.requests->inc();
  h.duration->observe(static_cast<double>(r.duration.count()) / 1000.0);
  h.request_bytes->observe(static_cast<double>(r.request_header_bytes + r.request_body_bytes));
  h.response_bytes->observe(static_cast<double>(r.response_header_bytes + r.response_body_bytes));
}

size_t RequestMetrics::series() const {
  std::lock_guard lk(mu_);
  return cache_.size();
}

// ---------------------------------------------------------------- JSON

namespace {

// Length of the valid UTF-8 sequence at s[i], or 0 if it is not valid; on
// failure *bad is the length of the maximal invalid subpart (>= 1).
size_t utf8_seq(std::string_view s, size_t i, size_t* bad) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // bounds of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    need = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 3;
    if (c == 0xE0) lo = 0xA0;  // overlong
    if (c == 0xED) hi = 0x9F;  // surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 4;
    if (c == 0xF0) lo = 0x90;  // overlong
    if (c == 0xF4) hi = 0x8F;  // > U+10FFFF
  } else {
    *bad = 1;
    return 0;
  }
  for (size_t k = 1; k < need; ++k) {
    if (i + k >= s.size()) {
      *bad = k;
      return 0;
    }
    unsigned char x = b(i + k);
    unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (x < l || x > h) {
      *bad = k;
      return 0;
    }
  }
  return need;
}

void append_uint(std::string& out, uint64_t v) {
  char buf[24];
  int n = std::snprintf(buf, sizeof buf, "%llu", static_cast<unsigned long long>(v));
  out.append(buf, static_cast<size_t>(n));
}

void field_name(std::string& out, std::string_view name) {
  if (out.size() > 1) out += ',';
  out += '"';
  out += name;
  out += "\":";
}

void str_field(std::string& out, std::string_view name, std::string_view v) {
  field_name(out, name);
  if (v.empty()) {
    out += "null";
  } else {
    append_json_string(out, v);
  }
}

void int_field(std::string& out, std::string_view name, int64_t v) {
  field_name(out, name);
  if (v < 0) {
    out += '-';
    append_uint(out, static_cast<uint64_t>(-(v + 1)) + 1);
  } else {
    append_uint(out, static_cast<uint64_t>(v));
  }
}

}  // namespace

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '"':
          out += "\\\"";
          break;
        case '\\':
          out += "\\\\";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        case '\b':
          out += "\\b";
          break;
        case '\f':
          out += "\\f";
          break;
        default:
          if (c < 0x20 || c == 0x7f) {
            out += "\\u00";
            out += kHex[c >> 4];
            out += kHex[c & 15];
          } else {
            out += static_cast<char>(c);
          }
      }
      ++i;
      continue;
    }
    size_t bad = 0;
    size_t n = utf8_seq(s, i, &bad);
    if (n == 0) {
      out += "\\ufffd";
      i += bad;
      continue;
    }
    // U+2028 / U+2029 are valid JSON but end lines in JavaScript and some log tools.
    if (n == 3 && c == 0xE2 && static_cast<unsigned char>(s[i + 1]) == 0x80 &&
        (static_cast<unsigned char>(s[i + 2]) & 0xFE) == 0xA8) {
      out += static_cast<unsigned char>(s[i + 2]) == 0xA8 ? "\\u2028" : "\\u2029";
    } else {
      out.append(s.substr(i, n));
    }
    i += n;
  }
  out += '"';
}

std::string access_log_json(const RequestRecord& r) {
  using namespace std::chrono;
  std::string out;
  out.reserve(640 + r.path.size() + r.user_agent.size());
  out += '{';
  str_field(out, "start_time", log::rfc3339_millis(r.start));
  str_field(out, "route_name", r.route_name);
  str_field(out, "method", r.method);
  str_field(out, "path", r.path);
  str_field(out, "protocol", r.protocol);
  int_field(out, "response_code", r.response_code);
  str_field(out, "response_flags", r.response_flags.empty() ? "-" : r.response_flags);
  str_field(out, "response_code_details", r.response_code_details);
  int_field(out, "bytes_received", static_cast<int64_t>(r.request_body_bytes));
  int_field(out, "bytes_sent", static_cast<int64_t>(r.response_body_bytes));
  int_field(out, "duration", duration_cast<milliseconds>(r.duration).count());
  // Envoy takes this from the x-envoy-upstream-service-time header: a string.
  str_field(out, "upstream_service_time",
            r.upstream_service_time
                ? std::to_string(duration_cast<milliseconds>(*r.upstream_service_time).count())
                : std::string());
  str_field(out, "x_forwarded_for", r.x_forwarded_for);
  str_field(out, "user_agent", r.user_agent);
  str_field(out, "request_id", r.request_id);
  str_field(out, "authority", r.authority);
  str_field(out, "upstream_host", r.destination.upstream_host);
  str_field(out, "upstream_cluster", r.destination.upstream_cluster);
  str_field(out, "downstream_local_address", r.downstream_local_address);
  str_field(out, "downstream_remote_address", r.source.address);
  str_field(out, "requested_server_name", r.requested_server_name);
  str_field(out, "trace_id", r.trace_id);
  if (r.grpc_status) {
    int_field(out, "grpc_status", *r.grpc_status);
  } else {
    str_field(out, "grpc_status", {});
  }
  int_field(out, "upstream_request_attempt_count", r.attempts);
  if (r.audit) {
    out += ",\"access_log_hint\":true";
    str_field(out, "audit_policy", r.audit_policy);
  }
  out += '}';
  return out;
}

}  // namespace warren::waypoint
