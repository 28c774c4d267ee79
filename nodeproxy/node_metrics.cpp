#include "node_metrics.h"

namespace warren::node {

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
    "destination_service",
    "destination_service_namespace",
    "destination_service_name",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
};

std::string or_unknown(const std::string& s) { return s.empty() ? "unknown" : s; }

std::string app_of(const config::Workload* w) {
  if (!w) return "unknown";
  return w->canonical_name.empty() ? "unknown" : w->canonical_name;
}

std::string version_of(const config::Workload* w) {
  if (!w) return "unknown";
  return w->canonical_revision.empty() ? "latest" : w->canonical_revision;
}
}  // namespace

NodeMetrics::NodeMetrics(metrics::Registry& reg, std::string cluster)
    : reg_(reg),
      opened_(reg.counter("istio_tcp_connections_opened_total",
                          "Total TCP connections opened through the mesh.", kLabels)),
      closed_(reg.counter("istio_tcp_connections_closed_total",
                          "Total TCP connections closed through the mesh.", kLabels)),
      sent_(reg.counter("istio_tcp_sent_bytes_total",
                        "Bytes sent to the client (response direction) of TCP connections.",
                        kLabels)),
      received_(reg.counter("istio_tcp_received_bytes_total",
                            "Bytes received from the client (request direction) of TCP "
                            "connections.",
                            kLabels)),
      rejected_(reg.counter("warren_connections_rejected_total",
                            "Connections refused by warren-node, by direction and reason.",
                            {"direction", "reason"})),
      reloads_(reg.counter("warren_config_reloads_total",
                           "Configuration loads, by result.", {"result"})),
      cluster_(std::move(cluster)) {
  pool_connections = reg.gauge("warren_hbone_pool_connections",
                               "Outbound HBONE (mTLS HTTP/2) connections held in the pool.")
                         .with(std::vector<std::string>{});
  pool_streams = reg.gauge("warren_hbone_pool_streams",
                           "CONNECT streams open on pooled HBONE connections.")
                     .with(std::vector<std::string>{});
  active_tunnels = reg.gauge("warren_tunnels_active", "Tunnelled connections open now.",
                             {"direction"})
                       .with(std::vector<std::string>{"all"});
  pool_connects = reg.counter("warren_hbone_pool_connects_total",
                              "New outbound HBONE connections dialled.")
                      .with(std::vector<std::string>{});
  pool_reuses = reg.counter("warren_hbone_pool_reuses_total",
                            "CONNECT streams placed on an existing pooled connection.")
                    .with(std::vector<std::string>{});
}

ConnCounters NodeMetrics::conn(const ConnLabels& l) {
  std::string dst_svc = "unknown", dst_svc_ns = "unknown", dst_svc_name = "unknown";
  if (l.svc) {
    dst_svc = l.svc->hostname;
    dst_svc_ns = l.svc->namespace_;
    dst_svc_name = l.svc->name;
  }
  std::vector<std::string> v = {
      l.reporter,
      l.src ? or_unknown(l.src->name.str()) : "unknown",
      l.src ? or_unknown(l.src->namespace_) : "unknown",
      or_unknown(l.src_principal),
      app_of(l.src),
      version_of(l.src),
      app_of(l.src),
      version_of(l.src),
      cluster_,
      dst_svc,
      dst_svc_ns,
      dst_svc_name,
      l.dst ? or_unknown(l.dst->name.str()) : "unknown",
      l.dst ? or_unknown(l.dst->namespace_) : "unknown",
      or_unknown(l.dst_principal),
      app_of(l.dst),
      version_of(l.dst),
      app_of(l.dst),
      version_of(l.dst),
      cluster_,
      "tcp",
      l.response_flags,
      l.mtls ? "mutual_tls" : l.plaintext ? "none" : "unknown",
  };
  ConnCounters c;
  c.opened = opened_.with(v);
  c.closed = closed_.with(v);
  c.sent = sent_.with(v);
  c.received = received_.with(v);
  return c;
}

metrics::Counter* NodeMetrics::rejected(const std::string& direction, const std::string& reason) {
  return rejected_.with(std::vector<std::string>{direction, reason});
}

metrics::Counter* NodeMetrics::config_reload(bool ok) {
  return reloads_.with(std::vector<std::string>{ok ? "success" : "failure"});
}

}  // namespace warren::node
