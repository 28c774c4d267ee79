// warren-waypoint: the L7 proxy of a namespace or a service account.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdlib>

#include "proxy.h"
#include "warren/h2_conn.h"
#include "warren/log.h"
#include "warren/tcp.h"

int main(int argc, char** argv) {
  CLI::App app{
      "warren-waypoint: the L7 proxy of the Warren mesh for a namespace or a service account.\n"
      "Nodes send it the traffic of services and pods labelled warren.io/use-waypoint=<name>\n"
      "over HBONE (mutual TLS 1.3 + HTTP/2 CONNECT, port 15008 on its address). It parses\n"
      "HTTP/1.1 and HTTP/2 (gRPC included: trailers, grpc-status) inside each tunnel,\n"
      "normalises the path, applies RequestAuthentication and AuthorizationPolicy, routes by\n"
      "VirtualService and HTTPRoute (weights, subsets, rewrites, redirects, header edits,\n"
      "timeouts, retries, fault injection), and forwards over HBONE with its own identity\n"
      "to the chosen pod (HTTP/2 clients: HTTP/2 upstream). Other protocols are carried\n"
      "opaquely to one endpoint of the service.\n\n"
      "Configuration, one of:\n"
      "  -c FILE           a warren-node config plus \"waypoint\" {name, namespace,\n"
      "                    serviceAccount, address, pathNormalization} and the arrays\n"
      "                    \"virtualServices\", \"destinationRules\", \"httpRoutes\" (the Kubernetes\n"
      "                    objects as written); certificates from its certificates.dir. Re-read\n"
      "                    on change and on SIGHUP; a bad file is rejected, the last good one stays.\n"
      "  --controller ADDR with --waypoint NS/GATEWAY and --pod NAME: warren-controller pushes the\n"
      "                    mesh, the routing objects of the namespace and of the root namespace,\n"
      "                    and this pod's address and service account; its CA signs the\n"
      "                    waypoint's certificate (renewed at half-life). A bad object is\n"
      "                    rejected alone, the rest applies.\n\n"
      "Admin (from the config's listeners): /config_dump, /healthz/ready, /stats/prometheus,\n"
      "POST /quitquitquit; /metrics with istio_requests_total and friends (reporter=\"waypoint\")."};
  warren::waypoint::ProxyOptions opts;
  std::string level = "info";
  auto* cfg = app.add_option_group("configuration");
  cfg->add_option("-c,--config", opts.config_path, "Waypoint configuration file (JSON or YAML)")
      ->check(CLI::ExistingFile);
  cfg->add_option("--controller", opts.controller.address,
                  "Get configuration and the certificate from warren-controller's push server at\n"
                  "IP:port or NAME:port (15012; a name is resolved before every connection attempt)")
      ->option_text("ADDR");
  cfg->require_option(1);
  app.add_option("--controller-token", opts.controller.token_file,
                 "File holding the bearer token presented to the controller (a bootstrap token "
                 "\"<token> waypoint:<ns>/<gateway>\" locally, the pod's service account token in Kubernetes)")
      ->option_text("FILE");
  app.add_option("--controller-ca", opts.controller.ca_file,
                 "PEM roots the controller's certificate must chain to")
      ->option_text("FILE");
  std::string waypoint;
  app.add_option("--waypoint", waypoint, "Controller mode: the Gateway this waypoint implements")
      ->option_text("NS/GATEWAY");
  opts.controller.pod = std::getenv("POD_NAME") ? std::getenv("POD_NAME") : "";
  app.add_option("--pod", opts.controller.pod, "Controller mode: the pod this waypoint runs in (default $POD_NAME)")
      ->option_text("NAME");
  app.add_option("--trust-domain", opts.controller.trust_domain, "Controller mode: the mesh's trust domain")
      ->capture_default_str();
  app.add_option("--root-namespace", opts.controller.root_namespace,
                 "Controller mode: the namespace whose policies apply mesh-wide")
      ->capture_default_str();
  app.add_option("--access-log", opts.access_log,
                 "Where to write the JSON access log (one request a line): a file, \"-\" for stdout, "
                 "\"\" for none")
      ->capture_default_str();
  app.add_option("--log-level", level, "trace, debug, info, warn, error, off")->capture_default_str();
  app.add_option("--connect-timeout-ms", opts.connect_timeout_ms, "Timeout for upstream HBONE dials")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  warren::log::init(level);
  if (!opts.controller.address.empty()) {
    auto slash = waypoint.find('/');
    if (slash == std::string::npos || slash == 0 || slash + 1 == waypoint.size()) {
      spdlog::error("--waypoint \"{}\": expected NAMESPACE/GATEWAY", waypoint);
      return 2;
    }
    opts.controller.waypoint_ns = waypoint.substr(0, slash);
    opts.controller.gateway = waypoint.substr(slash + 1);
  }
  std::signal(SIGPIPE, SIG_IGN);
  uv_loop_t* loop = uv_default_loop();
  warren::net::WriteBatch::per_iteration(loop);  // one write per HTTP/2 connection per loop iteration
  warren::h2::H2Conn::keep_tls_buffers_while_busy(loop);
  warren::waypoint::Proxy proxy(loop, opts);
  if (auto r = proxy.start(); !r.ok()) {
    spdlog::error("warren-waypoint failed to start: {}", r.error().message);
    return 1;
  }
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}
