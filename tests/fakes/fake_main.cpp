// warren-fake-apiserver: the tests' fake Kubernetes API server as a program,
// for manual runs and the demo.
//
//   warren-fake-apiserver --listen 127.0.0.1:6443 --kubeconfig-out /tmp/kc
//                         --load tests/fakes/testdata
//   warren-controller --kubeconfig /tmp/kc ...
//   kubectl --kubeconfig /tmp/kc get pods -A        (works for get/list/watch)
#include <CLI/CLI.hpp>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "fake_apiserver.h"
#include "warren/config.h"

using warren::fakes::FakeApiServer;

namespace {

std::vector<nlohmann::json> read_objects(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json doc;
  if (path.ends_with(".yaml") || path.ends_with(".yml")) {
    auto r = warren::config::yaml_to_json(ss.str());
    if (!r) throw std::runtime_error(path + ": " + r.error().message);
    doc = std::move(*r);
  } else {
    doc = nlohmann::json::parse(ss.str());
  }
  if (doc.contains("items") && doc["items"].is_array()) {
    std::string kind = doc.value("kind", "");
    std::vector<nlohmann::json> out;
    for (auto& it : doc["items"]) {
      if (!it.contains("kind") && kind.ends_with("List")) it["kind"] = kind.substr(0, kind.size() - 4);
      out.push_back(it);
    }
    return out;
  }
  return {doc};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Fake Kubernetes API server (list/watch/leases/status/TokenReview) for Warren"};
  warren::fakes::FakeApiServerOptions o;
  o.listen = "127.0.0.1:6443";
  std::vector<std::string> tokens, loads, absent, reviews;
  std::string kubeconfig_out;
  bool plain = false;
  int bookmark_ms = 0, max_watch_s = 0;
  app.add_option("--listen", o.listen, "address:port to listen on")->capture_default_str();
  app.add_flag("--plain-http", plain, "serve plain HTTP instead of HTTPS");
  app.add_option("--token", tokens, "accepted bearer token (repeatable; default test-token)");
  app.add_option("--kubeconfig-out", kubeconfig_out, "write a kubeconfig for this server here");
  app.add_option("--load", loads, "JSON/YAML object or List files, or directories of them");
  app.add_option("--absent", absent, "kind to serve as not installed (404), repeatable");
  app.add_option("--token-review", reviews,
                 "TOKEN=USERNAME[@NODE]: TokenReview answers for TOKEN (repeatable)");
  app.add_option("--bookmark-interval-ms", bookmark_ms, "periodic bookmarks (0: off)");
  app.add_option("--max-watch-seconds", max_watch_s, "end every watch after this long (0: off)");
  CLI11_PARSE(app, argc, argv);

  o.tls = !plain;
  if (!tokens.empty()) o.tokens = tokens;
  o.bookmark_interval = std::chrono::milliseconds(bookmark_ms);
  o.max_watch = std::chrono::seconds(max_watch_s);

  // Block the signals before the server thread starts, then wait for one.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  auto api = FakeApiServer::start(o);
  if (!api) {
    std::cerr << "warren-fake-apiserver: " << api.error().to_string() << "\n";
    return 1;
  }
  FakeApiServer& s = **api;
  for (const auto& k : absent) s.set_served(k, false);
  for (const auto& r : reviews) {
    size_t eq = r.find('=');
    if (eq == std::string::npos) continue;
    std::string user = r.substr(eq + 1), node;
    if (size_t at = user.find('@'); at != std::string::npos) {
      node = user.substr(at + 1);
      user = user.substr(0, at);
    }
    nlohmann::json info = {{"username", user}, {"uid", "uid-" + user},
                           {"groups", {"system:serviceaccounts", "system:authenticated"}}};
    if (!node.empty()) info["extra"] = {{"authentication.kubernetes.io/node-name", {node}}};
    s.set_token_review(r.substr(0, eq), info);
  }
  try {
    for (const auto& l : loads) {
      std::vector<std::string> files;
      if (std::filesystem::is_directory(l)) {
        for (const auto& e : std::filesystem::directory_iterator(l)) files.push_back(e.path());
        std::sort(files.begin(), files.end());
      } else {
        files.push_back(l);
      }
      for (const auto& f : files) {
        for (auto& obj : read_objects(f)) {
          auto r = s.apply(obj);
          if (!r) std::cerr << f << ": " << r.error().message << "\n";
        }
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "warren-fake-apiserver: " << e.what() << "\n";
    return 1;
  }
  if (!kubeconfig_out.empty()) {
    std::ofstream(kubeconfig_out) << s.kubeconfig(o.tokens.front());
  }
  std::cout << "warren-fake-apiserver listening on " << s.url() << std::endl;
  int sig = 0;
  sigwait(&set, &sig);
  return 0;
}
