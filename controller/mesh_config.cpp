#include "mesh_config.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>

#include "warren/config.h"
#include "warren/ext_authz_fields.h"

namespace warren::controller {

using nlohmann::json;

namespace {

using ext_authz_text::clean;
using ext_authz_text::header_name_ok;

// As warren-waypoint reads timeout (ext_authz.cpp), and more than 0 ms once rounded.
bool provider_duration(const std::string& s) {
  auto d = ext_authz_text::duration(s);
  return d && d->count() > 0;
}

// Provider types of MeshConfig.ExtensionProvider Warren has no use for
// (telemetry): left out without a word.
constexpr const char* kIgnoredTypes[] = {"zipkin",          "lightstep",         "datadog",
                                         "stackdriver",     "opencensus",        "skywalking",
                                         "opentelemetry",   "prometheus",        "envoyFileAccessLog",
                                         "envoyHttpAls",    "envoyTcpAls",       "envoyOtelAls",
                                         "sds"};


}  // namespace

json check_extension_provider(const json& entry, const std::string& path, Problems& problems) {
  size_t before = problems.size();
  auto err = [&](const std::string& p, std::string msg) { problems.push_back({p, std::move(msg)}); };
  if (!entry.is_object()) {
    err(path, "must be an object");
    return nullptr;
  }
  auto h = entry.find("envoyExtAuthzHttp");
  if (h == entry.end() || h->is_null()) {
    if (entry.contains("envoyExtAuthzGrpc"))
      err(field_path(path, "envoyExtAuthzGrpc"), "is not supported (only envoyExtAuthzHttp)");
    else if (std::none_of(std::begin(kIgnoredTypes), std::end(kIgnoredTypes),
                          [&](const char* t) { return entry.contains(t); }))
      err(path, "has no provider type (envoyExtAuthzHttp)");
    return nullptr;
  }
  auto n = entry.find("name");
  if (n == entry.end() || !n->is_string() || n->get_ref<const std::string&>().empty())
    err(field_path(path, "name"), "is required");
  std::string hp = field_path(path, "envoyExtAuthzHttp");
  if (!h->is_object()) {
    err(hp, "must be an object");
    return nullptr;
  }
  json out = *h;
  const json& o = *h;
  for (auto it = o.begin(); it != o.end(); ++it)
    if (std::none_of(std::begin(kExtAuthzHttpFields), std::end(kExtAuthzHttpFields), [&](const char* k) { return it.key() == k; }))
      err(field_path(hp, it.key()), "unknown field");
  auto field = [&](const char* k) -> const json* {
    auto it = o.find(k);
    return it == o.end() || it->is_null() ? nullptr : &*it;
  };
  const json* svc = field("service");
  if (!svc || !svc->is_string() || svc->get_ref<const std::string&>().empty() ||
      !clean(svc->get_ref<const std::string&>()) || svc->get_ref<const std::string&>().find(' ') != std::string::npos)
    err(field_path(hp, "service"), "is required (a host name)");
  const json* port = field("port");
  int64_t pn = 0;
  if (port && port->is_number_integer()) pn = port->get<int64_t>();
  else if (port && port->is_string() && !port->get_ref<const std::string&>().empty() &&
           port->get_ref<const std::string&>().size() <= 5 &&
           std::all_of(port->get_ref<const std::string&>().begin(), port->get_ref<const std::string&>().end(),
                       [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
    pn = std::stoll(port->get<std::string>());
  if (pn < 1 || pn > 65535) err(field_path(hp, "port"), "is required (1-65535)");
  else out["port"] = pn;
  if (const json* pp = field("pathPrefix")) {
    if (!pp->is_string()) err(field_path(hp, "pathPrefix"), "must be a string");
    else if (const auto& s = pp->get_ref<const std::string&>();
             !s.empty() && (s[0] != '/' || !clean(s) || s.find_first_of(" ?#") != std::string::npos))
      err(field_path(hp, "pathPrefix"), "must start with / and hold no space, ? or #");
  }
  if (const json* t = field("timeout")) {
    if (!t->is_string()) err(field_path(hp, "timeout"), "must be a string");
    else if (!t->get_ref<const std::string&>().empty() && !provider_duration(t->get<std::string>()))
      err(field_path(hp, "timeout"), "\"" + t->get<std::string>() + "\" is not a duration (\"250ms\", \"10s\")");
  }
  if (const json* f = field("failOpen"); f && !f->is_boolean()) err(field_path(hp, "failOpen"), "must be true or false");
  if (const json* s = field("statusOnError")) {
    std::string v = s->is_string() ? s->get<std::string>() : s->is_number_integer() ? s->dump() : "";
    int code = v.size() == 3 && std::all_of(v.begin(), v.end(), ::isdigit) ? std::stoi(v) : 0;
    if (code < 200 || code > 599) err(field_path(hp, "statusOnError"), "must be an HTTP status (200-599)");
  }
  for (const char* k : {"includeRequestHeadersInCheck", "includeHeadersInCheck", "headersToUpstreamOnAllow",
                        "headersToDownstreamOnDeny", "headersToDownstreamOnAllow"}) {
    const json* l = field(k);
    if (!l) continue;
    if (!l->is_array()) {
      err(field_path(hp, k), "must be a list of strings");
      continue;
    }
    for (size_t i = 0; i < l->size(); ++i)
      if (!(*l)[i].is_string() || (*l)[i].get_ref<const std::string&>().empty())
        err(index_path(field_path(hp, k), i), "must be a non-empty string");
  }
  if (const json* a = field("includeAdditionalHeadersInCheck")) {
    std::string ap = field_path(hp, "includeAdditionalHeadersInCheck");
    if (!a->is_object()) err(ap, "must be an object of header: value");
    else
      for (auto kv = a->begin(); kv != a->end(); ++kv)
        if (!header_name_ok(kv.key()) || !kv->is_string() || !clean(kv->get_ref<const std::string&>()))
          err(field_path(ap, kv.key()), "must be a header name with a string value without control characters");
  }
  if (field("includeRequestBodyInCheck"))
    err(field_path(hp, "includeRequestBodyInCheck"), "is not supported (the check request has no body)");
  if (problems.size() != before) return nullptr;
  return {{"name", *n}, {"envoyExtAuthzHttp", std::move(out)}};
}

MeshConfigResult mesh_config_from_configmap(const json& cm) {
  MeshConfigResult r;
  auto fatal = [&](const std::string& path, std::string msg) {
    r.fatal = true;
    r.problems.push_back({path, std::move(msg)});
    return r;
  };
  const json* data = cm.is_object() && cm.contains("data") && !cm["data"].is_null() ? &cm["data"] : nullptr;
  if (data && !data->is_object()) return fatal("data", "must be a map of strings");
  if (!data || !data->contains(kMeshConfigKey) || (*data)[kMeshConfigKey].is_null()) return r;  // an empty meshConfig
  const json& text = (*data)[kMeshConfigKey];
  const std::string path = "data.mesh";
  if (!text.is_string()) return fatal(path, "must be a string (MeshConfig as YAML)");
  auto mesh = config::yaml_to_json(text.get<std::string>());
  if (!mesh) return fatal(path, "is not YAML: " + mesh.error().message);
  if (mesh->is_null()) return r;
  if (!mesh->is_object()) return fatal(path, "must be a map (MeshConfig)");
  auto eps = mesh->find("extensionProviders");
  if (eps == mesh->end() || eps->is_null()) return r;
  std::string ep = field_path(path, "extensionProviders");
  if (!eps->is_array()) return fatal(ep, "must be a list");
  std::set<std::string> names;
  for (size_t i = 0; i < eps->size(); ++i) {
    std::string p = index_path(ep, i);
    size_t before = r.problems.size();
    json prov = check_extension_provider((*eps)[i], p, r.problems);
    if (prov.is_null()) {
      if (r.problems.size() != before) r.problems.back().message += "; provider left out";
      continue;
    }
    const std::string& name = prov["name"].get_ref<const std::string&>();
    if (!names.insert(name).second) {
      r.problems.push_back({field_path(p, "name"), "\"" + name + "\" is already the name of an earlier provider; provider left out"});
      continue;
    }
    r.config.extension_providers.push_back(std::move(prov));
  }
  return r;
}

}  // namespace warren::controller
