// warren-node: the per-node HBONE tunnel proxy.
#include <CLI/CLI.hpp>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <csignal>

#include "node.h"
#include "warren/log.h"

int main(int argc, char** argv) {
  CLI::App app{
      "warren-node: the per-node tunnel proxy of the Warren mesh.\n"
      "Carries workload traffic over HBONE (mutual TLS 1.3 + HTTP/2 CONNECT, wire compatible\n"
      "with Istio's ztunnel), enforces L4 AuthorizationPolicy and PeerAuthentication, and\n"
      "serves Prometheus metrics. In standalone mode it reads its configuration from a file\n"
      "that it re-reads on change or SIGHUP; a bad file is rejected and the last good one\n"
      "keeps serving.\n\n"
      "Ports: 15080 SOCKS5 entry, 15008 HBONE (on each local workload IP), 15000 admin\n"
      "(/config_dump, /healthz/ready, /logging?level=, /quitquitquit), 15020 /metrics,\n"
      "15021 /healthz/ready. Addresses come from the config's \"listeners\"."};
  warren::node::NodeOptions opts;
  std::string level = "info";
  app.add_option("-c,--config", opts.config_path, "Node configuration file (JSON or YAML)")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--access-log", opts.access_log,
                 "Where to write the JSON access log: a file, \"-\" for stdout, \"\" for none")
      ->capture_default_str();
  app.add_option("--log-level", level, "trace, debug, info, warn, error, off")
      ->capture_default_str();
  app.add_option("--connect-timeout-ms", opts.connect_timeout_ms,
                 "Timeout for upstream TCP connects and HBONE dials")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  warren::log::init(level);
  std::signal(SIGPIPE, SIG_IGN);
  uv_loop_t* loop = uv_default_loop();
  warren::node::Node node(loop, opts);
  auto r = node.start();
  if (!r.ok()) {
    spdlog::error("warren-node failed to start: {}", r.error().message);
    return 1;
  }
  // SIGTERM/SIGINT stop the node (see Node::start); the loop then runs out.
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}
