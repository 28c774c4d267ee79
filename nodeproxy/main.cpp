// warren-node: the per-node HBONE tunnel proxy.
#include <CLI/CLI.hpp>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <csignal>

#include "loader.h"
#include "node.h"
#include "warren/h2_conn.h"
#include "warren/log.h"
#include "warren/tcp.h"

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
      "15021 /healthz/ready. Addresses come from the config's \"listeners\".\n\n"
      "In-pod mode (\"capture\": {\"mode\": \"inpod\"}) loads eBPF programs that redirect the\n"
      "traffic of enrolled pods (namespace label warren.io/dataplane-mode=enabled) to\n"
      "listeners warren-node opens inside each pod's netns (15001 outbound, 15006 plaintext\n"
      "inbound, 15008 HBONE). Programs and maps stay pinned under /sys/fs/bpf/warren/<node>\n"
      "across restarts (connections fail closed while warren-node is down);\n"
      "--uninstall removes them."};
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
  app.add_option("--controller", opts.controller_address,
                 "Get configuration and certificates from warren-controller's push server at\n"
                 "IP:port or NAME:port (15012; a name such as warren-controller.warren-system.svc is\n"
                 "resolved before every connection attempt) instead of the config file's\n"
                 "workloads/services/policies and certificates; the file then only gives the node,\n"
                 "listeners and capture")
      ->option_text("ADDR");
  app.add_option("--controller-token", opts.controller_token_file,
                 "File holding the bearer token presented to the controller (a bootstrap token "
                 "locally, the service account token in Kubernetes)")
      ->option_text("FILE");
  app.add_option("--controller-ca", opts.controller_ca_file,
                 "PEM roots the controller's certificate must chain to")
      ->option_text("FILE");
  bool uninstall = false;
  app.add_flag("--uninstall", uninstall,
               "Detach the eBPF capture of this node (pins under the config's capture.bpfPinDir) "
               "and exit; pods' traffic then flows without the mesh");
  CLI11_PARSE(app, argc, argv);

  warren::log::init(level);
  if (uninstall) {
    auto snap = warren::config::load_file(opts.config_path);
    if (!snap) {
      spdlog::error("{}", snap.error().message);
      return 1;
    }
    const auto& pin = (*snap)->capture.pin_dir;
    if (auto r = warren::bpf::Capture::uninstall(pin); !r) {
      spdlog::error("uninstall {}: {}", pin, r.error().message);
      return 1;
    }
    spdlog::info("eBPF capture under {} removed", pin);
    return 0;
  }
  std::signal(SIGPIPE, SIG_IGN);
  uv_loop_t* loop = uv_default_loop();
  // One write per connection per loop iteration (HTTP/1.1 through the
  // waypoint path: 3.1 -> 2.2 read/write syscalls per request in each node).
  // The 15-50 ms stalls once blamed on it at stop 14 were the bench's
  // SCHED_FIFO latency run: they hit the direct path too (bench/README).
  warren::net::WriteBatch::per_iteration(loop);
  warren::h2::H2Conn::keep_tls_buffers_while_busy(loop);
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
