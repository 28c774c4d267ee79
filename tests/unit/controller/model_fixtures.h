// Kubernetes objects and helpers for the model, translation and local source tests.
#pragma once

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "model.h"
#include "source.h"
#include "warren/config.h"
#include "warren/push_proto.h"

namespace fixtures {

using nlohmann::json;
using warren::controller::ObjectKey;

inline json pod(const std::string& ns, const std::string& name, const std::string& ip, json labels = json::object(),
                const std::string& node = "node-a", const std::string& sa = "") {
  json p = {{"apiVersion", "v1"},
            {"kind", "Pod"},
            {"metadata", {{"name", name}, {"namespace", ns}, {"uid", "uid-" + ns + "-" + name}, {"labels", labels}}},
            {"spec", {{"nodeName", node}}},
            {"status", {{"phase", "Running"}, {"podIP", ip}, {"podIPs", json::array({json{{"ip", ip}}})}}}};
  if (!sa.empty()) p["spec"]["serviceAccountName"] = sa;
  if (ip.empty()) p["status"].erase("podIP"), p["status"].erase("podIPs");
  return p;
}

inline json service(const std::string& ns, const std::string& name, const std::string& vip, json selector,
                    json ports = json::array({{{"port", 80}, {"targetPort", 8080}, {"name", "http"}}})) {
  json s = {{"apiVersion", "v1"},
            {"kind", "Service"},
            {"metadata", {{"name", name}, {"namespace", ns}}},
            {"spec", {{"clusterIP", vip}, {"ports", ports}}}};
  if (!selector.is_null()) s["spec"]["selector"] = selector;
  return s;
}

// An EndpointSlice of `svc` listing pods by uid (ready unless listed in not_ready).
inline json slice(const std::string& ns, const std::string& name, const std::string& svc,
                  const std::vector<std::string>& uids, const std::vector<std::string>& not_ready = {}) {
  json eps = json::array();
  int i = 0;
  auto add = [&](const std::string& uid, bool ready) {
    eps.push_back({{"addresses", {"10.1.0." + std::to_string(++i)}},
                   {"conditions", {{"ready", ready}}},
                   {"targetRef", {{"kind", "Pod"}, {"name", uid}, {"namespace", ns}, {"uid", uid}}}});
  };
  for (const auto& u : uids) add(u, true);
  for (const auto& u : not_ready) add(u, false);
  return {{"apiVersion", "discovery.k8s.io/v1"},
          {"kind", "EndpointSlice"},
          {"metadata", {{"name", name}, {"namespace", ns}, {"labels", {{"kubernetes.io/service-name", svc}}}}},
          {"addressType", "IPv4"},
          {"endpoints", eps},
          {"ports", json::array({{{"port", 8080}, {"name", "http"}}})}};
}

inline json ns_object(const std::string& name, json labels = json::object()) {
  return {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", name}, {"labels", labels}}}};
}

inline json policy(const std::string& ns, const std::string& name, json spec) {
  return {{"apiVersion", "security.istio.io/v1"},
          {"kind", "AuthorizationPolicy"},
          {"metadata", {{"name", name}, {"namespace", ns}}},
          {"spec", spec}};
}

// Records what the model says about each object.
struct Recorder : warren::controller::ValidationListener {
  std::vector<std::string> rejections;
  std::vector<ObjectKey> accepted_keys;
  void rejected(const ObjectKey&, const std::string&, const std::string& message) override {
    rejections.push_back(message);
  }
  void accepted(const ObjectKey& key, const std::string&) override { accepted_keys.push_back(key); }
};

// A node's whole config, assembled the way the push server does: bootstrap +
// every resource of the kinds nodes receive, in id order.
inline json node_config(const warren::controller::Model& m, const std::string& node = "node-a") {
  json doc = {{"node", {{"name", node}, {"address", "127.0.0.1"}}},
              {"certificates", {{"rootCert", "certs/root-cert.pem"}, {"dir", "certs"}}},
              {"workloads", json::array()},
              {"services", json::array()},
              {"policies", json::array()},
              {"peerAuthentications", json::array()},
              {"namespaces", json::array()}};
  for (const auto& [id, body] : m.resources()) {
    if (!warren::push::node_kind(warren::push::resource_kind(id))) continue;
    std::string type = id.substr(0, id.find('/'));
    const char* list = type == "workload"   ? "workloads"
                       : type == "service"  ? "services"
                       : type == "policy"   ? "policies"
                       : type == "peerauth" ? "peerAuthentications"
                                            : "namespaces";
    doc[list].push_back(*body);
  }
  return doc;
}

inline std::vector<std::string> ids(const warren::controller::Delta& d) {
  std::vector<std::string> out;
  for (const auto& [id, body] : d.upserts) out.push_back(id);
  return out;
}

}  // namespace fixtures
