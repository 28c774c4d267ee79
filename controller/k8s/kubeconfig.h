// Where the Kubernetes API is and how to authenticate to it: in-cluster
// configuration (the pod's service account) or a kubeconfig file.
//
//   ConfigOptions o;
//   o.kubeconfig = flag_kubeconfig;        // "" = automatic, see load_cluster_config
//   o.context = flag_context;              // "" = current-context
//   auto cfg = load_cluster_config(o);     // Result<ClusterConfig>
//
// In-cluster (in_cluster_config):
//   server  https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT
//           (IPv6 hosts bracketed)
//   token   /var/run/secrets/kubernetes.io/serviceaccount/token, kept as a
//           token *file*: the client re-reads it when it changes (bound tokens
//           are rotated by the kubelet) and after a 401
//   CA      /var/run/secrets/kubernetes.io/serviceaccount/ca.crt
//   namespace read from .../serviceaccount/namespace when present
// Every path and the host/port are fields of InClusterOptions so tests can
// point them at temporary files.
//
// Kubeconfig (load_kubeconfig): the context named by `context` or
// current-context; from its cluster: server, certificate-authority (a path,
// relative to the kubeconfig's directory) or certificate-authority-data
// (base64 PEM), insecure-skip-tls-verify, tls-server-name; from its user:
// token or tokenFile, client-certificate / client-key (paths) or
// client-certificate-data / client-key-data (base64 PEM). The context's
// namespace becomes default_namespace. Users with exec or auth-provider
// plugins are refused with a message saying so (no plugin support).
#pragma once

#include <string>

#include "warren/result.h"

namespace warren::controller::k8s {

struct ClusterConfig {
  std::string server;         // "https://10.96.0.1:443" (no trailing slash)
  std::string ca_file;        // PEM file; empty = ca_pem or the system store
  std::string ca_pem;         // PEM text (decoded certificate-authority-data)
  bool insecure = false;      // skip server certificate verification
  std::string tls_server_name;  // expected name in the server certificate (SNI)
  std::string token;          // static bearer token
  std::string token_file;     // bearer token file, re-read when it changes (wins over token)
  std::string client_cert_file, client_cert_pem;
  std::string client_key_file, client_key_pem;
  std::string default_namespace;  // the context's or the service account's namespace
};

struct InClusterOptions {
  // Empty: from the environment (KUBERNETES_SERVICE_HOST / _PORT).
  std::string host, port;
  std::string token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token";
  std::string ca_file = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
  std::string namespace_file = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
};

// Fails (kNotFound) when the host/port are unknown or the token file is missing.
Result<ClusterConfig> in_cluster_config(const InClusterOptions& o = {});

// Reads a kubeconfig file; `context` empty = its current-context.
Result<ClusterConfig> load_kubeconfig(const std::string& path, const std::string& context = {});
// The same from text; relative paths resolve against `base_dir`.
Result<ClusterConfig> parse_kubeconfig(const std::string& text, const std::string& base_dir,
                                       const std::string& context = {});

struct ConfigOptions {
  std::string kubeconfig;  // explicit file
  std::string context;
  InClusterOptions in_cluster;
};

// Picks the configuration the way kubectl and client-go do:
//   1. o.kubeconfig when set;
//   2. in-cluster when KUBERNETES_SERVICE_HOST is set (or o.in_cluster.host);
//   3. $KUBECONFIG (its first path when it lists several);
//   4. $HOME/.kube/config.
Result<ClusterConfig> load_cluster_config(const ConfigOptions& o);

}  // namespace warren::controller::k8s
