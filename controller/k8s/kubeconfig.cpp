#include "k8s/kubeconfig.h"

#include <sys/stat.h>

#include <cstdlib>

#include "k8s/api.h"
#include "warren/config.h"

namespace warren::controller::k8s {

namespace {

bool file_exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\t'))
    s.pop_back();
  size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  return s.substr(i);
}

std::string dir_of(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string resolve(const std::string& base_dir, const std::string& p) {
  if (p.empty() || p[0] == '/' || base_dir.empty()) return p;
  return base_dir + "/" + p;
}

// The element named `name` of a kubeconfig list ("clusters", "users",
// "contexts"), as its inner object (cluster/user/context).
const nlohmann::json* named(const nlohmann::json& doc, const char* list, const char* inner,
                            const std::string& name) {
  auto it = doc.find(list);
  if (it == doc.end() || !it->is_array()) return nullptr;
  for (const auto& e : *it) {
    if (!e.is_object()) continue;
    auto n = e.find("name");
    if (n == e.end() || !n->is_string() || n->get<std::string>() != name) continue;
    auto in = e.find(inner);
    static const nlohmann::json kEmpty = nlohmann::json::object();
    return in != e.end() && in->is_object() ? &*in : &kEmpty;
  }
  return nullptr;
}

std::string str(const nlohmann::json& o, const char* f) {
  auto it = o.find(f);
  if (it == o.end()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number() || it->is_boolean()) return it->dump();
  return {};
}

Result<std::string> decode_field(const nlohmann::json& o, const char* f, const std::string& where) {
  auto d = base64_decode(str(o, f));
  if (!d) return d.error().wrap(where + "." + f);
  return d;
}

}  // namespace

Result<ClusterConfig> in_cluster_config(const InClusterOptions& o) {
  std::string host = o.host, port = o.port;
  if (host.empty()) {
    const char* h = std::getenv("KUBERNETES_SERVICE_HOST");
    if (h) host = h;
  }
  if (port.empty()) {
    const char* p = std::getenv("KUBERNETES_SERVICE_PORT");
    if (p) port = p;
  }
  if (host.empty() || port.empty())
    return make_error(Errc::kNotFound,
                      "in-cluster config: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT "
                      "must be set (not running in a pod?)");
  if (!file_exists(o.token_file))
    return make_error(Errc::kNotFound, "in-cluster config: no service account token at " +
                                           o.token_file);
  ClusterConfig c;
  if (host.find(':') != std::string::npos && host.front() != '[') host = "[" + host + "]";
  c.server = "https://" + host + ":" + port;
  c.token_file = o.token_file;
  if (file_exists(o.ca_file)) c.ca_file = o.ca_file;
  if (!o.namespace_file.empty() && file_exists(o.namespace_file)) {
    if (auto ns = read_text_file(o.namespace_file)) c.default_namespace = trim(*ns);
  }
  return c;
}

Result<ClusterConfig> parse_kubeconfig(const std::string& text, const std::string& base_dir,
                                       const std::string& context) {
  auto parsed = config::yaml_to_json(text);
  if (!parsed) return parsed.error();
  const nlohmann::json& doc = *parsed;
  if (!doc.is_object()) return make_error(Errc::kInvalidArgument, "not a kubeconfig (not a map)");

  std::string ctx_name = context.empty() ? str(doc, "current-context") : context;
  if (ctx_name.empty())
    return make_error(Errc::kInvalidArgument, "no context given and no current-context set");
  const nlohmann::json* ctx = named(doc, "contexts", "context", ctx_name);
  if (!ctx) return make_error(Errc::kNotFound, "context \"" + ctx_name + "\" not found");

  ClusterConfig c;
  c.default_namespace = str(*ctx, "namespace");
  std::string cluster_name = str(*ctx, "cluster");
  const nlohmann::json* cl = named(doc, "clusters", "cluster", cluster_name);
  if (!cl)
    return make_error(Errc::kNotFound, "context \"" + ctx_name + "\": cluster \"" + cluster_name +
                                           "\" not found");
  std::string where = "clusters[" + cluster_name + "].cluster";
  c.server = str(*cl, "server");
  if (c.server.empty()) return make_error(Errc::kInvalidArgument, where + ".server: missing");
  while (c.server.size() > 1 && c.server.back() == '/') c.server.pop_back();
  if (c.server.rfind("https://", 0) != 0 && c.server.rfind("http://", 0) != 0)
    return make_error(Errc::kInvalidArgument,
                      where + ".server: \"" + c.server + "\" is not an http(s) URL");
  if (cl->contains("certificate-authority-data")) {
    auto d = decode_field(*cl, "certificate-authority-data", where);
    if (!d) return d.error();
    c.ca_pem = std::move(*d);
  } else {
    c.ca_file = resolve(base_dir, str(*cl, "certificate-authority"));
  }
  if (auto it = cl->find("insecure-skip-tls-verify"); it != cl->end()) {
    c.insecure = it->is_boolean() ? it->get<bool>() : str(*cl, "insecure-skip-tls-verify") == "true";
  }
  c.tls_server_name = str(*cl, "tls-server-name");

  std::string user_name = str(*ctx, "user");
  if (!user_name.empty()) {
    const nlohmann::json* u = named(doc, "users", "user", user_name);
    if (!u)
      return make_error(Errc::kNotFound,
                        "context \"" + ctx_name + "\": user \"" + user_name + "\" not found");
    std::string uw = "users[" + user_name + "].user";
    if (u->contains("exec") || u->contains("auth-provider"))
      return make_error(Errc::kInvalidArgument,
                        uw + ": exec and auth-provider plugins are not supported; use a token, "
                             "tokenFile or client certificate");
    c.token = str(*u, "token");
    c.token_file = resolve(base_dir, str(*u, "tokenFile"));
    if (u->contains("client-certificate-data")) {
      auto d = decode_field(*u, "client-certificate-data", uw);
      if (!d) return d.error();
      c.client_cert_pem = std::move(*d);
    } else {
      c.client_cert_file = resolve(base_dir, str(*u, "client-certificate"));
    }
    if (u->contains("client-key-data")) {
      auto d = decode_field(*u, "client-key-data", uw);
      if (!d) return d.error();
      c.client_key_pem = std::move(*d);
    } else {
      c.client_key_file = resolve(base_dir, str(*u, "client-key"));
    }
    bool has_cert = !c.client_cert_pem.empty() || !c.client_cert_file.empty();
    bool has_key = !c.client_key_pem.empty() || !c.client_key_file.empty();
    if (has_cert != has_key)
      return make_error(Errc::kInvalidArgument,
                        uw + ": client certificate and client key must be given together");
  }
  return c;
}

Result<ClusterConfig> load_kubeconfig(const std::string& path, const std::string& context) {
  auto text = read_text_file(path);
  if (!text) return text.error().wrap("kubeconfig");
  auto c = parse_kubeconfig(*text, dir_of(path), context);
  if (!c) return c.error().wrap("kubeconfig " + path);
  return c;
}

Result<ClusterConfig> load_cluster_config(const ConfigOptions& o) {
  if (!o.kubeconfig.empty()) return load_kubeconfig(o.kubeconfig, o.context);
  if (!o.in_cluster.host.empty() || std::getenv("KUBERNETES_SERVICE_HOST"))
    return in_cluster_config(o.in_cluster);
  if (const char* kc = std::getenv("KUBECONFIG"); kc && *kc) {
    std::string first(kc);
    first = first.substr(0, first.find(':'));
    return load_kubeconfig(first, o.context);
  }
  if (const char* home = std::getenv("HOME"); home && *home) {
    std::string p = std::string(home) + "/.kube/config";
    if (file_exists(p)) return load_kubeconfig(p, o.context);
  }
  return make_error(Errc::kNotFound,
                    "no Kubernetes configuration: not in a cluster, no --kubeconfig, no "
                    "$KUBECONFIG and no ~/.kube/config");
}

}  // namespace warren::controller::k8s
