// The push server on loopback for tests: a CA, a model, bootstrap tokens and
// a PushServer; warren-node's client connects with client_opts().
#pragma once

#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "ca.h"
#include "loop_util.h"
#include "model.h"
#include "push_server.h"
#include "warren/controller_client.h"
#include "warren/csr.h"
#include "warren/push_proto.h"

namespace push_fixture {

using namespace warren;
using nlohmann::json;

inline const char* kToken = "0123456789abcdef-n1";

inline json pod(const std::string& name, const std::string& node, const std::string& ip,
                const std::string& sa = "default") {
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata", {{"name", name}, {"namespace", "shop"}, {"uid", "uid-" + name},
                        {"labels", {{"app", name}}}}},
          {"spec", {{"nodeName", node}, {"serviceAccountName", sa}}},
          {"status", {{"phase", "Running"}, {"podIP", ip}}}};
}

inline bool run_until(uv_loop_t* loop, const std::function<bool()>& cond, int ms = 5000) {
  return warren::test::spin(loop, cond, ms);
}

struct Fixture {
  uv_loop_t loop;
  std::string dir;
  std::unique_ptr<controller::CertificateAuthority> ca;
  std::unique_ptr<controller::Model> model;
  std::unique_ptr<controller::TokenFileAuthenticator> auth;
  std::unique_ptr<controller::PushServer> push;
  metrics::Registry reg;

  explicit Fixture(size_t max_bulk = 16) {
    uv_loop_init(&loop);
    dir = std::filesystem::temp_directory_path() / ("warren-push-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/tokens") << kToken << " n1\n" << kToken << "-n2 n2\n" << kToken << "-n3 n3\n"
                                   << kToken << "-any\n" << kToken << "-wp waypoint:shop/wp\n";
    controller::CaOptions co;
    co.state_dir = dir + "/ca";
    auto c = controller::CertificateAuthority::create(co);
    REQUIRE(c);
    ca = std::make_unique<controller::CertificateAuthority>(std::move(*c));
    std::ofstream(dir + "/root.pem") << ca->trust_bundle_pem();
    std::ofstream(dir + "/token") << kToken << "\n";
    model = std::make_unique<controller::Model>(controller::ModelOptions{});
    auth = std::make_unique<controller::TokenFileAuthenticator>(dir + "/tokens");
    REQUIRE(auth->load());
    // The controller's serving certificate.
    auto key = certs::generate_p256_key();
    std::string id = "spiffe://cluster.local/ns/warren-system/sa/warren-controller";
    auto csr = certs::make_csr_pem(key->get(), id);
    auto chain = ca->sign(*csr, id);
    REQUIRE(chain);
    auto cs = certs::read_certs_pem(*chain);
    certs::Identity ident;
    ident.spiffe_id = id;
    ident.leaf = std::move((*cs)[0]);
    ident.key = std::move(*key);
    auto ctx = tls::make_push_server_ctx(ident);
    REQUIRE(ctx);
    controller::PushOptions po;
    po.listen = *SockAddr::parse("127.0.0.1:0");
    po.max_bulk_streams = max_bulk;
    push = std::make_unique<controller::PushServer>(
        &loop, *model, *auth,
        [this](const std::string& csr, const std::string& id) { return ca->sign(csr, id); },
        std::move(*ctx), reg, po);
    push->set_trust_bundle(ca->trust_bundle_pem());
    REQUIRE(push->start());
  }
  ~Fixture() {
    push->stop();
    for (int i = 0; i < 20; ++i) uv_run(&loop, UV_RUN_NOWAIT);
    push.reset();
    for (int i = 0; i < 20; ++i) uv_run(&loop, UV_RUN_NOWAIT);
    uv_loop_close(&loop);
    std::filesystem::remove_all(dir);
  }
  void publish() { push->publish(model->flush()); }
  push::ControllerClientOptions client_opts(const std::string& node = "n1") {
    push::ControllerClientOptions o;
    o.address = push->local();
    o.node = node;
    o.token_file = dir + "/token";
    o.ca_file = dir + "/root.pem";
    o.backoff_min_ms = 20;
    o.backoff_max_ms = 100;
    return o;
  }
};

struct Recorder {
  std::vector<std::vector<std::string>> changes;
  std::map<std::string, std::string> reject;  // ids to refuse
  push::ControllerClient::ApplyFn fn() {
    return [this](push::ResourceMap& res, const std::vector<std::string>& changed) {
      changes.push_back(changed);
      std::map<std::string, std::string> out;
      for (const auto& [id, why] : reject)
        if (res.count(id)) out[id] = why;
      return out;
    };
  }
};


}  // namespace push_fixture
