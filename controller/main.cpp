// warren-controller: the cluster model, the CA and configuration push.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <csignal>

#include "app.h"
#include "warren/log.h"

namespace {

struct SigHandler {
  uv_signal_t term, intr;
  warren::controller::App* app;
};
SigHandler g_sig;

bool parse_addr(const std::string& s, warren::SockAddr* out) {
  auto a = warren::SockAddr::parse(s);
  if (!a) return false;
  *out = *a;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "warren-controller: turns what the cluster declares (namespaces, pods, services and Istio\n"
      "policies) into each warren-node's configuration, runs the certificate authority that\n"
      "issues workload certificates, and pushes both to every node.\n\n"
      "Sources (one of):\n"
      "  --manifests DIR   a directory of Kubernetes YAML (multi-document files, any nesting),\n"
      "                    watched for changes; Pods may name their node (spec.nodeName) and IP\n"
      "                    (status.podIP). Nodes authenticate with --bootstrap-tokens.\n"
      "  --kubeconfig FILE or --in-cluster   the Kubernetes API (list + watch every kind);\n"
      "                    nodes authenticate with their service account token (TokenReview).\n\n"
      "Waypoints (warren-waypoint --controller) subscribe too: they get what nodes get plus the\n"
      "VirtualServices, DestinationRules, HTTPRoutes and RequestAuthentications of their namespace\n"
      "and of the root namespace, and a certificate for the service account their pods run as.\n\n"
      "An invalid object rejects only itself (the message names the file, the object and the\n"
      "field) and its last good version stays in force.\n\n"
      "Ports: 15012 push and CA (HTTP/2 over TLS), 15014 monitoring: /metrics, /debug/nodes,\n"
      "/debug/rejected, /debug/resources?prefix=, /healthz/ready."};
  warren::controller::AppOptions o;
  std::string listen = o.listen.to_string(), monitoring = o.monitoring.to_string();
  std::string level = "info";
  std::string ttl = "24h";
  auto* src = app.add_option_group("source");
  src->add_option("--manifests", o.manifests_dir, "Directory of manifests (local mode)")
      ->check(CLI::ExistingDirectory);
  src->add_option("--kubeconfig", o.kubeconfig, "kubeconfig file (Kubernetes mode)")
      ->check(CLI::ExistingFile);
  src->add_flag("--in-cluster", o.in_cluster,
                "Use the pod's service account (KUBERNETES_SERVICE_HOST/PORT)");
  src->require_option(1);
  app.add_option("--listen", listen, "Push server address")->capture_default_str();
  app.add_option("--monitoring", monitoring, "Monitoring server address")->capture_default_str();
  app.add_option("--state-dir", o.state_dir,
                 "Where a generated root CA is kept and root-cert.pem (the trust bundle nodes use "
                 "as --controller-ca) is written")
      ->capture_default_str();
  app.add_option("--trust-domain", o.trust_domain)->capture_default_str();
  app.add_option("--root-namespace", o.root_namespace,
                 "Namespace whose policies apply mesh-wide")
      ->capture_default_str();
  app.add_option("--ca-cert", o.ca_cert, "Signing certificate (a root or an intermediate)");
  app.add_option("--ca-key", o.ca_key, "Its private key");
  app.add_option("--ca-chain", o.ca_chain, "Intermediates up to the root, when --ca-cert is one");
  app.add_option("--ca-extra-roots", o.ca_extra_roots,
                 "More roots to trust (the old root during a root rotation)");
  app.add_option("--ca-secret", o.ca_secret,
                 "Kubernetes mode: NAMESPACE/NAME of a Secret holding the signing CA, with Istio's "
                 "cacerts keys (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem) or "
                 "tls.crt, tls.key, ca.crt; re-read every 30 s, a change that loads replaces the "
                 "CA and is pushed to the nodes, every root listed stays trusted")
      ->excludes("--ca-cert")
      ->excludes("--ca-key");
  app.add_option("--cert-ttl", ttl, "Workload certificate lifetime (s, m, h suffixes)")
      ->capture_default_str();
  app.add_option("--bootstrap-tokens", o.bootstrap_tokens,
                 "Local mode: file of \"<token> [<principal>]\" lines nodes and waypoints authenticate "
                 "with; the principal is a node name or waypoint:<namespace>/<gateway> (none: any node)");
  app.add_option("--waypoint-launcher", o.waypoint_launcher,
                 "Local mode: a command run as \"CMD up|down <namespace> <gateway> <serviceAccount>\" when a\n"
                 "Gateway of class warren-waypoint appears or goes; it starts (stops) a warren-waypoint\n"
                 "and writes (removes) its Pod manifest (label gateway.networking.k8s.io/gateway-name,\n"
                 "podIP, nodeName) in the manifests directory")
      ->option_text("CMD");
  app.add_option("--waypoint-template", o.waypoint_template,
                 "Kubernetes mode: the objects to create for each Gateway of class warren-waypoint\n"
                 "(charts/warren/files/waypoint.yaml: ServiceAccount, Deployment, Service, owned by the\n"
                 "Gateway); the leader applies them. Without it waypoints are deployed by someone else")
      ->option_text("FILE");
  app.add_option("--waypoint-image", o.waypoint_image, "Kubernetes mode: the waypoint's image (${IMAGE})")
      ->capture_default_str();
  app.add_option("--waypoint-controller-address", o.waypoint_controller_address,
                 "Kubernetes mode: where waypoints reach this controller (${CONTROLLER})")
      ->capture_default_str();
  app.add_option("--log-level", level, "trace, debug, info, warn, error, off")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  warren::log::init(level);
  if (!parse_addr(listen, &o.listen) || !parse_addr(monitoring, &o.monitoring)) {
    spdlog::error("--listen and --monitoring take IP:port");
    return 2;
  }
  {
    char unit = ttl.empty() ? 's' : ttl.back();
    long n = std::atol(ttl.c_str());
    long mult = unit == 'h' ? 3600 : unit == 'm' ? 60 : 1;
    if (n <= 0) {
      spdlog::error("--cert-ttl \"{}\" is not a duration", ttl);
      return 2;
    }
    o.cert_ttl = std::chrono::seconds(n * mult);
  }
  std::signal(SIGPIPE, SIG_IGN);
  uv_loop_t* loop = uv_default_loop();
  warren::controller::App ctl(loop, o);
  if (auto r = ctl.start(); !r) {
    spdlog::error("warren-controller failed to start: {}", r.error().message);
    return 1;
  }
  g_sig.app = &ctl;
  for (auto* s : {&g_sig.term, &g_sig.intr}) {
    uv_signal_init(loop, s);
    uv_signal_start(
        s,
        [](uv_signal_t*, int signum) {
          spdlog::info("signal {}: shutting down", signum);
          g_sig.app->stop();
          for (auto* h : {&g_sig.term, &g_sig.intr})
            if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(h)))
              uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
        },
        s == &g_sig.term ? SIGTERM : SIGINT);
  }
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}
