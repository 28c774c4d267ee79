#include "state.h"

#include <fstream>
#include <sstream>

namespace warren::waypoint {

using nlohmann::json;

bool State::fronts(const config::Workload& w) const {
  return w.waypoint == self.name && w.namespace_ == self.namespace_;
}

bool State::fronts(const config::Service& s) const {
  return s.waypoint == self.name && s.namespace_ == self.namespace_;
}

std::optional<Target> State::target(const SockAddr& authority, std::string* why) const {
  Target t;
  t.port = authority.port;
  if (const auto* svc = mesh->service_by_vip(authority.ip)) {
    if (!fronts(*svc)) {
      *why = "service " + svc->namespace_ + "/" + svc->name + " is not behind waypoint " +
             self.namespace_ + "/" + self.name;
      return std::nullopt;
    }
    bool port_ok = false;
    for (const auto& p : svc->ports) port_ok |= p.port == authority.port;
    if (!port_ok) {
      *why = "service " + svc->namespace_ + "/" + svc->name + " has no port " +
             std::to_string(authority.port);
      return std::nullopt;
    }
    t.svc = svc;
    t.host = svc->hostname;
    return t;
  }
  if (const auto* w = mesh->workload_by_ip(authority.ip)) {
    if (!fronts(*w)) {
      *why = "workload " + w->namespace_.str() + "/" + w->name.str() + " is not behind waypoint " +
             self.namespace_ + "/" + self.name;
      return std::nullopt;
    }
    t.pod = w;
    return t;
  }
  *why = "no service or workload at " + authority.to_string();
  return std::nullopt;
}

namespace {

std::vector<json> objects(const json& doc, const char* key, std::string& err) {
  std::vector<json> out;
  auto it = doc.find(key);
  if (it == doc.end() || it->is_null()) return out;
  if (!it->is_array()) {
    err += std::string("/") + key + ": must be an array\n";
    return out;
  }
  for (size_t i = 0; i < it->size(); ++i) {
    if (!(*it)[i].is_object())
      err += std::string("/") + key + "/" + std::to_string(i) + ": must be an object\n";
    else
      out.push_back((*it)[i]);
  }
  return out;
}

std::string str_field(const json& o, const char* key, const std::string& def, std::string& err,
                      const std::string& at) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return def;
  if (!it->is_string()) {
    err += at + "/" + key + ": must be a string\n";
    return def;
  }
  return it->get<std::string>();
}

}  // namespace

namespace {

// The waypoint block and the routing arrays of `doc`, checked; the mesh is
// the caller's. Errors are appended to `err` ("<pointer>: <reason>\n").
struct Head {
  std::vector<json> vs, dr, hr, ra, ep;
};

Head parse_head(const json& doc, State& st, std::string& err) {
  Head h;
  const json* wp = doc.contains("waypoint") ? &doc["waypoint"] : nullptr;
  if (!wp || !wp->is_object()) {
    err += "/waypoint: is required (an object)\n";
    return h;
  }
  for (auto& [k, v] : wp->items())
    if (k != "name" && k != "namespace" && k != "serviceAccount" && k != "address" &&
        k != "pathNormalization" && k != "requestHeadersTimeout" && k != "tracing")
      err += "/waypoint/" + k + ": unknown field\n";
  st.self.name = str_field(*wp, "name", "", err, "/waypoint");
  st.self.namespace_ = str_field(*wp, "namespace", "default", err, "/waypoint");
  st.self.service_account = str_field(*wp, "serviceAccount", st.self.name, err, "/waypoint");
  if (st.self.name.empty()) err += "/waypoint/name: is required\n";
  std::string addr = str_field(*wp, "address", "", err, "/waypoint");
  if (auto ip = IpAddr::parse(addr)) st.self.address = *ip;
  else err += "/waypoint/address: \"" + addr + "\" is not an IP address\n";
  auto level = str_field(*wp, "pathNormalization", "MERGE_SLASHES", err, "/waypoint");
  if (auto po = PathOptions::from_istio(level); po.ok()) st.path = *po;
  else err += "/waypoint/pathNormalization: " + po.error().message + "\n";

  if (auto t = str_field(*wp, "requestHeadersTimeout", "", err, "/waypoint"); !t.empty()) {
    if (auto d = spec::parse_duration(t); d.ok()) st.request_headers_timeout = *d;
    else err += "/waypoint/requestHeadersTimeout: " + d.error().message + "\n";
  }
  if (auto t = wp->find("tracing"); t != wp->end() && !t->is_null()) {
    if (!t->is_object()) {
      err += "/waypoint/tracing: must be an object\n";
    } else {
      st.zipkin = str_field(*t, "zipkin", "", err, "/waypoint/tracing");
      if (!st.zipkin.empty() && !SockAddr::parse(st.zipkin))
        err += "/waypoint/tracing/zipkin: \"" + st.zipkin + "\" is not IP:port\n";
      if (auto sp = t->find("samplingPercent"); sp != t->end()) {
        if (!sp->is_number() || sp->get<double>() < 0 || sp->get<double>() > 100)
          err += "/waypoint/tracing/samplingPercent: must be a number from 0 to 100\n";
        else
          st.sampling_percent = sp->get<double>();
      }
    }
  }
  h.vs = objects(doc, "virtualServices", err);
  h.dr = objects(doc, "destinationRules", err);
  h.hr = objects(doc, "httpRoutes", err);
  h.ra = objects(doc, "requestAuthentications", err);
  h.ep = objects(doc, "extensionProviders", err);
  for (size_t i = 0; i < h.ep.size(); ++i) {
    auto p = parse_ext_authz_provider(h.ep[i], "/extensionProviders/" + std::to_string(i));
    if (!p.ok()) err += p.error().message + "\n";
    else st.providers[p->name] = *p;
  }
  return h;
}

AuthzScope scope_of(const State& st) {
  AuthzScope scope;
  scope.waypoint = st.self.name;
  scope.namespace_ = st.self.namespace_;
  scope.root_namespace = st.mesh->root_namespace;
  for (const auto& s : st.mesh->services)
    if (st.fronts(*s)) scope.services.insert(s->namespace_ + "/" + s->name);
  return scope;
}

// Compiles the routing and policy objects over st->mesh.
StatePtr compile(std::shared_ptr<State> st, const json& doc, Head h) {
  st->self.identity = "spiffe://" + st->mesh->trust_domain + "/ns/" + st->self.namespace_ + "/sa/" +
                      st->self.service_account;
  if (auto it = doc.find("policies"); it != doc.end() && it->is_array())
    for (const auto& p : *it) st->policies.push_back(p);
  AuthzScope scope = scope_of(*st);
  st->authz = L7Authz::build(st->policies, scope, &st->warnings);
  st->authn = RequestAuthn::build(h.ra, scope, &st->warnings);
  for (const auto& uri : st->authn.jwks_uris())
    st->warnings.push_back("jwksUri " + uri + " is not fetched yet (use inline jwks): its tokens are refused");
  RouteContext ctx;
  st->routes = RouteTable::build(h.vs, h.hr, ctx, &st->warnings);
  st->rules = DestinationRules::build(h.dr, ctx, &st->warnings);
  st->source = {{"virtualServices", std::move(h.vs)}, {"destinationRules", std::move(h.dr)},
                {"httpRoutes", std::move(h.hr)}, {"requestAuthentications", std::move(h.ra)},
                {"extensionProviders", std::move(h.ep)}};
  return st;
}

// The waypoint block and routing arrays into a new State, or every error.
Result<std::shared_ptr<State>> begin_state(const json& doc, Head* h) {
  if (!doc.is_object()) return make_error(Errc::kInvalidArgument, ": the configuration must be an object");
  std::string err;
  auto st = std::make_shared<State>();
  *h = parse_head(doc, *st, err);
  if (!err.empty()) {
    err.pop_back();
    return make_error(Errc::kInvalidArgument, err);
  }
  return st;
}

}  // namespace

Result<StatePtr> parse_state(const json& doc) {
  Head h;
  auto st = begin_state(doc, &h);
  if (!st) return st.error();
  // The rest is a node config.
  json node = doc;
  for (const char* k : {"waypoint", "virtualServices", "destinationRules", "httpRoutes", "requestAuthentications",
                        "extensionProviders"})
    node.erase(k);
  if (!node.contains("node"))
    node["node"] = {{"name", (*st)->self.name}, {"address", (*st)->self.address.to_string()}};
  auto mesh = config::parse(node);
  if (!mesh.ok()) return mesh.error();
  (*st)->mesh = *mesh;
  return compile(std::move(*st), doc, std::move(h));
}

Result<StatePtr> build_state(const json& doc, config::SnapshotPtr mesh) {
  Head h;
  auto st = begin_state(doc, &h);
  if (!st) return st.error();
  (*st)->mesh = std::move(mesh);
  return compile(std::move(*st), doc, std::move(h));
}

std::string check_routing_object(const json& obj, const State* current) {
  std::vector<std::string> errors;
  std::string kind = obj.is_object() && obj.contains("kind") && obj["kind"].is_string() ? obj["kind"].get<std::string>() : "";
  RouteContext ctx;
  if (kind == "VirtualService") {
    (void)RouteTable::build({obj}, {}, ctx, &errors);
  } else if (kind == "HTTPRoute") {
    (void)RouteTable::build({}, {obj}, ctx, &errors);
  } else if (kind == "DestinationRule") {
    (void)DestinationRules::build({obj}, ctx, &errors);
  } else if (kind == "RequestAuthentication") {
    AuthzScope scope;
    if (current) scope = scope_of(*current);
    (void)RequestAuthn::build({obj}, scope, &errors);
  } else {
    return "kind \"" + kind + "\" is not VirtualService, DestinationRule, HTTPRoute or RequestAuthentication";
  }
  std::string out;
  for (const auto& e : errors) out += (out.empty() ? "" : "; ") + e;
  return out;
}

Result<StatePtr> load_state(const std::string& path) {
  std::ifstream f(path);
  if (!f) return make_error(Errc::kNotFound, path + ": cannot be read");
  std::stringstream ss;
  ss << f.rdbuf();
  std::string text = ss.str();
  json doc;
  bool yaml = path.size() > 5 && (path.ends_with(".yaml") || path.ends_with(".yml"));
  if (yaml) {
    auto j = config::yaml_to_json(text);
    if (!j.ok()) return make_error(Errc::kInvalidArgument, path + ": " + j.error().message);
    doc = std::move(*j);
  } else {
    doc = json::parse(text, nullptr, false);
    if (doc.is_discarded()) return make_error(Errc::kInvalidArgument, path + ": not valid JSON");
  }
  // Certificate paths are relative to the file, as warren-node reads them.
  auto slash = path.rfind('/');
  std::string base = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  if (auto c = doc.find("certificates"); c != doc.end() && c->is_object() && !base.empty())
    for (const char* k : {"dir", "rootCert"})
      if (auto f = c->find(k); f != c->end() && f->is_string() && !f->get<std::string>().empty() &&
                               f->get<std::string>()[0] != '/')
        *f = base + f->get<std::string>();
  auto st = parse_state(doc);
  if (!st.ok()) return make_error(st.error().code, path + ": " + st.error().message);
  return st;
}

}  // namespace warren::waypoint
