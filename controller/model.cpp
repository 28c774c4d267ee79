// Model: the Sink side (validate, then record) and the queries.
#include "model.h"

#include <spdlog/spdlog.h>

#include "jwks_resolver.h"
#include "model_impl.h"
#include "translate.h"
#include "validate.h"

namespace warren::controller {

using nlohmann::json;

namespace {

bool is_node_object(const std::string& kind) { return kind == "AuthorizationPolicy" || kind == "PeerAuthentication"; }

std::string node_object_id(const ObjectKey& k) {
  return k.kind == "AuthorizationPolicy" ? policy_id(k.ns, k.name) : peerauth_id(k.ns, k.name);
}

// Kinds held as JSON keep what later translation may read, not bookkeeping:
// no managedFields, no last-applied annotation, no status (but a Node's
// addresses).
json trim(json obj, const std::string& kind) {
  if (auto md = obj.find("metadata"); md != obj.end() && md->is_object()) {
    md->erase("managedFields");
    if (auto ann = md->find("annotations"); ann != md->end() && ann->is_object()) {
      ann->erase("kubectl.kubernetes.io/last-applied-configuration");
      if (ann->empty()) md->erase(ann);
    }
  }
  if (auto st = obj.find("status"); st != obj.end()) {
    if (kind == "Node" && st->is_object() && st->contains("addresses"))
      *st = json{{"addresses", (*st)["addresses"]}};
    else
      obj.erase(st);
  }
  return obj;
}

}  // namespace

Model::Model(ModelOptions opts, ValidationListener* listener) : impl_(std::make_unique<Impl>()) {
  impl_->opts = std::move(opts);
  impl_->listener = listener;
}

Model::~Model() = default;

void Model::upsert(const std::string& origin, json obj) {
  // Nothing a source feeds may take the controller down (this runs in libuv
  // callbacks): a bug in validation or translation rejects that object.
  ObjectKey key = key_of(obj);
  try {
    upsert_checked(origin, std::move(obj));
  } catch (const std::exception& e) {
    std::string msg = format_problems(origin, key, {{"", std::string("internal error: ") + e.what()}});
    impl_->rejected[key] = msg;
    spdlog::error("rejected: {}", msg);
    if (impl_->listener) impl_->listener->rejected(key, origin, msg);
  }
}

void Model::upsert_checked(const std::string& origin, json obj) {
  Impl& m = *impl_;
  ObjectKey key = key_of(obj);
  // Istio's own Gateway (networking.istio.io, ingress/egress gateways) is not
  // the Gateway API Gateway that makes a waypoint: ignored like unknown kinds.
  std::string kind = key.kind;
  if (kind == "Gateway" && obj.is_object() && obj.value("apiVersion", json()).is_string() &&
      obj["apiVersion"].get_ref<const std::string&>().rfind("networking.istio.io/", 0) == 0)
    kind = "Gateway (networking.istio.io)";
  if (kind == "ConfigMap" && key.ns == m.opts.root_namespace && key.name == kMeshConfigMapName) {
    upsert_mesh_config(origin, key, obj);
    return;
  }
  if (!kind.empty() && !is_known_kind(kind)) {
    if (m.unknown_kinds_logged.insert(kind).second)
      spdlog::info("model: ignoring objects of kind {} (first: {} from {})", kind, key.to_string(), origin);
    return;
  }
  Problems problems = validate_object(obj);
  std::unique_ptr<PodInfo> pod;
  if (problems.empty() && key.kind == "Pod") {
    pod = std::make_unique<PodInfo>(pod_info(obj));
    auto u = m.pod_by_uid.find(pod->uid);
    if (u != m.pod_by_uid.end() && (u->second->ns != key.ns || u->second->name != key.name))
      problems.push_back({"metadata.uid", "\"" + pod->uid + "\" is also the uid of Pod " + u->second->ns + "/" +
                                              u->second->name});
  }
  if (!problems.empty()) {
    std::string msg = format_problems(origin, key, problems);
    m.rejected[key] = msg;
    spdlog::warn("rejected: {}", msg);
    if (m.listener) m.listener->rejected(key, origin, msg);
    return;
  }

  std::string nk = key.ns + "/" + key.name;
  if (key.kind == "Pod") {
    if (pod->terminated()) pod.reset();  // Succeeded/Failed: gone for the mesh
    m.set_pod(nk, std::move(pod));
  } else if (key.kind == "Service") {
    m.set_service(nk, std::make_unique<ServiceInfo>(service_info(obj)));
  } else if (key.kind == "EndpointSlice") {
    auto e = endpoint_slice_info(obj);
    m.set_slice(nk, &e);
  } else if (key.kind == "Namespace") {
    auto n = namespace_info(obj);
    m.set_namespace(key.name, &n);
  } else if (is_node_object(key.kind)) {
    auto body = std::make_shared<const json>(node_policy_object(obj));
    auto& slot = m.node_objects[node_object_id(key)];
    if (!slot || *slot != *body) {
      slot = std::move(body);
      m.mark(node_object_id(key));
    }
  } else {
    if (key.kind == "Gateway") {
      // A per-service-account waypoint changes which pods use it.
      const std::string* sa = nullptr;
      const json* spec = obj.contains("spec") ? &obj["spec"] : nullptr;
      bool waypoint = spec && spec->is_object() && spec->value("gatewayClassName", "") == kWaypointGatewayClass;
      const json& md = obj["metadata"];
      if (waypoint && md.contains("annotations") && md["annotations"].is_object())
        if (auto a = md["annotations"].find(kForServiceAccountAnnotation);
            a != md["annotations"].end() && a->is_string())
          sa = &a->get_ref<const std::string&>();
      m.set_gateway(key.ns, key.name, sa);
      m.set_waypoint_gateway(nk, waypoint_gateway(obj));
    }
    m.held.insert_or_assign(key, trim(std::move(obj), key.kind));
    if (auto rid = routing_id(key.kind, key.ns, key.name); !rid.empty()) m.mark(std::move(rid));
  }
  if (m.rejected.erase(key)) spdlog::info("model: {} from {} is valid again", key.to_string(), origin);
  if (m.listener) m.listener->accepted(key, origin);
}

void Model::upsert_mesh_config(const std::string& origin, const ObjectKey& key, const json& obj) {
  Impl& m = *impl_;
  Problems problems;
  if (!obj.contains("metadata") || !obj["metadata"].is_object()) problems.push_back({"metadata", "is required"});
  MeshConfigResult r = mesh_config_from_configmap(obj);
  problems.insert(problems.end(), r.problems.begin(), r.problems.end());
  if (!r.fatal) m.set_mesh_config(std::move(r.config));
  if (!problems.empty()) {
    // Fatal: the last good meshConfig stays; otherwise the good providers apply.
    std::string msg = format_problems(origin, key, problems);
    m.rejected[key] = msg;
    spdlog::warn("rejected: {}", msg);
    if (m.listener) m.listener->rejected(key, origin, msg);
    if (r.fatal) return;
  } else if (m.rejected.erase(key)) {
    spdlog::info("model: {} from {} is valid again", key.to_string(), origin);
  }
  spdlog::info("model: meshConfig from {} ({}): {} extension provider(s)", key.to_string(), origin,
               m.mesh_config.extension_providers.size());
  if (problems.empty() && m.listener) m.listener->accepted(key, origin);
}

const MeshConfig& Model::mesh_config() const { return impl_->mesh_config; }

void Model::remove(const ObjectKey& key) {
  Impl& m = *impl_;
  m.rejected.erase(key);
  std::string nk = key.ns + "/" + key.name;
  if (key.kind == "ConfigMap") {
    if (key.ns == m.opts.root_namespace && key.name == kMeshConfigMapName) m.set_mesh_config(MeshConfig{});
  } else if (key.kind == "Pod") {
    m.set_pod(nk, nullptr);
  } else if (key.kind == "Service") {
    m.set_service(nk, nullptr);
  } else if (key.kind == "EndpointSlice") {
    m.set_slice(nk, nullptr);
  } else if (key.kind == "Namespace") {
    m.set_namespace(key.name, nullptr);
  } else if (is_node_object(key.kind)) {
    if (m.node_objects.erase(node_object_id(key))) m.mark(node_object_id(key));
  } else {
    if (key.kind == "Gateway") {
      m.set_gateway(key.ns, key.name, nullptr);
      m.set_waypoint_gateway(nk, std::nullopt);
    }
    if (m.held.erase(key))
      if (auto rid = routing_id(key.kind, key.ns, key.name); !rid.empty()) m.mark(std::move(rid));
  }
}

void Model::synced() {
  if (!impl_->synced) spdlog::info("model: sources synced ({} objects)", object_count());
  impl_->synced = true;
}

bool Model::is_synced() const { return impl_->synced; }

Delta Model::flush() { return impl_->flush(); }

uint64_t Model::version() const { return impl_->version; }

const std::map<std::string, ResourcePtr>& Model::resources() const { return impl_->resources; }

namespace {

// spiffe://<td>/ns/<ns>/sa/<sa> -> "<ns>/<sa>"; "" when not of that form.
std::string ns_sa_of(const std::string& trust_domain, const std::string& spiffe_id) {
  std::string prefix = "spiffe://" + trust_domain + "/ns/";
  if (spiffe_id.compare(0, prefix.size(), prefix) != 0) return "";
  std::string_view rest = std::string_view(spiffe_id).substr(prefix.size());
  auto sa = rest.find("/sa/");
  if (sa == std::string_view::npos || sa == 0) return "";
  std::string_view ns = rest.substr(0, sa), name = rest.substr(sa + 4);
  if (name.empty() || name.find('/') != std::string_view::npos) return "";
  std::string id;
  id.append(ns).append("/").append(name);
  return id;
}

}  // namespace

bool Model::identity_on_node(const std::string& node, const std::string& spiffe_id) const {
  std::string id = ns_sa_of(impl_->opts.trust_domain, spiffe_id);
  if (id.empty()) return false;
  auto n = impl_->node_identities.find(node);
  if (n == impl_->node_identities.end()) return false;
  auto c = n->second.find(id);
  return c != n->second.end() && c->second > 0;
}

bool Model::identity_of_waypoint(const std::string& ns, const std::string& gateway,
                                 const std::string& spiffe_id) const {
  std::string id = ns_sa_of(impl_->opts.trust_domain, spiffe_id);
  if (id.empty() || id.compare(0, ns.size() + 1, ns + "/") != 0) return false;
  auto g = impl_->gateway_identities.find(ns + "/" + gateway);
  if (g == impl_->gateway_identities.end()) return false;
  auto c = g->second.find(id.substr(ns.size() + 1));
  return c != g->second.end() && c->second > 0;
}

const ModelOptions& Model::options() const { return impl_->opts; }

const std::map<std::string, WaypointGateway>& Model::waypoint_gateways() const { return impl_->waypoint_gateways; }

uint64_t Model::waypoints_generation() const { return impl_->waypoints_gen; }

std::map<ObjectKey, std::string> Model::rejected() const { return impl_->rejected; }

size_t Model::object_count() const {
  const Impl& m = *impl_;
  return m.pods.size() + m.services.size() + m.slices.size() + m.namespaces.size() + m.node_objects.size() +
         m.held.size();
}

const json* Model::held(const ObjectKey& key) const {
  if (is_node_object(key.kind)) {
    auto it = impl_->node_objects.find(node_object_id(key));
    return it == impl_->node_objects.end() ? nullptr : it->second.get();
  }
  auto it = impl_->held.find(key);
  return it == impl_->held.end() ? nullptr : &it->second;
}

std::set<std::string> Model::jwks_uris() const {
  std::set<std::string> out;
  for (auto it = impl_->held.lower_bound(ObjectKey{"RequestAuthentication", "", ""});
       it != impl_->held.end() && it->first.kind == "RequestAuthentication"; ++it)
    out.merge(controller::jwks_uris(it->second));
  return out;
}

void Model::refresh_kind(const std::string& kind) {
  for (auto it = impl_->held.lower_bound(ObjectKey{kind, "", ""}); it != impl_->held.end() && it->first.kind == kind;
       ++it)
    if (auto id = routing_id(kind, it->first.ns, it->first.name); !id.empty()) impl_->mark(std::move(id));
}

}  // namespace warren::controller
