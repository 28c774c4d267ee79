#include "fake_store.h"

#include <openssl/evp.h>

#include <chrono>
#include <ctime>
#include <random>

namespace warren::fakes {

namespace {

std::string now_rfc3339() {
  time_t t = time(nullptr);
  struct tm tm {};
  gmtime_r(&t, &tm);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string new_uid() {
  static std::mt19937_64 rng{std::random_device{}()};
  uint64_t a = rng(), b = rng();
  char buf[40];
  snprintf(buf, sizeof buf, "%08x-%04x-4%03x-%04x-%012llx", static_cast<unsigned>(a >> 32),
           static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0xfff),
           static_cast<unsigned>(0x8000 | ((b >> 48) & 0x3fff)),
           static_cast<unsigned long long>(b & 0xffffffffffffULL));
  return buf;
}

std::string b64(const std::string& s) {
  std::string out(4 * ((s.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string unb64(const std::string& s) {
  if (s.empty() || s.size() % 4 != 0) return {};
  std::string out(s.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size()));
  if (n < 0) return {};
  out.resize(static_cast<size_t>(n));
  size_t pad = s.back() == '=' ? (s[s.size() - 2] == '=' ? 2 : 1) : 0;
  out.resize(out.size() - pad);
  return out;
}

std::string str_at(const nlohmann::json& obj, const char* field) {
  auto md = obj.find("metadata");
  if (md == obj.end() || !md->is_object()) return {};
  auto it = md->find(field);
  return it != md->end() && it->is_string() ? it->get<std::string>() : std::string();
}

// `pods "web"` for the core group, `leases.coordination.k8s.io "x"` otherwise.
std::string what(const ResourceType& t, const std::string& name) {
  return (t.group.empty() ? t.plural : t.plural + "." + t.group) + " \"" + name + "\"";
}

std::string tkey(const ResourceType& t) { return t.plural + "." + t.group; }

}  // namespace

const std::vector<ResourceType>& resource_types() {
  static const std::vector<ResourceType> kTypes = {
      {"Namespace", "", "v1", "namespaces", false, true},
      {"Pod", "", "v1", "pods", true, true},
      {"Service", "", "v1", "services", true, true},
      {"EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", true, true},
      {"ServiceAccount", "", "v1", "serviceaccounts", true, true},
      {"Node", "", "v1", "nodes", false, true},
      {"AuthorizationPolicy", "security.istio.io", "v1", "authorizationpolicies", true, false},
      {"PeerAuthentication", "security.istio.io", "v1", "peerauthentications", true, false},
      {"RequestAuthentication", "security.istio.io", "v1", "requestauthentications", true, false},
      {"VirtualService", "networking.istio.io", "v1", "virtualservices", true, false},
      {"DestinationRule", "networking.istio.io", "v1", "destinationrules", true, false},
      {"Gateway", "gateway.networking.k8s.io", "v1", "gateways", true, false},
      {"HTTPRoute", "gateway.networking.k8s.io", "v1", "httproutes", true, false},
      {"Lease", "coordination.k8s.io", "v1", "leases", true, true},
      {"Secret", "", "v1", "secrets", true, true},
      {"ConfigMap", "", "v1", "configmaps", true, true},
      {"Deployment", "apps", "v1", "deployments", true, true},
  };
  return kTypes;
}

const ResourceType* find_type_by_kind(const std::string& kind) {
  for (const auto& t : resource_types()) {
    if (t.kind == kind) return &t;
  }
  return nullptr;
}

const ResourceType* find_type(const std::string& group, const std::string& version,
                              const std::string& plural) {
  for (const auto& t : resource_types()) {
    if (t.group == group && t.version == version && t.plural == plural) return &t;
  }
  return nullptr;
}

nlohmann::json make_status(int code, const std::string& reason, const std::string& message) {
  return {{"kind", "Status"},      {"apiVersion", "v1"}, {"metadata", nlohmann::json::object()},
          {"status", "Failure"},   {"message", message}, {"reason", reason},
          {"code", code}};
}

Store::Store(uint64_t first_rv) : rv_(first_rv) {}

void Store::set_served(const std::string& kind, bool served) { served_[kind] = served; }

bool Store::served(const ResourceType& t) const {
  auto it = served_.find(t.kind);
  return it == served_.end() || it->second;
}

std::string Store::key(const ResourceType& t, const std::string& ns, const std::string& name) {
  return t.namespaced ? ns + "/" + name : name;
}

nlohmann::json Store::with_type(const ResourceType& t, nlohmann::json obj) const {
  obj["kind"] = t.kind;
  obj["apiVersion"] = t.api_version();
  return obj;
}

void Store::emit(const ResourceType& t, const std::string& type, const nlohmann::json& obj) {
  WatchEvent ev{rv_, type, obj};
  history_[tkey(t)].push_back(ev);
  if (listener_) listener_(t, ev);
}

Outcome Store::create(const ResourceType& t, nlohmann::json obj, const std::string& ns) {
  if (!obj.is_object()) return {400, make_status(400, "BadRequest", "body is not an object")};
  auto& md = obj["metadata"];
  if (!md.is_object()) md = nlohmann::json::object();
  std::string name = md.value("name", "");
  if (name.empty())
    return {422, make_status(422, "Invalid", t.kind + " is invalid: metadata.name: Required value")};
  std::string the_ns = t.namespaced ? (ns.empty() ? md.value("namespace", "") : ns) : "";
  if (t.namespaced && the_ns.empty()) the_ns = "default";
  if (t.namespaced) {
    md["namespace"] = the_ns;
  } else {
    md.erase("namespace");
  }
  std::string k = key(t, the_ns, name);
  auto& objs = objects_[tkey(t)];
  if (objs.count(k))
    return {409, make_status(409, "AlreadyExists", what(t, name) + " already exists")};
  md["resourceVersion"] = std::to_string(++rv_);
  if (!md.contains("uid")) md["uid"] = new_uid();
  if (!md.contains("creationTimestamp")) md["creationTimestamp"] = now_rfc3339();
  if (!t.builtin && !md.contains("generation")) md["generation"] = 1;
  obj = with_type(t, std::move(obj));
  objs[k] = obj;
  emit(t, "ADDED", obj);
  return {201, obj};
}

Outcome Store::update(const ResourceType& t, nlohmann::json obj) {
  if (!obj.is_object()) return {400, make_status(400, "BadRequest", "body is not an object")};
  std::string name = str_at(obj, "name");
  std::string ns = t.namespaced ? str_at(obj, "namespace") : "";
  if (t.namespaced && ns.empty()) ns = "default";
  auto& objs = objects_[tkey(t)];
  auto it = objs.find(key(t, ns, name));
  if (it == objs.end()) return {404, make_status(404, "NotFound", what(t, name) + " not found")};
  const nlohmann::json& old = it->second;
  std::string want = str_at(obj, "resourceVersion");
  if (!want.empty() && want != str_at(old, "resourceVersion")) {
    return {409, make_status(409, "Conflict",
                             "Operation cannot be fulfilled on " + what(t, name) +
                                 ": the object has been modified; please apply your changes to "
                                 "the latest version and try again")};
  }
  auto& md = obj["metadata"];
  if (t.namespaced) md["namespace"] = ns;
  md["uid"] = old["metadata"].value("uid", "");
  md["creationTimestamp"] = old["metadata"].value("creationTimestamp", "");
  if (old["metadata"].contains("generation")) {
    bool spec_changed = obj.value("spec", nlohmann::json()) != old.value("spec", nlohmann::json());
    md["generation"] = old["metadata"]["generation"].get<int64_t>() + (spec_changed ? 1 : 0);
  }
  md["resourceVersion"] = std::to_string(++rv_);
  obj = with_type(t, std::move(obj));
  it->second = obj;
  emit(t, "MODIFIED", obj);
  return {200, obj};
}

Outcome Store::patch(const ResourceType& t, const std::string& ns_in, const std::string& name,
                     const nlohmann::json& patch, bool status_only) {
  std::string ns = t.namespaced ? ns_in : "";
  auto& objs = objects_[tkey(t)];
  auto it = objs.find(key(t, ns, name));
  if (it == objs.end()) return {404, make_status(404, "NotFound", what(t, name) + " not found")};
  if (!patch.is_object()) return {400, make_status(400, "BadRequest", "patch is not an object")};
  std::string want = str_at(patch, "resourceVersion");
  if (!want.empty() && want != str_at(it->second, "resourceVersion")) {
    return {409, make_status(409, "Conflict",
                             "Operation cannot be fulfilled on " + what(t, name) +
                                 ": the object has been modified; please apply your changes to "
                                 "the latest version and try again")};
  }
  nlohmann::json obj = it->second;
  nlohmann::json md = obj["metadata"];
  if (status_only) {
    nlohmann::json st = obj.value("status", nlohmann::json::object());
    if (patch.contains("status")) st.merge_patch(patch["status"]);
    obj["status"] = std::move(st);
  } else {
    nlohmann::json p = patch;
    p.erase("status");
    obj.merge_patch(p);
    for (const char* f : {"uid", "creationTimestamp", "name", "namespace", "generation"}) {
      if (md.contains(f)) obj["metadata"][f] = md[f];
    }
    if (md.contains("generation") && obj.value("spec", nlohmann::json()) != it->second.value("spec", nlohmann::json()))
      obj["metadata"]["generation"] = md["generation"].get<int64_t>() + 1;
  }
  obj["metadata"]["resourceVersion"] = std::to_string(++rv_);
  it->second = obj;
  emit(t, "MODIFIED", obj);
  return {200, obj};
}

Outcome Store::remove(const ResourceType& t, const std::string& ns_in, const std::string& name) {
  std::string ns = t.namespaced ? ns_in : "";
  auto& objs = objects_[tkey(t)];
  auto it = objs.find(key(t, ns, name));
  if (it == objs.end()) return {404, make_status(404, "NotFound", what(t, name) + " not found")};
  nlohmann::json obj = std::move(it->second);
  objs.erase(it);
  obj["metadata"]["resourceVersion"] = std::to_string(++rv_);
  emit(t, "DELETED", obj);
  return {200, obj};
}

std::optional<nlohmann::json> Store::find(const ResourceType& t, const std::string& ns,
                                          const std::string& name) const {
  auto objs = objects_.find(tkey(t));
  if (objs == objects_.end()) return std::nullopt;
  auto it = objs->second.find(key(t, t.namespaced ? ns : "", name));
  if (it == objs->second.end()) return std::nullopt;
  return it->second;
}

Outcome Store::get(const ResourceType& t, const std::string& ns, const std::string& name) const {
  auto o = find(t, ns, name);
  if (!o) return {404, make_status(404, "NotFound", what(t, name) + " not found")};
  return {200, std::move(*o)};
}

size_t Store::object_count(const ResourceType& t) const {
  auto it = objects_.find(tkey(t));
  return it == objects_.end() ? 0 : it->second.size();
}

Outcome Store::list(const ResourceType& t, const std::string& ns, size_t limit,
                    const std::string& cont) const {
  uint64_t list_rv = rv_;
  std::string start;
  if (!cont.empty()) {
    auto tok = nlohmann::json::parse(unb64(cont), nullptr, false);
    if (!tok.is_object() || !tok.contains("rv") || !tok.contains("start"))
      return {400, make_status(400, "BadRequest", "invalid continue token")};
    list_rv = tok["rv"].get<uint64_t>();
    start = tok["start"].get<std::string>();
    if (list_rv < compacted_) {
      return {410, make_status(410, "Expired",
                               "The provided continue parameter is too old to display a consistent "
                               "list result. You can start a new list without the continue "
                               "parameter.")};
    }
  }
  nlohmann::json items = nlohmann::json::array();
  std::string next;
  size_t remaining = 0;
  auto objs = objects_.find(tkey(t));
  if (objs != objects_.end()) {
    std::string prefix = t.namespaced && !ns.empty() ? ns + "/" : "";
    for (auto it = objs->second.lower_bound(std::max(start, prefix)); it != objs->second.end();
         ++it) {
      if (!prefix.empty() && it->first.rfind(prefix, 0) != 0) break;
      if (limit && items.size() == limit) {
        ++remaining;
        continue;
      }
      nlohmann::json item = it->second;
      if (t.builtin) {
        item.erase("kind");
        item.erase("apiVersion");
      }
      items.push_back(std::move(item));
      next = it->first;
    }
  }
  nlohmann::json md = {{"resourceVersion", std::to_string(list_rv)}};
  if (remaining) {
    nlohmann::json tok = {{"v", "meta.k8s.io/v1"}, {"rv", list_rv}, {"start", next + '\x01'}};
    md["continue"] = b64(tok.dump());
    md["remainingItemCount"] = remaining;
  }
  return {200,
          {{"kind", t.kind + "List"},
           {"apiVersion", t.api_version()},
           {"metadata", std::move(md)},
           {"items", std::move(items)}}};
}

Outcome Store::events_since(const ResourceType& t, const std::string& ns, const std::string& rv,
                            std::vector<WatchEvent>* out) const {
  auto in_ns = [&](const nlohmann::json& o) {
    return ns.empty() || !t.namespaced || str_at(o, "namespace") == ns;
  };
  if (rv.empty() || rv == "0") {
    auto objs = objects_.find(tkey(t));
    if (objs != objects_.end()) {
      for (const auto& [k, o] : objs->second) {
        if (in_ns(o)) out->push_back({rv_, "ADDED", o});
      }
    }
    return {200, nullptr};
  }
  uint64_t from = 0;
  try {
    from = std::stoull(rv);
  } catch (...) {
    return {400, make_status(400, "BadRequest", "invalid resourceVersion \"" + rv + "\"")};
  }
  if (from < compacted_) {
    return {410, make_status(410, "Expired",
                             "too old resource version: " + rv + " (" +
                                 std::to_string(compacted_) + ")")};
  }
  auto h = history_.find(tkey(t));
  if (h != history_.end()) {
    for (const auto& ev : h->second) {
      if (ev.rv > from && in_ns(ev.object)) out->push_back(ev);
    }
  }
  return {200, nullptr};
}

}  // namespace warren::fakes
