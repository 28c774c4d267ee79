// The node's view of the mesh: an immutable snapshot built from a JSON document
// (a file in standalone mode, the controller's push later). Validation collects
// every error as "<json-pointer>: <reason>"; a snapshot is only built when there
// are none (STYLE.md §4).
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "warren/ip.h"
#include "warren/name.h"
#include "warren/text.h"
#include "warren/result.h"

namespace warren::config {

enum class Protocol : uint8_t { kHbone, kNone };  // NONE: not in the mesh, plain TCP
enum class PeerAuthMode { kUnset, kStrict, kPermissive, kDisable };
enum class PolicyAction { kAllow, kDeny, kAudit, kCustom };

// What only workloads of this node keep: selectors and enrollment look at
// local workloads alone, and in controller mode the labels and annotations of
// 100,000 others would be most of the node's memory.
struct WorkloadMeta {
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> annotations;
  // warren.io/exclude-outbound-ports: connects to these ports are not captured.
  std::vector<uint16_t> excluded_outbound_ports;
};

// A workload's addresses: one inline (almost every pod has one, or one per
// family), more in one heap block. Reads as a contiguous list.
class IpList {
 public:
  IpList() = default;
  IpList(std::initializer_list<IpAddr> l) { assign(l.begin(), l.size()); }
  IpList(const std::vector<IpAddr>& v) { assign(v.data(), v.size()); }  // NOLINT
  IpList(const IpList& o) { assign(o.begin(), o.size()); }
  IpList(IpList&& o) noexcept : heap_(o.heap_), one_(o.one_), n_(o.n_) {
    o.heap_ = nullptr;
    o.n_ = 0;
  }
  IpList& operator=(const IpList& o) {
    if (this != &o) assign(o.begin(), o.size());
    return *this;
  }
  IpList& operator=(IpList&& o) noexcept {
    std::swap(heap_, o.heap_);
    std::swap(one_, o.one_);
    std::swap(n_, o.n_);
    return *this;
  }
  ~IpList() { delete[] heap_; }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  const IpAddr* begin() const { return heap_ ? heap_ : &one_; }
  const IpAddr* end() const { return begin() + n_; }
  const IpAddr& operator[](size_t i) const { return begin()[i]; }
  void push_back(const IpAddr& ip) {
    std::vector<IpAddr> v(begin(), end());
    v.push_back(ip);
    assign(v.data(), v.size());
  }
  bool operator==(const IpList& o) const { return n_ == o.n_ && std::equal(begin(), end(), o.begin()); }
  bool operator!=(const IpList& o) const { return !(*this == o); }

 private:
  void assign(const IpAddr* p, size_t n) {
    IpAddr* h = n > 1 ? new IpAddr[n] : nullptr;
    if (h) std::copy(p, p + n, h);
    else if (n == 1) one_ = *p;
    delete[] heap_;
    heap_ = h;
    n_ = static_cast<uint8_t>(n);
  }
  IpAddr* heap_ = nullptr;  // n_ > 1
  IpAddr one_;              // n_ == 1
  uint8_t n_ = 0;
};

// Kept compact (a node holds every workload of the mesh): the values many
// workloads share are interned Names; labels and annotations live in `meta`.
struct Workload {
  Text uid;
  Text name;
  Name namespace_;
  Name service_account = "default";
  Name node;
  // The waypoint (a Gateway of class warren-waypoint in this workload's
  // namespace) traffic to this workload goes through; empty: none.
  Name waypoint;
  // Set on a waypoint's own pod: the Gateway it implements. Such a pod
  // serves HBONE itself (never captured, no node listener).
  Name gateway;
  // spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>
  Name identity;
  // Istio's canonical service and revision (telemetry labels), from
  // service.istio.io/canonical-name, app.kubernetes.io/name or app (else the
  // name), and service.istio.io/canonical-revision, app.kubernetes.io/version
  // or version (else "latest"). Kept when labels are not: in controller mode
  // a workload on another node keeps no meta.
  Name canonical_name, canonical_revision;
  IpList ips;
  Protocol protocol = Protocol::kHbone;
  // Null: no labels, annotations or excluded ports (every workload of
  // another node). Copied with the workload (the copy constructor in
  // config.cpp lists every field: keep it in step).
  std::unique_ptr<WorkloadMeta> meta;

  Workload() = default;
  Workload(const Workload& o);
  Workload(Workload&&) noexcept = default;
  Workload& operator=(const Workload& o);
  Workload& operator=(Workload&&) noexcept = default;

  const std::map<std::string, std::string>& labels() const;
  const std::map<std::string, std::string>& annotations() const;
  const std::vector<uint16_t>& excluded_outbound_ports() const;
};

// Strings in one block (a service's endpoint uids: a node holds every
// service of the mesh). Reads as a list of string_views.
class StringList {
 public:
  StringList() = default;
  StringList(std::initializer_list<std::string_view> l) {
    for (auto s : l) push_back(s);
  }
  void push_back(std::string_view s) {
    data_.append(s);
    ends_.push_back(static_cast<uint32_t>(data_.size()));
  }
  void reserve(size_t n, size_t bytes) {
    ends_.reserve(n);
    data_.reserve(bytes);
  }
  size_t size() const { return ends_.size(); }
  bool empty() const { return ends_.empty(); }
  std::string_view operator[](size_t i) const {
    uint32_t b = i ? ends_[i - 1] : 0;
    return std::string_view(data_).substr(b, ends_[i] - b);
  }
  class iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = std::string_view;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = std::string_view;
    iterator() = default;
    iterator(const StringList* l, size_t i) : l_(l), i_(i) {}
    std::string_view operator*() const { return (*l_)[i_]; }
    iterator& operator++() {
      ++i_;
      return *this;
    }
    bool operator==(const iterator& o) const { return i_ == o.i_; }
    bool operator!=(const iterator& o) const { return i_ != o.i_; }

   private:
    const StringList* l_ = nullptr;
    size_t i_ = 0;
  };
  iterator begin() const { return {this, 0}; }
  iterator end() const { return {this, size()}; }
  bool operator==(const StringList& o) const { return ends_ == o.ends_ && data_ == o.data_; }
  bool operator==(const std::vector<std::string>& v) const {
    if (v.size() != size()) return false;
    for (size_t i = 0; i < v.size(); ++i)
      if (v[i] != (*this)[i]) return false;
    return true;
  }

 private:
  std::string data_;
  std::vector<uint32_t> ends_;
};

struct ServicePort {
  uint16_t port = 0;
  uint16_t target_port = 0;  // 0: same as port
  std::string name;
  // The Service port's appProtocol as written ("" when unset): with the name,
  // what the port speaks (Istio's protocol selection; the waypoint picks the
  // upstream HTTP version from it).
  std::string app_protocol;
};

struct Service {
  std::string name;
  std::string namespace_;
  std::string hostname;  // <name>.<ns>.svc.cluster.local when not given
  std::vector<IpAddr> vips;
  std::vector<ServicePort> ports;
  StringList endpoints;  // workload uids
  std::string waypoint;  // Gateway (same namespace) that fronts the service; empty: none
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
  // The object as given, as compact JSON text (a parsed tree is several
  // times larger), for to_json (/config_dump).
  std::string raw;
};

struct PeerAuthentication {
  std::string name;
  std::string namespace_;
  std::map<std::string, std::string> selector;
  bool has_selector = false;
  PeerAuthMode mode = PeerAuthMode::kUnset;
  std::map<uint16_t, PeerAuthMode> port_modes;  // portLevelMtls
  // The object as given, as compact JSON text (a parsed tree is several
  // times larger), for to_json (/config_dump).
  std::string raw;
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
  std::vector<std::shared_ptr<const AuthorizationPolicy>> policies;  // shared between snapshots
  std::vector<PeerAuthentication> peer_authentications;
  CaptureConfig capture;
  // Namespace labels (enrollment: warren.io/dataplane-mode=enabled).
  std::map<std::string, std::map<std::string, std::string>> namespaces;
  uint64_t version = 0;  // monotonically increasing per accepted load

  // Indexes, built once by the parser.
  const Workload* workload_by_ip(const IpAddr& ip) const;
  const Workload* workload_by_uid(std::string_view uid) const;
  // A service VIP and port; nullptr when none.
  const Service* service_by_vip(const IpAddr& ip) const;
  const Service* service_by_hostname(const std::string& host) const;
  // The pods of waypoint `gateway` in namespace `ns`.
  std::vector<const Workload*> waypoint_pods(std::string_view ns, std::string_view gateway) const;
  // Workloads of this node (node == node_name).
  std::vector<const Workload*> local_workloads() const;
  // Whether capture applies to a workload: its namespace is labelled
  // warren.io/dataplane-mode=enabled (or the pod itself is), the pod does not
  // opt out with warren.io/dataplane-mode=none, and it speaks HBONE.
  bool enrolled(const Workload& w) const;

  // Workload indexes, compact (a node holds every workload of the mesh):
  // positions in `workloads`, sorted by uid and by address, searched by
  // bisection. Consecutive snapshots whose workloads differ only in content
  // (same uids and IPs at the same positions) share one index.
  struct WorkloadIndex {
    std::vector<uint32_t> by_uid;                      // empty uids left out
    std::vector<std::pair<uint32_t, uint32_t>> by_v4;  // (address, host order; position)
    std::vector<std::pair<IpAddr, uint32_t>> by_v6;
    std::vector<uint32_t> waypoints;  // workloads with a gateway (waypoint pods)
  };
  std::shared_ptr<const WorkloadIndex> windex_ = std::make_shared<const WorkloadIndex>();
  // Service indexes (positions in `services`), shared like the workload one
  // when no service changed.
  struct ServiceIndex {
    std::unordered_map<IpAddr, size_t> by_vip;
    std::unordered_map<std::string, size_t> by_host;
  };
  std::shared_ptr<const ServiceIndex> sindex_ = std::make_shared<const ServiceIndex>();
  // Builds windex_ from `workloads` (uids and IPs assumed unique);
  // `uid_sorted`: workloads are in uid order already (the builder's), so the
  // uid index needs no sort.
  void index_workloads(bool uid_sorted = false);
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
  // Keep every workload's labels and annotations, not only this node's (a
  // waypoint selects subsets and policies over the whole mesh). Before the
  // first upsert.
  void keep_all_meta() { keep_all_meta_ = true; }
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
  // Merges pending_ into staged_; sets what the build must redo.
  void merge_pending() const;

  Snapshot base_;
  // Workloads by uid (the id is "workload/<uid>"), as of the last build, and
  // what changed since (null: removed). One pointer per workload: a node
  // holds every workload of the mesh.
  mutable std::vector<WorkloadPtr> staged_;
  struct PendingWorkload {
    WorkloadPtr w;        // null: remove
    std::string removed;  // the uid, for a remove
  };
  mutable std::vector<PendingWorkload> pending_;
  std::map<std::string, ServicePtr> services_;
  std::map<std::string, std::shared_ptr<const AuthorizationPolicy>> policies_;
  std::map<std::string, std::shared_ptr<const PeerAuthentication>> peer_auths_;
  std::map<std::string, std::map<std::string, std::string>> namespaces_;  // id -> labels
  // Since the last build. A workload uid that came or went makes services'
  // endpoints be checked again (a removed one: only against the removed
  // uids); a workload added, removed or with new IPs rebuilds the workload
  // index, else the last one is shared.
  mutable bool keys_changed_ = true;
  mutable bool check_all_ = true;
  mutable std::vector<std::string> uids_removed_;
  mutable bool last_workload_rejected_ = false;
  mutable std::set<std::string> changed_services_, last_bad_services_;
  mutable SnapshotPtr last_;
  bool keep_all_meta_ = false;
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
