// The two-node mesh of fixture.h with a waypoint in front of service "echo":
//   waypoint pod "waypoint" (default/waypoint, Gateway "waypoint") at .30 on node-b,
//   echo-v1 (.20, version v1) and echo-v2 (.21, version v2) behind it, HTTP backends on :8080,
//   service echo VIP .100:80 -> 8080, labelled to use the waypoint.
// Clients reach it through node-a's SOCKS5 entry (the node sends them to the waypoint over
// HBONE); the routing objects are the test's.
#pragma once

#include <catch2/catch.hpp>
#include <cstdlib>
#include <memory>

#include "fixture.h"
#include "http_backend.h"

namespace warren::e2e {

struct WaypointMesh {
  StdMesh s;
  std::string waypoint_ip;
  nlohmann::json routing = nlohmann::json::object();  // virtualServices, destinationRules, httpRoutes
  nlohmann::json tracing;                              // the waypoint's "tracing" section, if any
  std::unique_ptr<Process> wp;

  WaypointMesh() {
    waypoint_ip = s.m.ip(30);
    s.m.add_workload({"waypoint-1", "waypoint", "default", "waypoint", "node-b", waypoint_ip, "HBONE",
                      {{"gateway.networking.k8s.io/gateway-name", "waypoint"}}});
    s.m.set_workload_field("waypoint-1", "gateway", "waypoint");
    s.m.set_service_field("echo", "waypoint", "waypoint");
    for (const char* uid : {"echo-1", "echo-2"}) s.m.set_workload_field(uid, "waypoint", "waypoint");
  }
  // The echo port's appProtocol (before start): "http2" makes the waypoint
  // speak HTTP/2 to the pods, as Istio does for an HTTP/2 or gRPC port; an
  // unnamed port gets HTTP/1.1 whatever the client speaks.
  void echo_app_protocol(const std::string& p) {
    s.m.set_service_field("echo", "ports", nlohmann::json::array({{{"port", 80}, {"targetPort", 8080}, {"appProtocol", p}}}));
  }
  std::string config_path() const { return s.m.dir() / "waypoint.json"; }
  std::string access_log() const { return s.m.dir() / "waypoint-access.log"; }

  nlohmann::json waypoint_config() const {
    auto j = s.m.config_for('b');
    j.erase("node");
    j["listeners"] = {{"admin", waypoint_ip + ":15000"},
                      {"metrics", waypoint_ip + ":15020"},
                      {"readiness", waypoint_ip + ":15021"}};
    j["waypoint"] = {{"name", "waypoint"}, {"namespace", "default"}, {"serviceAccount", "waypoint"},
                     {"address", waypoint_ip}, {"requestHeadersTimeout", "1s"}};
    if (!tracing.is_null()) j["waypoint"]["tracing"] = tracing;
    for (auto& [k, v] : routing.items()) j[k] = v;
    return j;
  }

  void start() {
    s.start();
    write_file_atomic(config_path(), waypoint_config().dump(2));
    wp = std::make_unique<Process>(
        std::vector<std::string>{bin("/waypoint/warren-waypoint"), "-c", config_path(), "--access-log",
                                 access_log(), "--log-level", "debug"},
        s.m.dir() / "waypoint.log");
    bool ready = wait_until(
        [&] { return http_get(waypoint_ip, 15021, "/healthz/ready").status == 200 || !wp->alive(); }, 20s);
    if (!ready || !wp->alive()) throw std::runtime_error("waypoint did not become ready:\n" + wp->log());
  }

  // Rewrites the routing objects and waits until the waypoint reloaded.
  void update_routing() {
    auto before = reloads();
    write_file_atomic(config_path(), waypoint_config().dump(2));
    if (!wait_until([&] { return reloads() > before; }, 10s, 100ms))
      throw std::runtime_error("waypoint did not reload:\n" + wp->log());
  }

  double reloads() {
    auto r = http_get(waypoint_ip, 15020, "/metrics");
    return metric_sum(parse_metrics(r.body), "warren_waypoint_config_reloads_total", {{"result", "success"}});
  }

  std::vector<Sample> metrics() { return parse_metrics(http_get(waypoint_ip, 15020, "/metrics").body); }

  // A keep-alive HTTP connection from the client pod to the service VIP.
  HttpClientConn connect() {
    auto r = s.m.socks(s.client, s.vip, 80);
    if (r.reply != 0) throw std::runtime_error("SOCKS5 to the echo VIP refused: " + std::to_string(r.reply));
    return HttpClientConn(std::move(r.fd));
  }

  ~WaypointMesh() {
    if (!wp) return;
    bool was_alive = wp->alive();
    wp->stop();
    std::string log = wp->log();
    if (const char* keep = std::getenv("WARREN_E2E_WAYPOINT_LOG")) {
      write_file_atomic(keep, log);
      write_file_atomic(std::string(keep) + ".access", read_file(access_log()));
    }
    bool bad = (!was_alive && wp->exit_code().value_or(0) != 0) ||
               log.find("ERROR: AddressSanitizer") != std::string::npos ||
               log.find("runtime error:") != std::string::npos;
    if (bad && std::uncaught_exceptions() == 0) {
      std::string tail = log.size() > 6000 ? log.substr(log.size() - 6000) : log;
      FAIL_CHECK("warren-waypoint crashed or a sanitizer complained:\n" << tail);
    }
  }
};

inline nlohmann::json vs(const std::string& name, nlohmann::json http) {
  return {{"apiVersion", "networking.istio.io/v1"},
          {"kind", "VirtualService"},
          {"metadata", {{"name", name}, {"namespace", "default"}}},
          {"spec", {{"hosts", {"echo"}}, {"http", std::move(http)}}}};
}

inline nlohmann::json echo_subsets() {
  return nlohmann::json::parse(R"({
    "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
    "metadata": {"name": "echo", "namespace": "default"},
    "spec": {"host": "echo", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                         {"name": "v2", "labels": {"version": "v2"}}]}})");
}

}  // namespace warren::e2e
