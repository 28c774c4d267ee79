// --ca-secret NS/NAME (Kubernetes mode): the signing CA comes from a Secret
// laid out as Istio's plug-in CA ("cacerts": ca-cert.pem, ca-key.pem,
// cert-chain.pem, root-cert.pem) or as a kubernetes.io/tls Secret (tls.crt,
// tls.key, ca.crt, e.g. from cert-manager). It is read before the controller
// serves anything, then polled: a changed Secret that loads replaces the CA,
// re-issues the serving certificate and pushes the new trust bundle; one that
// does not load is logged (naming the Secret and the key) and the CA in force
// stays. Roots listed in root-cert.pem / ca.crt are all trusted, which is how
// a root rotation keeps both roots during the overlap.
#include <spdlog/spdlog.h>

#include <functional>

#include "app_impl.h"
#include "k8s/kube_source.h"
#include "warren/certs.h"

namespace warren::controller {

namespace {

struct SecretKeys {
  const char *cert, *key, *chain, *roots;
};
constexpr SecretKeys kIstioKeys{"ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"};
constexpr SecretKeys kTlsKeys{"tls.crt", "tls.key", nullptr, "ca.crt"};

std::string value(const std::map<std::string, std::string>& d, const char* key) {
  if (!key) return "";
  auto it = d.find(key);
  return it == d.end() ? "" : it->second;
}

}  // namespace

Result<std::unique_ptr<CertificateAuthority>> App::Impl::ca_from_secret(
    const std::map<std::string, std::string>& data) const {
  const std::string& where = opts.ca_secret;
  const SecretKeys* k = data.count(kIstioKeys.cert) || data.count(kIstioKeys.key) ? &kIstioKeys
                        : data.count(kTlsKeys.cert) || data.count(kTlsKeys.key)   ? &kTlsKeys
                                                                                  : nullptr;
  if (!k)
    return make_error(Errc::kInvalidArgument,
                      "secret " + where +
                          ": no CA in it: expected ca-cert.pem and ca-key.pem (Istio's cacerts "
                          "layout) or tls.crt and tls.key");
  for (const char* need : {k->cert, k->key})
    if (value(data, need).empty())
      return make_error(Errc::kInvalidArgument, "secret " + where + ": " + need + " is missing or empty");
  CaOptions co;
  co.trust_domain = opts.trust_domain;
  co.workload_ttl = opts.cert_ttl;
  auto ca = CertificateAuthority::from_pem(value(data, k->cert), value(data, k->key), value(data, k->chain),
                                           value(data, k->roots), co);
  if (!ca)
    return ca.error().wrap("secret " + where + " (" + k->cert + ", " + k->key +
                           (k->chain ? std::string(", ") + k->chain : "") + ", " + k->roots + ")");
  return std::make_unique<CertificateAuthority>(std::move(*ca));
}

Result<void> App::Impl::load_ca_secret() {
  auto slash = opts.ca_secret.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == opts.ca_secret.size())
    return make_error(Errc::kInvalidArgument,
                      "--ca-secret \"" + opts.ca_secret + "\": expected <namespace>/<name>");
  if (!kube)
    return make_error(Errc::kInvalidArgument,
                      "--ca-secret needs Kubernetes mode (--kubeconfig or --in-cluster); in local "
                      "mode give --ca-cert and --ca-key");
  if (!opts.ca_cert.empty() || !opts.ca_key.empty())
    return make_error(Errc::kInvalidArgument, "--ca-secret and --ca-cert/--ca-key are exclusive");
  secret_ns = opts.ca_secret.substr(0, slash);
  secret_name = opts.ca_secret.substr(slash + 1);

  // Read it before anything is served: the loop turns here until the answer
  // (the source has not started; nothing else is on the loop yet).
  std::optional<Result<std::map<std::string, std::string>>> got;
  kube->get_secret(secret_ns, secret_name, [&](Result<std::map<std::string, std::string>> r) {
    got = std::move(r);
  });
  auto deadline = std::chrono::steady_clock::now() + opts.ca_secret_timeout;
  while (!got && std::chrono::steady_clock::now() < deadline) uv_run(loop, UV_RUN_ONCE);
  if (!got)
    return make_error(Errc::kTimeout, "secret " + opts.ca_secret + ": the API server did not answer");
  if (!*got) return got->error().wrap("--ca-secret");
  auto ca_or = ca_from_secret(**got);
  if (!ca_or) return ca_or.error();
  ca = std::move(*ca_or);
  secret_digest = digest_of(**got);
  spdlog::info("CA: signing certificate from secret {}, trust bundle {}", opts.ca_secret,
               ca->roots_fingerprint().substr(0, 16));
  return {};
}

metrics::Counter* App::Impl::ca_reload_metric(const std::string& result) {
  return registry
      .counter("warren_ca_secret_reloads_total", "Changes of the --ca-secret Secret, applied or rejected",
               {"result"})
      .with({result});
}

std::string App::Impl::digest_of(const std::map<std::string, std::string>& data) {
  std::string all;
  for (const auto& [k, v] : data) all += k + '\0' + std::to_string(v.size()) + '\0' + v;
  return std::to_string(std::hash<std::string>{}(all));
}

void App::Impl::poll_ca_secret() {
  secret_timer.start(static_cast<uint64_t>(opts.ca_secret_poll.count()), 0, [this] {
    if (stopped) return;
    kube->get_secret(secret_ns, secret_name, [this](Result<std::map<std::string, std::string>> r) {
      if (stopped) return;
      poll_ca_secret();
      if (!r) {
        spdlog::warn("CA: re-reading secret {}: {}; the CA in force stays", opts.ca_secret, r.error().message);
        return;
      }
      std::string d = digest_of(*r);
      if (d == secret_digest) return;
      secret_digest = d;
      auto next = ca_from_secret(*r);
      if (!next) {
        ca_reload_metric("rejected")->inc();
        spdlog::error("CA: {}; the CA in force stays", next.error().message);
        return;
      }
      swap_ca(std::move(*next));
    });
  });
}

void App::Impl::swap_ca(std::unique_ptr<CertificateAuthority> next) {
  std::string before = ca->roots_fingerprint();
  ca = std::move(next);
  ca_reload_metric("applied")->inc();
  spdlog::info("CA: secret {} changed: new signing certificate, trust bundle {} (was {})", opts.ca_secret,
               ca->roots_fingerprint().substr(0, 16), before.substr(0, 16));
  if (auto r = certs::write_file_atomic(opts.state_dir + "/root-cert.pem", ca->trust_bundle_pem(), 0644); !r)
    spdlog::error("CA: writing the trust bundle: {}", r.error().message);
  if (push) push->set_trust_bundle(ca->trust_bundle_pem());
  if (deployer) deployer->set_trust_bundle(ca->trust_bundle_pem());
  if (auto r = issue_serving_cert(); !r)
    spdlog::error("CA: re-issuing the serving certificate: {}", r.error().message);
  else if (push)
    push->set_tls_ctx(std::move(serving_ctx));
}

}  // namespace warren::controller
