// L4 authorization and PeerAuthentication, Istio's semantics as ztunnel
// enforces them (REFERENCE.md "L4 authorization semantics").
//
// What the node proxy cannot see:
// - CUSTOM policies (ext-authz) are not evaluated at L4: the waypoint does it.
// - Policies bound with targetRef(s) belong to a waypoint and are skipped.
// - HTTP-only fields (hosts, methods, paths, requestPrincipals, remoteIpBlocks,
//   request.* conditions, ...) make an ALLOW rule match nothing (fail closed)
//   and are dropped from a DENY rule, which is then enforced on what remains
//   (stricter; never the istio#61126 "DENY not enforced" bug).
#include "policy.h"

#include <string_view>

namespace warren::policy {
namespace {

using config::AuthorizationPolicy;
using config::PolicyAction;
using config::Snapshot;
using config::Workload;

// Facts derived from the peer's SPIFFE ID, empty when plaintext or malformed.
struct Peer {
  bool authenticated = false;
  std::string principal;  // identity without "spiffe://"
  std::string ns, sa;
};

Peer peer_of(const ConnFacts& f) {
  Peer p;
  if (!f.src_identity) return p;
  std::string_view id = *f.src_identity;
  constexpr std::string_view kScheme = "spiffe://";
  if (id.substr(0, kScheme.size()) != kScheme) return p;
  p.authenticated = true;
  p.principal = std::string(id.substr(kScheme.size()));
  // <td>/ns/<ns>/sa/<sa>
  std::string_view rest = p.principal;
  auto ns_at = rest.find("/ns/");
  if (ns_at != std::string_view::npos) {
    rest = rest.substr(ns_at + 4);
    auto sa_at = rest.find("/sa/");
    if (sa_at != std::string_view::npos) {
      p.ns = std::string(rest.substr(0, sa_at));
      p.sa = std::string(rest.substr(sa_at + 4));
    }
  }
  return p;
}

// Istio string match: "*" any (non-empty), "prefix*", "*suffix", else exact.
bool str_match(std::string_view pattern, std::string_view v) {
  if (pattern == "*") return !v.empty();
  if (pattern.size() > 1 && pattern.back() == '*') {
    auto pre = pattern.substr(0, pattern.size() - 1);
    return v.substr(0, pre.size()) == pre;
  }
  if (pattern.size() > 1 && pattern.front() == '*') {
    auto suf = pattern.substr(1);
    return v.size() >= suf.size() && v.substr(v.size() - suf.size()) == suf;
  }
  return pattern == v;
}

bool any_match(const std::vector<std::string>& patterns, std::string_view v) {
  for (const auto& p : patterns)
    if (str_match(p, v)) return true;
  return false;
}

// values: must be present and match one; not_values: must not match any. A
// missing value (plaintext peer) never matches `values` and always passes
// `not_values`.
bool field_ok(const config::StringMatch& m, bool present, std::string_view v) {
  if (!m.values.empty() && !(present && any_match(m.values, v))) return false;
  if (!m.not_values.empty() && present && any_match(m.not_values, v)) return false;
  return true;
}

bool in_cidrs(const std::vector<Cidr>& blocks, const IpAddr& ip) {
  for (const auto& c : blocks)
    if (c.contains(ip)) return true;
  return false;
}

bool source_ok(const config::Source& s, const Peer& peer, const ConnFacts& f) {
  if (!field_ok(s.principals, peer.authenticated, peer.principal)) return false;
  bool has_ns = peer.authenticated && !peer.ns.empty();
  if (!field_ok(s.namespaces, has_ns, peer.ns)) return false;
  if (!field_ok(s.service_accounts, has_ns, peer.ns + "/" + peer.sa)) return false;
  if (!s.ip_blocks.empty() && !in_cidrs(s.ip_blocks, f.src_ip)) return false;
  if (!s.not_ip_blocks.empty() && in_cidrs(s.not_ip_blocks, f.src_ip)) return false;
  return true;
}

bool has_port(const std::vector<uint16_t>& ports, uint16_t p) {
  for (auto x : ports)
    if (x == p) return true;
  return false;
}

bool operation_ok(const config::Operation& o, const ConnFacts& f) {
  if (!o.ports.empty() && !has_port(o.ports, f.dst_port)) return false;
  if (!o.not_ports.empty() && has_port(o.not_ports, f.dst_port)) return false;
  return true;
}

bool cidr_strings_contain(const std::vector<std::string>& vals, const IpAddr& ip) {
  for (const auto& v : vals)
    if (auto c = Cidr::parse(v); c && c->contains(ip)) return true;
  return false;
}

// One L4 `when` condition (l7_only ones never get here).
bool condition_ok(const config::Condition& c, const Peer& peer, const ConnFacts& f) {
  auto strings = [&](bool present, const std::string& v) {
    return field_ok(config::StringMatch{c.values, c.not_values}, present, v);
  };
  if (c.key == "source.ip" || c.key == "destination.ip") {
    const IpAddr& ip = c.key == "source.ip" ? f.src_ip : f.dst_ip;
    if (!c.values.empty() && !cidr_strings_contain(c.values, ip)) return false;
    if (!c.not_values.empty() && cidr_strings_contain(c.not_values, ip)) return false;
    return true;
  }
  if (c.key == "destination.port") return strings(true, std::to_string(f.dst_port));
  if (c.key == "source.principal") return strings(peer.authenticated, peer.principal);
  bool has_ns = peer.authenticated && !peer.ns.empty();
  if (c.key == "source.namespace") return strings(has_ns, peer.ns);
  if (c.key == "source.serviceAccount") return strings(has_ns, peer.ns + "/" + peer.sa);
  return false;  // unreachable for a validated snapshot; fail closed
}

bool rule_has_l7(const config::Rule& r) {
  for (const auto& s : r.from)
    if (s.has_l7_only) return true;
  for (const auto& o : r.to)
    if (o.has_l7_only) return true;
  for (const auto& c : r.when)
    if (c.l7_only) return true;
  return false;
}

bool rule_matches(const config::Rule& r, PolicyAction action, const Peer& peer, const ConnFacts& f) {
  if (action != PolicyAction::kDeny && rule_has_l7(r)) return false;  // fail closed
  // In a DENY rule, L7-only fields are ignored: a source or operation is
  // matched on its L4 fields alone (all-L7 ones thus match everything).
  if (!r.from.empty()) {
    bool any = false;
    for (const auto& s : r.from) any = any || source_ok(s, peer, f);
    if (!any) return false;
  }
  if (!r.to.empty()) {
    bool any = false;
    for (const auto& o : r.to) any = any || operation_ok(o, f);
    if (!any) return false;
  }
  for (const auto& c : r.when)
    if (!c.l7_only && !condition_ok(c, peer, f)) return false;
  return true;
}

bool policy_matches(const AuthorizationPolicy& p, const Peer& peer, const ConnFacts& f) {
  for (const auto& r : p.rules)
    if (rule_matches(r, p.action, peer, f)) return true;
  return false;
}

bool selects(const std::map<std::string, std::string>& selector, const Workload& dst) {
  for (const auto& [k, v] : selector) {
    auto it = dst.labels().find(k);
    if (it == dst.labels().end() || it->second != v) return false;
  }
  return true;
}

bool applies(const Snapshot& snap, const AuthorizationPolicy& p, const Workload& dst) {
  if (p.waypoint_only) return false;
  if (p.namespace_ != dst.namespace_ && p.namespace_ != snap.root_namespace) return false;
  return !p.has_selector || selects(p.selector, dst);
}

std::string id_of(const AuthorizationPolicy& p) { return p.namespace_ + "/" + p.name; }

}  // namespace

Decision authorize(const Snapshot& snap, const Workload& dst, const ConnFacts& facts) {
  Peer peer = peer_of(facts);
  // AUDIT only logs, CUSTOM is the waypoint's (ext-authz cannot run at L4),
  // dry-run only logs: none of them changes the decision.
  auto enforced = [&](const AuthorizationPolicy& p, PolicyAction a) {
    return p.action == a && !p.dry_run && applies(snap, p, dst);
  };
  for (const auto& pp : snap.policies) {
    const AuthorizationPolicy& p = *pp;
    if (enforced(p, PolicyAction::kDeny) && policy_matches(p, peer, facts)) return {false, id_of(p)};
  }
  bool any_allow = false;
  for (const auto& pp : snap.policies) {
    const AuthorizationPolicy& p = *pp;
    if (!enforced(p, PolicyAction::kAllow)) continue;
    any_allow = true;
    if (policy_matches(p, peer, facts)) return {true, id_of(p), true};
  }
  if (!any_allow) return {true, "no ALLOW policy applies"};
  return {false, "no ALLOW policy matched"};
}

config::PeerAuthMode peer_auth_mode(const Snapshot& snap, const Workload& dst, uint16_t port) {
  using config::PeerAuthMode;
  const config::PeerAuthentication *mesh = nullptr, *ns = nullptr, *wl = nullptr;
  // Istio takes the oldest when several compete at one level; config order here.
  for (const auto& pa : snap.peer_authentications) {
    if (pa.has_selector) {
      if (pa.namespace_ == dst.namespace_ && selects(pa.selector, dst) && !wl) wl = &pa;
    } else if (pa.namespace_ == dst.namespace_ && !ns) {
      ns = &pa;
    } else if (pa.namespace_ == snap.root_namespace && !mesh) {
      mesh = &pa;
    }
  }
  PeerAuthMode mode = PeerAuthMode::kPermissive;
  for (const auto* pa : {mesh, ns, wl})
    if (pa && pa->mode != PeerAuthMode::kUnset) mode = pa->mode;
  if (wl) {
    auto it = wl->port_modes.find(port);
    if (it != wl->port_modes.end() && it->second != PeerAuthMode::kUnset) mode = it->second;
  }
  return mode;
}

Decision check_inbound(const Snapshot& snap, const Workload& dst, const ConnFacts& facts) {
  bool plaintext = !facts.src_identity || facts.src_identity->empty();
  if (plaintext && peer_auth_mode(snap, dst, facts.dst_port) == config::PeerAuthMode::kStrict)
    return {false, "STRICT mTLS: plaintext refused"};
  Decision d = authorize(snap, dst, facts);
  if (!d.allow || dst.waypoint.empty() || d.explicit_allow) return d;
  if (!plaintext)
    for (const auto* wp : snap.waypoint_pods(dst.namespace_, dst.waypoint))
      if (wp->identity == *facts.src_identity) return d;
  return {false, "workload is behind waypoint " + dst.namespace_.str() + "/" +
                     dst.waypoint.str() + ": only the waypoint may connect"};
}

}  // namespace warren::policy
