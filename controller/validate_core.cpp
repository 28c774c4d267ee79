// Checks of the core Kubernetes kinds, on the fields the controller reads.
#include "validate_util.h"

#include "warren/config.h"
#include "warren/ip.h"

namespace warren::controller::detail {

namespace {

void ip_string(Checker& c, const json& v, const std::string& path) {
  if (!v.is_string() || !IpAddr::parse(v.get_ref<const std::string&>()))
    c.err(path, show(v) + " is not an IP address");
}

void protocol(Checker& c, const json& parent, const std::string& path) {
  c.enumeration(parent, path, "protocol", {"TCP", "UDP", "SCTP"});
}

// "80, 443,8080" → each a port.
void port_list_annotation(Checker& c, const json& annotations, const char* key) {
  const json* v = Checker::get(annotations, key);
  if (!v || !v->is_string()) return;
  std::string_view rest = v->get_ref<const std::string&>();
  std::string path = field_path("metadata.annotations", key);
  while (!rest.empty()) {
    auto comma = rest.find(',');
    std::string tok(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    tok.erase(0, tok.find_first_not_of(' '));
    tok.erase(tok.find_last_not_of(' ') + 1);
    uint32_t n = 0;
    bool ok = !tok.empty() && tok.size() <= 5 && tok.find_first_not_of("0123456789") == std::string::npos;
    if (ok) n = std::stoul(tok);
    if (!ok || n == 0 || n > 65535) c.err(path, "\"" + tok + "\" is not a port");
  }
}

}  // namespace

void check_pod(Checker& c, const json& obj) {
  const json& md = obj.at("metadata");
  c.string(md, "metadata", "uid", true);
  if (const json* ann = Checker::get(md, "annotations")) port_list_annotation(c, *ann, config::kExcludeOutboundPorts);
  if (const json* labels = Checker::get(md, "labels")) {
    if (const json* wp = Checker::get(*labels, "warren.io/use-waypoint");
        wp && wp->is_string() && *wp != "none" && !dns_subdomain(wp->get_ref<const std::string&>()))
      c.err(field_path("metadata.labels", "warren.io/use-waypoint"),
            show(*wp) + " is not a Gateway name (or \"none\")");
  }
  const json* spec = c.object(obj, "", "spec");
  if (spec) {
    for (const char* f : {"serviceAccountName", "serviceAccount"}) {
      auto sa = c.string(*spec, "spec", f);
      if (sa && !sa->empty() && !dns_subdomain(*sa))
        c.err(field_path("spec", f), "\"" + *sa + "\" is not a valid service account name");
    }
    auto node = c.string(*spec, "spec", "nodeName");
    if (node && !node->empty() && !dns_subdomain(*node))
      c.err("spec.nodeName", "\"" + *node + "\" is not a valid node name");
    c.boolean(*spec, "spec", "hostNetwork");
    for (const char* list : {"containers", "initContainers"}) {
      c.each(*spec, "spec", list, [&](const json& ct, const std::string& cp, size_t) {
        if (!ct.is_object()) return c.err(cp, "must be an object, got " + show(ct));
        c.each(ct, cp, "ports", [&](const json& p, const std::string& pp, size_t) {
          if (!p.is_object()) return c.err(pp, "must be an object, got " + show(p));
          c.port(p, pp, "containerPort", true);
          auto name = c.string(p, pp, "name");
          if (name && !port_name(*name)) c.err(field_path(pp, "name"), "\"" + *name + "\" is not a valid port name");
          protocol(c, p, pp);
        });
      });
    }
  }
  const json* status = c.object(obj, "", "status");
  if (!status) return;
  c.enumeration(*status, "status", "phase", {"Pending", "Running", "Succeeded", "Failed", "Unknown"});
  c.ip(*status, "status", "podIP");
  c.each(*status, "status", "podIPs", [&](const json& e, const std::string& p, size_t) {
    if (!e.is_object()) return c.err(p, "must be an object, got " + show(e));
    c.ip(e, p, "ip", true);
  });
}

void check_service(Checker& c, const json& obj) {
  const json* spec = c.object(obj, "", "spec", true);
  if (!spec) return;
  c.enumeration(*spec, "spec", "type", {"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"});
  if (const json* ip = Checker::get(*spec, "clusterIP"); ip && !(ip->is_string() && (*ip == "None" || *ip == "")))
    ip_string(c, *ip, "spec.clusterIP");
  c.each(*spec, "spec", "clusterIPs", [&](const json& e, const std::string& p, size_t) {
    if (!(e.is_string() && e == "None")) ip_string(c, e, p);
  });
  c.each(*spec, "spec", "ports", [&](const json& p, const std::string& pp, size_t) {
    if (!p.is_object()) return c.err(pp, "must be an object, got " + show(p));
    c.port(p, pp, "port", true);
    if (const json* tp = Checker::get(p, "targetPort")) {
      if (tp->is_string()) {
        if (!port_name(tp->get_ref<const std::string&>()))
          c.err(field_path(pp, "targetPort"), show(*tp) + " is not a port or a port name");
      } else {
        c.port(p, pp, "targetPort");
      }
    }
    c.string(p, pp, "name");
    c.string(p, pp, "appProtocol");
    protocol(c, p, pp);
    c.integer(p, pp, "nodePort", 0, 65535);
  });
  c.string_map(*spec, "spec", "selector");
}

void check_endpoint_slice(Checker& c, const json& obj) {
  c.enumeration(obj, "", "addressType", {"IPv4", "IPv6", "FQDN"}, true);
  bool ips = Checker::get(obj, "addressType") && obj.at("addressType") != "FQDN";
  c.each(obj, "", "endpoints", [&](const json& e, const std::string& ep, size_t) {
    if (!e.is_object()) return c.err(ep, "must be an object, got " + show(e));
    if (!Checker::get(e, "addresses")) c.err(field_path(ep, "addresses"), "is required");
    c.each(e, ep, "addresses", [&](const json& a, const std::string& ap, size_t) {
      if (ips) ip_string(c, a, ap);
      else if (!a.is_string()) c.err(ap, "must be a string, got " + show(a));
    });
    if (const json* cond = c.object(e, ep, "conditions"))
      for (const char* f : {"ready", "serving", "terminating"}) c.boolean(*cond, field_path(ep, "conditions"), f);
    if (const json* ref = c.object(e, ep, "targetRef")) {
      std::string rp = field_path(ep, "targetRef");
      for (const char* f : {"kind", "name", "namespace", "uid"}) c.string(*ref, rp, f);
    }
    c.string(e, ep, "nodeName");
  });
  c.each(obj, "", "ports", [&](const json& p, const std::string& pp, size_t) {
    if (!p.is_object()) return c.err(pp, "must be an object, got " + show(p));
    c.port(p, pp, "port");
    c.string(p, pp, "name");
    protocol(c, p, pp);
  });
}

void check_node(Checker& c, const json& obj) {
  const json* status = c.object(obj, "", "status");
  if (!status) return;
  c.each(*status, "status", "addresses", [&](const json& a, const std::string& ap, size_t) {
    if (!a.is_object()) return c.err(ap, "must be an object, got " + show(a));
    auto type = c.string(a, ap, "type", true);
    if (type && (*type == "InternalIP" || *type == "ExternalIP")) c.ip(a, ap, "address", true);
    else c.string(a, ap, "address", true);
  });
}

}  // namespace warren::controller::detail
