// warren-waypoint: the L7 proxy of a namespace or a service account.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <csignal>

#include "proxy.h"
#include "warren/log.h"

int main(int argc, char** argv) {
  CLI::App app{
      "warren-waypoint: the L7 proxy of the Warren mesh for a namespace or a service account.\n"
      "Nodes send it the traffic of services and pods labelled warren.io/use-waypoint=<name>\n"
      "over HBONE (mutual TLS 1.3 + HTTP/2 CONNECT, port 15008 on its address). It parses\n"
      "HTTP/1.1 inside each tunnel, normalises the path, routes by VirtualService and\n"
      "HTTPRoute (weights, subsets, rewrites, redirects, header edits, timeouts, retries,\n"
      "fault injection), and forwards over HBONE with its own identity to the chosen pod.\n"
      "Other protocols are carried opaquely to one endpoint of the service.\n\n"
      "The configuration file is a warren-node config plus \"waypoint\" {name, namespace,\n"
      "serviceAccount, address, pathNormalization} and the arrays \"virtualServices\",\n"
      "\"destinationRules\", \"httpRoutes\" (the Kubernetes objects as written). It is\n"
      "re-read on change and on SIGHUP; a bad file is rejected and the last good one stays.\n\n"
      "Admin (from the config's listeners): /config_dump, /healthz/ready, /stats/prometheus,\n"
      "POST /quitquitquit; /metrics with istio_requests_total and friends (reporter=\"waypoint\")."};
  warren::waypoint::ProxyOptions opts;
  std::string level = "info";
  app.add_option("-c,--config", opts.config_path, "Waypoint configuration file (JSON or YAML)")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--access-log", opts.access_log,
                 "Where to write the JSON access log (one request a line): a file, \"-\" for stdout, "
                 "\"\" for none")
      ->capture_default_str();
  app.add_option("--log-level", level, "trace, debug, info, warn, error, off")->capture_default_str();
  app.add_option("--connect-timeout-ms", opts.connect_timeout_ms, "Timeout for upstream HBONE dials")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  warren::log::init(level);
  std::signal(SIGPIPE, SIG_IGN);
  uv_loop_t* loop = uv_default_loop();
  warren::waypoint::Proxy proxy(loop, opts);
  if (auto r = proxy.start(); !r.ok()) {
    spdlog::error("warren-waypoint failed to start: {}", r.error().message);
    return 1;
  }
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}
