// Validation entry point: type and object metadata, dispatch per kind, and the
// message format. The per-kind checks live in validate_core.cpp (Kubernetes
// kinds), validate_istio.cpp and validate_gateway.cpp.
#include "validate.h"

#include <map>

#include "validate_util.h"

namespace warren::controller {

using nlohmann::json;
using detail::Checker;

namespace {

bool plain_identifier(std::string_view s) {
  if (s.empty() || (s[0] >= '0' && s[0] <= '9') || s[0] == '-') return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
      return false;
  return true;
}

const std::map<std::string, std::vector<std::string>, std::less<>>& versions() {
  static const std::vector<std::string> core = {"v1"};
  static const std::vector<std::string> security = {"security.istio.io/v1", "security.istio.io/v1beta1"};
  static const std::vector<std::string> networking = {"networking.istio.io/v1", "networking.istio.io/v1beta1",
                                                      "networking.istio.io/v1alpha3"};
  static const std::vector<std::string> gateway = {"gateway.networking.k8s.io/v1",
                                                   "gateway.networking.k8s.io/v1beta1"};
  static const std::map<std::string, std::vector<std::string>, std::less<>> m = {
      {"Namespace", core},
      {"Pod", core},
      {"Service", core},
      {"ServiceAccount", core},
      {"Node", core},
      {"EndpointSlice", {"discovery.k8s.io/v1"}},
      {"AuthorizationPolicy", security},
      {"PeerAuthentication", security},
      {"RequestAuthentication", security},
      {"VirtualService", networking},
      {"DestinationRule", networking},
      {"Gateway", gateway},
      {"HTTPRoute", gateway},
  };
  return m;
}

// Names: Namespace a DNS label, Service a DNS-1035 label (starts with a
// letter), everything else a DNS subdomain.
void check_name(Checker& c, std::string_view kind, const std::string& name) {
  bool ok = true;
  if (kind == "Namespace") ok = detail::dns_label(name);
  else if (kind == "Service") ok = detail::dns_label(name) && name[0] >= 'a' && name[0] <= 'z';
  else ok = detail::dns_subdomain(name);
  if (!ok)
    c.err("metadata.name", "\"" + name + "\" is not a valid " + std::string(kind) + " name");
}

void check_meta(Checker& c, const json& obj, std::string_view kind) {
  if (const json* av = Checker::get(obj, "apiVersion")) {
    const auto& want = api_versions(kind);
    bool ok = false;
    for (const auto& v : want) ok = ok || (av->is_string() && *av == v);
    if (!ok) {
      std::string all;
      for (const auto& v : want) all += (all.empty() ? "" : ", ") + v;
      c.err("apiVersion", detail::show(*av) + " is not an apiVersion of " + std::string(kind) + " (" + all + ")");
    }
  }
  const json* md = c.object(obj, "", "metadata", true);
  if (!md) return;
  if (auto name = c.string(*md, "metadata", "name", true); name && !name->empty())
    check_name(c, kind, *name);
  if (!is_cluster_scoped(kind)) {
    auto ns = c.string(*md, "metadata", "namespace", true);
    if (ns && !ns->empty() && !detail::dns_label(*ns))
      c.err("metadata.namespace", "\"" + *ns + "\" is not a valid namespace name");
  }
  c.string(*md, "metadata", "uid");
  c.string_map(*md, "metadata", "labels");
  c.string_map(*md, "metadata", "annotations");
}

}  // namespace

bool is_known_kind(std::string_view kind) { return versions().count(kind) > 0; }

bool is_cluster_scoped(std::string_view kind) { return kind == "Namespace" || kind == "Node"; }

const std::vector<std::string>& api_versions(std::string_view kind) {
  static const std::vector<std::string> none;
  auto it = versions().find(kind);
  return it == versions().end() ? none : it->second;
}

std::string field_path(const std::string& path, std::string_view key) {
  if (plain_identifier(key)) return path.empty() ? std::string(key) : path + "." + std::string(key);
  return path + "[" + json(std::string(key)).dump(-1, ' ', false, json::error_handler_t::replace) + "]";
}

std::string index_path(const std::string& path, size_t i) { return path + "[" + std::to_string(i) + "]"; }

std::string pointer_to_path(const json& obj, std::string_view pointer) {
  std::string out;
  const json* cur = &obj;
  size_t pos = pointer.empty() || pointer[0] != '/' ? 0 : 1;
  if (pointer.empty()) return out;
  while (pos <= pointer.size()) {
    size_t slash = pointer.find('/', pos);
    std::string_view raw = pointer.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos);
    std::string tok;
    for (size_t i = 0; i < raw.size(); i++) {
      if (raw[i] == '~' && i + 1 < raw.size()) {
        tok += raw[i + 1] == '1' ? '/' : '~';
        i++;
      } else {
        tok += raw[i];
      }
    }
    bool numeric = !tok.empty() && tok.find_first_not_of("0123456789") == std::string::npos;
    if (cur && cur->is_array() && numeric) {
      size_t i = std::stoul(tok);
      out = index_path(out, i);
      cur = i < cur->size() ? &(*cur)[i] : nullptr;
    } else if (cur && cur->is_object()) {
      out = field_path(out, tok);
      auto it = cur->find(tok);
      cur = it == cur->end() ? nullptr : &*it;
    } else {
      out = numeric ? index_path(out, std::stoul(tok)) : field_path(out, tok);
      cur = nullptr;
    }
    if (slash == std::string_view::npos) break;
    pos = slash + 1;
  }
  return out;
}

Problems validate_object(const json& obj) {
  Checker c;
  if (!obj.is_object()) {
    c.err("", "must be an object, got " + detail::show(obj));
    return c.problems;
  }
  auto kind_field = c.string(obj, "", "kind", true);
  if (!kind_field) return c.problems;
  const std::string& kind = *kind_field;
  if (!is_known_kind(kind)) {
    c.err("kind", "\"" + kind + "\" is not a kind the controller understands");
    return c.problems;
  }
  check_meta(c, obj, kind);
  if (!c.problems.empty()) return c.problems;  // the rest would only add noise
  if (kind == "Pod") detail::check_pod(c, obj);
  else if (kind == "Service") detail::check_service(c, obj);
  else if (kind == "EndpointSlice") detail::check_endpoint_slice(c, obj);
  else if (kind == "Node") detail::check_node(c, obj);
  else if (kind == "AuthorizationPolicy" || kind == "PeerAuthentication")
    detail::check_with_node_parser(c, node_policy_object(obj));
  else if (kind == "RequestAuthentication") detail::check_request_authentication(c, obj);
  else if (kind == "VirtualService") detail::check_virtual_service(c, obj);
  else if (kind == "DestinationRule") detail::check_destination_rule(c, obj);
  else if (kind == "Gateway") detail::check_gateway(c, obj);
  else if (kind == "HTTPRoute") detail::check_http_route(c, obj);
  // Namespace, ServiceAccount: metadata only.
  return c.problems;
}

json node_policy_object(const json& obj) {
  json out = json::object();
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (it.key() == "status") continue;
    if (it.key() != "metadata" || !it->is_object()) {
      out[it.key()] = *it;
      continue;
    }
    json md = json::object();
    for (const char* f : {"name", "namespace"})
      if (auto f_it = it->find(f); f_it != it->end()) md[f] = *f_it;
    if (auto ann = it->find("annotations"); ann != it->end() && ann->is_object()) {
      json keep = json::object();
      for (auto a = ann->begin(); a != ann->end(); ++a) {
        std::string_view k = a.key();
        auto slash = k.find('/');
        std::string_view domain = slash == std::string_view::npos ? std::string_view() : k.substr(0, slash);
        auto ends = [&](std::string_view d) {
          return domain == d || (domain.size() > d.size() && domain.substr(domain.size() - d.size() - 1) ==
                                                                  std::string(".") + std::string(d));
        };
        if (ends("istio.io") || ends("warren.io")) keep[a.key()] = *a;
      }
      if (!keep.empty()) md["annotations"] = std::move(keep);
    } else if (ann != it->end()) {
      md["annotations"] = *ann;  // not an object: let the node's parser say so
    }
    out["metadata"] = std::move(md);
  }
  return out;
}

std::string format_problems(const std::string& origin, const ObjectKey& key, const Problems& problems) {
  std::string who = key.kind.empty() ? std::string("object") : key.kind;
  std::string name = key.name.empty() ? "(no name)" : key.name;
  who += " " + (key.ns.empty() ? name : key.ns + "/" + name);
  std::string out;
  for (const auto& p : problems) {
    if (!out.empty()) out += '\n';
    out += origin + ": " + who + ": ";
    if (!p.path.empty()) out += p.path + ": ";
    out += p.message;
  }
  return out;
}

}  // namespace warren::controller
