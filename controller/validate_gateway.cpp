// Checks of the Gateway API kinds (gateway.networking.k8s.io): Gateway (the
// waypoint, DESIGN.md §2) and HTTPRoute.
#include <map>

#include "validate_util.h"

namespace warren::controller::detail {

void check_gateway(Checker& c, const json& obj) {
  const json* spec = c.object(obj, "", "spec", true);
  if (!spec) return;
  c.string(*spec, "spec", "gatewayClassName", true);
  const json* ls = Checker::get(*spec, "listeners");
  if (!ls || (ls->is_array() && ls->empty())) c.err("spec.listeners", "must list at least one listener");
  std::map<std::string, size_t> seen;
  c.each(*spec, "spec", "listeners", [&](const json& l, const std::string& lp, size_t i) {
    if (!l.is_object()) return c.err(lp, "must be an object, got " + show(l));
    auto name = c.string(l, lp, "name", true);
    if (name && !name->empty() && !dns_subdomain(*name))
      c.err(field_path(lp, "name"), "\"" + *name + "\" is not a valid listener name");
    else if (name && !name->empty() && !seen.emplace(*name, i).second)
      c.err(field_path(lp, "name"), "duplicate listener \"" + *name + "\"");
    c.port(l, lp, "port", true);
    c.string(l, lp, "protocol", true);
    c.string(l, lp, "hostname");
  });
  c.each(*spec, "spec", "addresses", [&](const json& a, const std::string& ap, size_t) {
    if (!a.is_object()) return c.err(ap, "must be an object, got " + show(a));
    c.string(a, ap, "type");
    c.string(a, ap, "value", true);
  });
  if (const json* ann = Checker::get(obj.at("metadata"), "annotations")) {
    const json* sa = Checker::get(*ann, "warren.io/for-service-account");
    if (sa && sa->is_string() && !dns_subdomain(sa->get_ref<const std::string&>()))
      c.err(field_path("metadata.annotations", "warren.io/for-service-account"),
            show(*sa) + " is not a valid service account name");
  }
}

namespace {

void name_value_matches(Checker& c, const json& m, const std::string& mp, const char* key) {
  c.each(m, mp, key, [&](const json& h, const std::string& hp, size_t) {
    if (!h.is_object()) return c.err(hp, "must be an object, got " + show(h));
    c.enumeration(h, hp, "type", {"Exact", "RegularExpression"});
    c.string(h, hp, "name", true);
    c.string(h, hp, "value", true);
  });
}

void backend_ref(Checker& c, const json& b, const std::string& bp, bool weighted) {
  if (!b.is_object()) return c.err(bp, "must be an object, got " + show(b));
  c.string(b, bp, "name", true);
  c.string(b, bp, "namespace");
  c.string(b, bp, "group");
  auto kind = c.string(b, bp, "kind");
  c.port(b, bp, "port", !kind || *kind == "Service");
  if (weighted) c.integer(b, bp, "weight", 0, 1000000);
}

}  // namespace

void check_http_route(Checker& c, const json& obj) {
  const json* spec = c.object(obj, "", "spec", true);
  if (!spec) return;
  c.each(*spec, "spec", "parentRefs", [&](const json& p, const std::string& pp, size_t) {
    if (!p.is_object()) return c.err(pp, "must be an object, got " + show(p));
    c.string(p, pp, "name", true);
    for (const char* f : {"namespace", "kind", "group", "sectionName"}) c.string(p, pp, f);
    c.port(p, pp, "port");
  });
  c.strings(*spec, "spec", "hostnames");
  c.each(*spec, "spec", "rules", [&](const json& r, const std::string& rp, size_t) {
    if (!r.is_object()) return c.err(rp, "must be an object, got " + show(r));
    c.string(r, rp, "name");
    c.each(r, rp, "matches", [&](const json& m, const std::string& mp, size_t) {
      if (!m.is_object()) return c.err(mp, "must be an object, got " + show(m));
      if (const json* path = c.object(m, mp, "path")) {
        std::string pp = field_path(mp, "path");
        c.enumeration(*path, pp, "type", {"Exact", "PathPrefix", "RegularExpression"});
        auto v = c.string(*path, pp, "value");
        const json* t = Checker::get(*path, "type");
        if (v && (!t || *t != "RegularExpression") && (v->empty() || (*v)[0] != '/'))
          c.err(field_path(pp, "value"), "\"" + *v + "\" must start with /");
      }
      name_value_matches(c, m, mp, "headers");
      name_value_matches(c, m, mp, "queryParams");
      c.enumeration(m, mp, "method", {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"});
    });
    c.each(r, rp, "filters", [&](const json& f, const std::string& fp, size_t) {
      if (!f.is_object()) return c.err(fp, "must be an object, got " + show(f));
      c.enumeration(f, fp, "type",
                    {"RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "RequestRedirect",
                     "URLRewrite", "ExtensionRef"},
                    true);
      if (const json* m = c.object(f, fp, "requestMirror"))
        if (const json* b = c.object(*m, field_path(fp, "requestMirror"), "backendRef", true))
          backend_ref(c, *b, field_path(field_path(fp, "requestMirror"), "backendRef"), false);
      if (const json* rd = c.object(f, fp, "requestRedirect")) {
        c.integer(*rd, field_path(fp, "requestRedirect"), "statusCode", 300, 399);
        c.port(*rd, field_path(fp, "requestRedirect"), "port");
      }
    });
    c.each(r, rp, "backendRefs", [&](const json& b, const std::string& bp, size_t) { backend_ref(c, b, bp, true); });
    if (const json* t = c.object(r, rp, "timeouts")) {
      c.duration_field(*t, field_path(rp, "timeouts"), "request");
      c.duration_field(*t, field_path(rp, "timeouts"), "backendRequest");
    }
  });
}

}  // namespace warren::controller::detail
