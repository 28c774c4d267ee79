// Istio's standard TCP metrics (names and labels as dashboards expect them)
// plus Warren's own pool and rejection counters.
#pragma once

#include <string>

#include "config.h"
#include "warren/metrics.h"

namespace warren::node {

struct ConnLabels {
  std::string reporter;  // "source" (outbound) or "destination" (inbound)
  const config::Workload* src = nullptr;
  std::string src_principal;  // full SPIFFE id, empty if unknown
  const config::Workload* dst = nullptr;
  const config::Service* svc = nullptr;
  std::string dst_principal;
  std::string response_flags = "-";
  bool mtls = true;
  bool plaintext = false;  // known plaintext (inbound on 15006, fast path): "none"
};

struct ConnCounters {
  metrics::Counter* opened = nullptr;
  metrics::Counter* closed = nullptr;
  metrics::Counter* sent = nullptr;
  metrics::Counter* received = nullptr;
};

class NodeMetrics {
 public:
  explicit NodeMetrics(metrics::Registry& reg, std::string trust_domain_cluster = "Kubernetes");
  // Resolves the label set once per connection; increments are then lock-free.
  ConnCounters conn(const ConnLabels& l);
  metrics::Counter* rejected(const std::string& direction, const std::string& reason);
  metrics::Counter* config_reload(bool ok);
  metrics::Gauge* pool_connections;
  metrics::Gauge* pool_streams;
  metrics::Gauge* active_tunnels;
  metrics::Counter* pool_connects;
  metrics::Counter* pool_reuses;

 private:
  metrics::Registry& reg_;
  metrics::CounterFamily& opened_;
  metrics::CounterFamily& closed_;
  metrics::CounterFamily& sent_;
  metrics::CounterFamily& received_;
  metrics::CounterFamily& rejected_;
  metrics::CounterFamily& reloads_;
  std::string cluster_;
};

}  // namespace warren::node
