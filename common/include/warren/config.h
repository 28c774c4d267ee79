// The node's view of the mesh: an immutable snapshot built from a JSON document
// (a file in standalone mode, the controller's push later). Validation collects
// every error as "<json-pointer>: <reason>"; a snapshot is only built when there
// are none (STYLE.md §4).
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "warren/ip.h"
#include "warren/result.h"

namespace warren::config {

enum class Protocol { kHbone, kNone };  // NONE: not in the mesh, plain TCP
enum class PeerAuthMode { kUnset, kStrict, kPermissive, kDisable };
enum class PolicyAction { kAllow, kDeny, kAudit, kCustom };

struct Workload {
  std::string uid;
  std::string name;
  std::string namespace_;
  std::string service_account = "default";
  std::string node;
  std::vector<IpAddr> ips;
  Protocol protocol = Protocol::kHbone;
  std::map<std::string, std::string> labels;
  std::string waypoint;  // gateway name, empty if none (issue 5)
  std::map<std::string, std::string> annotations;
  // warren.io/exclude-outbound-ports: connects to these ports are not captured.
  std::vector<uint16_t> excluded_outbound_ports;
  // spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>
  std::string identity;
  // Istio's canonical service and revision (telemetry labels), from
  // service.istio.io/canonical-name, app.kubernetes.io/name or app (else the
  // name), and service.istio.io/canonical-revision, app.kubernetes.io/version
  // or version (else "latest"). Kept when labels are not: in controller mode
  // a workload on another node keeps no labels or annotations (only local
  // ones are matched by selectors), which is most of its memory.
  std::string canonical_name, canonical_revision;
};

struct ServicePort {
  uint16_t port = 0;
  uint16_t target_port = 0;  // 0: same as port
  std::string name;
};

struct Service {
  std::string name;
  std::string namespace_;
  std::string hostname;  // <name>.<ns>.svc.cluster.local when not given
  std::vector<IpAddr> vips;
  std::vector<ServicePort> ports;
  std::vector<std::string> endpoints;  // workload uids
};

// AuthorizationPolicy, Istio's shape (security.istio.io/v1), kept as parsed
// fields. Strings in principals/namespaces support Istio's prefix/suffix "*".
struct StringMatch {
  std::vector<std::string> values;
  std::vector<std::string> not_values;
};

struct Source {
  StringMatch principals;   // with "spiffe://" stripped, as Istio matches them
  StringMatch namespaces;
  std::vector<Cidr> ip_blocks, not_ip_blocks;
  bool has_l7_only = false;  // requestPrincipals, remoteIpBlocks ...
  StringMatch service_accounts;  // "<namespace>/<service-account>"
};

struct Operation {
  std::vector<uint16_t> ports, not_ports;
  bool has_l7_only = false;  // hosts, methods, paths and their not* variants
};

struct Condition {
  std::string key;  // source.ip, source.namespace, source.principal, destination.ip, destination.port
  std::vector<std::string> values, not_values;
  bool l7_only = false;  // request.*, or any key L4 cannot see
};

struct Rule {
  std::vector<Source> from;      // OR'd; empty = any
  std::vector<Operation> to;     // OR'd; empty = any
  std::vector<Condition> when;   // AND'd
};

struct AuthorizationPolicy {
  std::string name;
  std::string namespace_;
  // Empty selector: namespace-wide (or mesh-wide in the root namespace).
  std::map<std::string, std::string> selector;
  bool has_selector = false;
  PolicyAction action = PolicyAction::kAllow;
  std::vector<Rule> rules;  // empty rules: ALLOW matches nothing, DENY matches nothing
  bool dry_run = false;     // istio.io/dry-run annotation: log only
  // targetRef(s) set: the policy binds to a waypoint/Service/Gateway and is
  // enforced there, never by the node proxy at L4.
  bool waypoint_only = false;
  nlohmann::json raw;  // the object as given, for to_json (/config_dump)
};

struct PeerAuthentication {
  std::string name;
  std::string namespace_;
  std::map<std::string, std::string> selector;
  bool has_selector = false;
  PeerAuthMode mode = PeerAuthMode::kUnset;
  std::map<uint16_t, PeerAuthMode> port_modes;  // portLevelMtls
  nlohmann::json raw;  // the object as given, for to_json (/config_dump)
};

struct Listeners {
  SockAddr socks5{*IpAddr::parse("127.0.0.1"), 15080};
  SockAddr admin{*IpAddr::parse("127.0.0.1"), 15000};
  SockAddr metrics{*IpAddr::parse("0.0.0.0"), 15020};
  SockAddr readiness{*IpAddr::parse("0.0.0.0"), 15021};
  uint16_t hbone_port = 15008;  // bound on each local workload IP (standalone mode)
};

struct Certificates {
  std::string root_cert;  // PEM file with one or more trusted roots
  // Directory holding <namespace>/<service-account>/{cert-chain.pem,key.pem},
  // the layout `warrenctl dev-ca` writes.
  std::string dir;
};

// Where the configuration and certificates come from when not from files:
// warren-controller's push server (DESIGN.md §6). Paths relative to the file.
struct ControllerConfig {
  std::string address;     // IP:port of the push server (15012)
  std::string token_file;  // bearer token (bootstrap token, or service account token)
  std::string ca_file;     // roots the controller's certificate must chain to
};

// How pods' traffic reaches this node proxy. kNone: standalone (SOCKS5 entry
// and HBONE on local workload IPs); kInPod: eBPF capture and listeners inside
// each enrolled pod's netns (DESIGN.md §5).
enum class CaptureMode { kNone, kInPod };
struct CaptureConfig {
  CaptureMode mode = CaptureMode::kNone;
  std::string cgroup = "/sys/fs/cgroup/unified";  // where the pods' processes live
  std::string pin_dir;                          // default /sys/fs/bpf/warren/<node>
  bool fast_path = true;                        // same-node direct path
  std::string cni_socket = "/var/run/warren/cni.sock";
  bool scan_proc = true;  // at start, find running pods' netns from /proc
};

inline constexpr const char* kDataplaneModeLabel = "warren.io/dataplane-mode";

// "NAME:port" with an RFC 1123 host name (the controller's address may be a
// Service name); nullopt when not. IP:port is SockAddr::parse's.
std::optional<std::pair<std::string, uint16_t>> parse_host_port(std::string_view s);
inline constexpr const char* kExcludeOutboundPorts = "warren.io/exclude-outbound-ports";

using WorkloadPtr = std::shared_ptr<const Workload>;
using ServicePtr = std::shared_ptr<const Service>;

struct Snapshot {
  std::string node_name;
  IpAddr node_address;
  std::string trust_domain = "cluster.local";
  std::string root_namespace = "istio-system";
  Listeners listeners;
  Certificates certificates;
  ControllerConfig controller;
  // Shared, immutable: consecutive snapshots built from the controller's
  // deltas share every workload and service that did not change.
  std::vector<WorkloadPtr> workloads;
  std::vector<ServicePtr> services;
  std::vector<AuthorizationPolicy> policies;
  std::vector<PeerAuthentication> peer_authentications;
  CaptureConfig capture;
  // Namespace labels (enrollment: warren.io/dataplane-mode=enabled).
  std::map<std::string, std::map<std::string, std::string>> namespaces;
  uint64_t version = 0;  // monotonically increasing per accepted load

  // Indexes, built once by the parser.
  const Workload* workload_by_ip(const IpAddr& ip) const;
  const Workload* workload_by_uid(const std::string& uid) const;
  // A service VIP and port; nullptr when none.
  const Service* service_by_vip(const IpAddr& ip) const;
  const Service* service_by_hostname(const std::string& host) const;
  // Workloads of this node (node == node_name).
  std::vector<const Workload*> local_workloads() const;
  // Whether capture applies to a workload: its namespace is labelled
  // warren.io/dataplane-mode=enabled (or the pod itself is), the pod does not
  // opt out with warren.io/dataplane-mode=none, and it speaks HBONE.
  bool enrolled(const Workload& w) const;

  // Workload indexes (positions in `workloads`). by_uid keys view the uids of
  // `owners`, the workloads they were built from, which the index keeps
  // alive: consecutive snapshots whose workloads differ only in content (same
  // uids and IPs, same order) share one index.
  struct WorkloadIndex {
    std::unordered_map<IpAddr, size_t> by_ip;
    std::unordered_map<std::string_view, size_t> by_uid;
    std::vector<WorkloadPtr> owners;
  };
  std::shared_ptr<const WorkloadIndex> windex_ = std::make_shared<const WorkloadIndex>();
  // Service indexes (positions in `services`), shared like the workload one
  // when no service changed.
  struct ServiceIndex {
    std::unordered_map<IpAddr, size_t> by_vip;
    std::unordered_map<std::string, size_t> by_host;
  };
  std::shared_ptr<const ServiceIndex> sindex_ = std::make_shared<const ServiceIndex>();
};

using SnapshotPtr = std::shared_ptr<const Snapshot>;

// Controller mode: the configuration arrives as resources, one id each
// ("workload/<uid>", "service/<ns>/<name>", "policy/<ns>/<name>",
// "peerauth/<ns>/<name>", "namespace/<name>"; controller/model.h). The builder
// parses each resource once, keeps it, and assembles snapshots that share
// every unchanged workload and service with the previous one, so applying a
// one-pod delta to 100,000 workloads costs an index rebuild, not a re-parse.
class SnapshotBuilder {
 public:
  // `bootstrap`: the node's own file (node, listeners, capture, trust domain).
  explicit SnapshotBuilder(const Snapshot& bootstrap);
  // Parses and stages one resource. On error (the message lists
  // "<pointer>: <reason>" lines relative to the resource) the previously
  // staged version, if any, stays. Ids of unknown kinds are refused.
  Result<void> upsert(const std::string& id, const nlohmann::json& body);
  void remove(const std::string& id);
  void clear();
  size_t size() const;
  // Everything staged. A resource that conflicts with another (an IP or uid
  // already taken, a VIP or hostname already used, an endpoint naming an
  // unknown workload) is left out of this snapshot and reported by id.
  SnapshotPtr build(std::map<std::string, std::string>* rejected) const;

 private:
  Snapshot base_;
  std::map<std::string, WorkloadPtr> workloads_;
  std::map<std::string, ServicePtr> services_;
  std::map<std::string, std::shared_ptr<const AuthorizationPolicy>> policies_;
  std::map<std::string, std::shared_ptr<const PeerAuthentication>> peer_auths_;
  std::map<std::string, std::map<std::string, std::string>> namespaces_;  // id -> labels
  // Since the last build (it may skip re-checking unchanged services'
  // endpoints when no workload uid came or went).
  mutable bool uids_changed_ = true;
  mutable bool last_workload_rejected_ = false;
  mutable std::set<std::string> changed_services_, last_bad_services_;
  // A workload added, removed, or with a new uid or IPs since the last build:
  // the workload index is rebuilt; else the last one is shared and only the
  // changed workloads are swapped in (changed_workloads_, by id).
  mutable bool keys_changed_ = true;
  mutable std::set<std::string> changed_workloads_;
  mutable SnapshotPtr last_;
  mutable size_t patched_since_full_ = 0;
};

// Parses and validates. On failure the Error's message lists every problem,
// one per line, as "<json pointer>: <reason>" (e.g. "/workloads/3/ips/0: "10.0.0.x"
// is not an IP address").
Result<SnapshotPtr> parse(const nlohmann::json& doc);
// Reads a file (JSON, or YAML when it ends in .yaml/.yml) and parses it; errors
// are prefixed with the file name.
Result<SnapshotPtr> load_file(const std::string& path);

// Serialises back to the same JSON shape (for /config_dump).
nlohmann::json to_json(const Snapshot& s);

// YAML (yaml-cpp) to JSON: plain scalars become null/bool/number when they
// read as such (YAML 1.2 core schema), quoted scalars stay strings. Errors
// (syntax, nesting deeper than 64) come back as Errc::kInvalidArgument.
Result<nlohmann::json> yaml_to_json(const std::string& text);

const char* to_string(PeerAuthMode m);
const char* to_string(PolicyAction a);

}  // namespace warren::config
