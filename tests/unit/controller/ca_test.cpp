#include "ca.h"

#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "warren/cert_manager.h"
#include "warren/csr.h"

using namespace warren;
using namespace warren::certs;
using namespace warren::controller;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using Clock = std::chrono::system_clock;

namespace {

const std::string kId = "spiffe://cluster.local/ns/shop/sa/cart";

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "warren-ca-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

void write(const std::string& p, const std::string& data) {
  std::ofstream(p, std::ios::trunc) << data;
}

Ca new_root(const std::string& cn = "test root", std::chrono::seconds life = 24h * 365) {
  auto key = generate_p256_key();
  REQUIRE(key.ok());
  auto cert = make_root_ca(key->get(), cn, life);
  REQUIRE(cert.ok());
  return Ca{std::move(*cert), std::move(*key)};
}

Ca new_intermediate(const Ca& parent) {
  auto key = generate_p256_key();
  REQUIRE(key.ok());
  auto cert = issue_intermediate_ca(parent, key->get(), "test intermediate", 24h * 30);
  REQUIRE(cert.ok());
  return Ca{std::move(*cert), std::move(*key)};
}

std::string csr_for(const std::string& id) {
  auto key = generate_p256_key();
  REQUIRE(key.ok());
  auto csr = make_csr_pem(key->get(), id);
  REQUIRE(csr.ok());
  return *csr;
}

std::vector<X509Ptr> certs_of(const std::string& pem) {
  auto c = read_certs_pem(pem);
  REQUIRE(c.ok());
  return std::move(*c);
}

// Verifies a sign() answer (leaf, intermediates) against `roots`.
Result<void> verify(const std::string& chain_pem, const std::vector<X509*>& roots) {
  auto certs = certs_of(chain_pem);
  std::vector<X509*> inter;
  for (size_t i = 1; i < certs.size(); ++i) inter.push_back(certs[i].get());
  return verify_chain(certs[0].get(), inter, roots, Clock::now());
}

CertificateAuthority make_ca(const Ca& root, const std::string& extra_pem = "",
                             CaOptions opts = {}) {
  auto ca = CertificateAuthority::from_pem(to_pem(root.cert.get()), to_pem(root.key.get()), "",
                                           extra_pem, std::move(opts));
  INFO((ca.ok() ? "" : ca.error().message));
  REQUIRE(ca.ok());
  return std::move(ca.value());
}

}  // namespace

TEST_CASE("ca: a generated root is saved and reloaded after a restart") {
  TempDir dir;
  CaOptions opts;
  opts.state_dir = dir / "state";  // created on first start
  auto first = CertificateAuthority::create(opts);
  REQUIRE(first.ok());
  CHECK(first->generated_root());
  struct stat st {};
  REQUIRE(::stat((dir / "state/root-key.pem").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  REQUIRE(::stat((dir / "state/root-cert.pem").c_str(), &st) == 0);

  auto second = CertificateAuthority::create(opts);
  REQUIRE(second.ok());
  CHECK(X509_cmp(first->signing_cert(), second->signing_cert()) == 0);
  CHECK(first->roots_fingerprint() == second->roots_fingerprint());
  // A certificate from the first process verifies with the second's bundle.
  auto chain = first->sign(csr_for(kId), kId);
  REQUIRE(chain.ok());
  CHECK(verify(*chain, second->root_ptrs()).ok());
  CHECK(certs_of(second->trust_bundle_pem()).size() == 1);
}

TEST_CASE("ca: half of a saved root is an error and nothing is overwritten") {
  TempDir dir;
  CaOptions opts;
  opts.state_dir = dir.path.string();
  REQUIRE(CertificateAuthority::create(opts).ok());
  std::string cert_before;
  std::getline(std::ifstream(dir / "root-cert.pem"), cert_before, '\0');
  ::unlink((dir / "root-key.pem").c_str());
  auto again = CertificateAuthority::create(opts);
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().message.find(dir / "root-key.pem") != std::string::npos);
  CHECK(again.error().message.find("missing") != std::string::npos);
  std::string cert_after;
  std::getline(std::ifstream(dir / "root-cert.pem"), cert_after, '\0');
  CHECK(cert_before == cert_after);
}

TEST_CASE("ca: a user-supplied root from files") {
  TempDir dir;
  Ca root = new_root();
  REQUIRE(root.save(dir / "ca.pem", dir / "ca-key.pem").ok());
  CaOptions opts;
  opts.cert_file = dir / "ca.pem";
  opts.key_file = dir / "ca-key.pem";
  auto ca = CertificateAuthority::create(opts);
  REQUIRE(ca.ok());
  CHECK_FALSE(ca->generated_root());
  auto chain = ca->sign(csr_for(kId), kId);
  REQUIRE(chain.ok());
  auto certs = certs_of(*chain);
  REQUIRE(certs.size() == 1);  // leaf only: the root travels in the bundle
  CHECK(spiffe_uri_of(certs[0].get()) == kId);
  CHECK(verify(*chain, {root.cert.get()}).ok());
  CHECK(ca->trust_bundle_pem() == to_pem(root.cert.get()));
  CHECK(ca->stats().issued == 1);
}

TEST_CASE("ca: errors name the file and the reason") {
  TempDir dir;
  Ca root = new_root();
  Ca other = new_root("other");
  REQUIRE(root.save(dir / "ca.pem", dir / "ca-key.pem").ok());
  REQUIRE(other.save(dir / "other.pem", dir / "other-key.pem").ok());
  CaOptions opts;
  opts.cert_file = dir / "ca.pem";
  opts.key_file = dir / "other-key.pem";
  auto r = CertificateAuthority::create(opts);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find(dir / "other-key.pem") != std::string::npos);
  CHECK(r.error().message.find("does not match") != std::string::npos);

  opts.key_file = dir / "missing.pem";
  r = CertificateAuthority::create(opts);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find(dir / "missing.pem") != std::string::npos);

  opts.key_file = dir / "ca-key.pem";
  write(dir / "extra.pem", "not a certificate");
  opts.extra_roots_file = dir / "extra.pem";
  r = CertificateAuthority::create(opts);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find(dir / "extra.pem") != std::string::npos);

  CHECK_FALSE(CertificateAuthority::create(CaOptions{}).ok());  // no CA at all

  auto p = CertificateAuthority::from_pem(to_pem(root.cert.get()), "garbage", "", "");
  REQUIRE_FALSE(p.ok());
  CHECK(p.error().message.rfind("key: ", 0) == 0);
  p = CertificateAuthority::from_pem(to_pem(root.cert.get()), to_pem(other.key.get()), "", "");
  REQUIRE_FALSE(p.ok());
  CHECK(p.error().message.rfind("key: ", 0) == 0);
}

TEST_CASE("ca: an intermediate chain verifies with only the root trusted") {
  TempDir dir;
  Ca root = new_root();
  Ca inter = new_intermediate(root);
  REQUIRE(inter.save(dir / "ca-cert.pem", dir / "ca-key.pem").ok());
  CaOptions opts;
  opts.cert_file = dir / "ca-cert.pem";
  opts.key_file = dir / "ca-key.pem";
  opts.chain_file = dir / "cert-chain.pem";
  SECTION("chain file holds the root") {
    write(opts.chain_file, to_pem(root.cert.get()));
  }
  SECTION("chain file repeats the signer, as Istio's cert-chain.pem does") {
    write(opts.chain_file, to_pem(inter.cert.get()) + to_pem(root.cert.get()));
  }
  SECTION("root given as an extra trusted root") {
    opts.chain_file.clear();
    write(dir / "root-cert.pem", to_pem(root.cert.get()));
    opts.extra_roots_file = dir / "root-cert.pem";
  }
  auto ca = CertificateAuthority::create(opts);
  INFO((ca.ok() ? "" : ca.error().message));
  REQUIRE(ca.ok());
  CHECK(ca->trust_bundle_pem() == to_pem(root.cert.get()));
  auto chain = ca->sign(csr_for(kId), kId);
  REQUIRE(chain.ok());
  auto certs = certs_of(*chain);
  REQUIRE(certs.size() == 2);  // leaf, intermediate
  CHECK(X509_cmp(certs[1].get(), inter.cert.get()) == 0);
  CHECK(verify(*chain, {root.cert.get()}).ok());
  // Without the intermediate the leaf does not verify.
  CHECK_FALSE(verify_chain(certs[0].get(), {}, {root.cert.get()}, Clock::now()).ok());
}

TEST_CASE("ca: an intermediate without its root is refused") {
  TempDir dir;
  Ca root = new_root();
  Ca inter = new_intermediate(root);
  Ca stranger = new_root("stranger");
  REQUIRE(inter.save(dir / "ca-cert.pem", dir / "ca-key.pem").ok());
  CaOptions opts;
  opts.cert_file = dir / "ca-cert.pem";
  opts.key_file = dir / "ca-key.pem";
  auto ca = CertificateAuthority::create(opts);
  REQUIRE_FALSE(ca.ok());
  CHECK(ca.error().message.find(dir / "ca-cert.pem") != std::string::npos);
  CHECK(ca.error().message.find("no root") != std::string::npos);

  write(dir / "chain.pem", to_pem(stranger.cert.get()));  // the wrong root
  opts.chain_file = dir / "chain.pem";
  ca = CertificateAuthority::create(opts);
  REQUIRE_FALSE(ca.ok());
  CHECK(ca.error().message.find("does not chain to a trusted root") != std::string::npos);
}

TEST_CASE("ca: sign refuses a mismatched id and a foreign trust domain") {
  Ca root = new_root();
  auto ca = make_ca(root);
  auto r = ca.sign(csr_for(kId), "spiffe://cluster.local/ns/shop/sa/admin");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::kInvalidArgument);
  CHECK(r.error().message.find("the CSR is for " + kId) != std::string::npos);

  const std::string foreign = "spiffe://evil.example/ns/shop/sa/cart";
  r = ca.sign(csr_for(foreign), foreign);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::kPermissionDenied);
  CHECK(r.error().message.find("outside the trust domain") != std::string::npos);

  r = ca.sign("not a csr", kId);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::kInvalidArgument);
  CHECK(ca.stats().refused == 3);
  CHECK(ca.stats().issued == 0);
}

TEST_CASE("ca: sign_for_node asks the authorizer") {
  Ca root = new_root();
  CaOptions opts;
  auto unset = make_ca(root);
  auto r = unset.sign_for_node("node-a", csr_for(kId), kId);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::kPermissionDenied);

  opts.authorize = [](const std::string& node, const std::string& id) {
    return node == "node-a" && id == kId;
  };
  auto ca = make_ca(root, "", opts);
  r = ca.sign_for_node("node-b", csr_for(kId), kId);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::kPermissionDenied);
  CHECK(r.error().message.find("node-b") != std::string::npos);
  CHECK(ca.sign_for_node("node-a", csr_for(kId), kId).ok());
}

TEST_CASE("ca: lifetime defaults to 24h and is capped") {
  Ca root = new_root();
  auto now = Clock::now();
  CaOptions opts;
  opts.clock = [now] { return now; };
  opts.max_ttl = 48h;
  auto ca = make_ca(root, "", opts);
  auto life_of = [&](std::chrono::seconds ttl) {
    auto chain = ca.sign(csr_for(kId), kId, ttl);
    REQUIRE(chain.ok());
    auto certs = certs_of(*chain);
    CHECK(not_before_of(certs[0].get()) == std::chrono::floor<std::chrono::seconds>(now) - 1min);
    return not_after_of(certs[0].get()) - std::chrono::floor<std::chrono::seconds>(now);
  };
  CHECK(life_of(0s) == 24h);
  CHECK(life_of(1h) == 1h);
  CHECK(life_of(24h * 365) == 48h);

  // Never later than the signing certificate.
  Ca short_root = new_root("short", 2h);
  auto short_ca = make_ca(short_root);
  auto chain = short_ca.sign(csr_for(kId), kId);
  REQUIRE(chain.ok());
  CHECK(not_after_of(certs_of(*chain)[0].get()) <= not_after_of(short_root.cert.get()));
}

TEST_CASE("ca: root rotation keeps both roots trusted during the overlap") {
  TempDir dir;
  Ca old_root = new_root("old root");
  Ca new_root_ca = new_root("new root");
  REQUIRE(old_root.save(dir / "old.pem", dir / "old-key.pem").ok());
  REQUIRE(new_root_ca.save(dir / "new.pem", dir / "new-key.pem").ok());

  CaOptions opts;
  opts.cert_file = dir / "old.pem";
  opts.key_file = dir / "old-key.pem";
  auto before = CertificateAuthority::create(opts);
  REQUIRE(before.ok());
  auto old_leaf = before->sign(csr_for(kId), kId);
  REQUIRE(old_leaf.ok());

  // Step 1: the new root is trusted while the old one still signs.
  opts.extra_roots_file = dir / "new.pem";
  auto step1 = CertificateAuthority::create(opts);
  REQUIRE(step1.ok());
  CHECK(certs_of(step1->trust_bundle_pem()).size() == 2);
  CHECK(step1->roots_fingerprint() != before->roots_fingerprint());

  // Step 2: restarted with the new root, the old one as extra trusted root.
  opts.cert_file = dir / "new.pem";
  opts.key_file = dir / "new-key.pem";
  opts.extra_roots_file = dir / "old.pem";
  auto during = CertificateAuthority::create(opts);
  REQUIRE(during.ok());
  CHECK(certs_of(during->trust_bundle_pem()).size() == 2);
  CHECK(during->roots_fingerprint() == step1->roots_fingerprint());  // same set, other order
  auto new_leaf = during->sign(csr_for(kId), kId);
  REQUIRE(new_leaf.ok());
  CHECK(verify(*old_leaf, during->root_ptrs()).ok());
  CHECK(verify(*new_leaf, during->root_ptrs()).ok());

  // Step 3: after the overlap the old root is dropped.
  std::string fp = during->roots_fingerprint();
  REQUIRE(during->set_extra_roots_pem("").ok());
  CHECK(during->roots_fingerprint() != fp);
  CHECK(during->trust_bundle_pem() == to_pem(new_root_ca.cert.get()));
  CHECK_FALSE(verify(*old_leaf, during->root_ptrs()).ok());
  CHECK(verify(*new_leaf, during->root_ptrs()).ok());
  // Same as a restart without the extra roots file.
  opts.extra_roots_file.clear();
  auto after = CertificateAuthority::create(opts);
  REQUIRE(after.ok());
  CHECK(after->roots_fingerprint() == during->roots_fingerprint());
}

TEST_CASE("ca: the extra roots cannot drop the root the signer chains to") {
  Ca root = new_root();
  Ca inter = new_intermediate(root);
  auto ca = CertificateAuthority::from_pem(to_pem(inter.cert.get()), to_pem(inter.key.get()), "",
                                           to_pem(root.cert.get()));
  REQUIRE(ca.ok());
  std::string fp = ca->roots_fingerprint();
  auto r = ca->set_extra_roots_pem("");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find("no longer chain") != std::string::npos);
  CHECK(ca->roots_fingerprint() == fp);
  CHECK(ca->sign(csr_for(kId), kId).ok());
}

// warren-node's CertManager against the real CA, with the node check in
// between as the push server would do it.
TEST_CASE("ca: a node's cert manager obtains and renews certificates from the CA") {
  const std::string other = "spiffe://cluster.local/ns/shop/sa/elsewhere";
  Clock::duration offset{};
  CaOptions opts;
  opts.clock = [&] { return Clock::now() + offset; };
  opts.authorize = [&](const std::string& node, const std::string& id) {
    return node == "node-a" && id == kId;
  };
  Ca root = new_root();
  auto ca = make_ca(root, "", opts);

  struct Transport : certs::CsrTransport {
    CertificateAuthority* ca;
    void request(const std::string& id, const std::string& csr,
                 std::function<void(Result<std::string>)> done) override {
      done(ca->sign_for_node("node-a", csr, id));
    }
  } transport;
  transport.ca = &ca;

  uv_loop_t loop;
  uv_loop_init(&loop);
  IdentityStore store;
  {
    certs::CertManagerOptions mo;
    mo.clock = opts.clock;
    mo.min_backoff = 1ms;
    mo.max_backoff = 4ms;
    certs::CertManager cm(&loop, store, transport, mo);
    REQUIRE(cm.set_trust_bundle(ca.trust_bundle_pem()).ok());
    cm.set_wanted({kId, other});
    cm.check_now();  // the transport answers inside request()
    REQUIRE(store.get(kId) != nullptr);
    CHECK(store.get(other) == nullptr);  // the node runs no such pod
    CHECK(ca.stats().refused >= 1);
    auto first = store.get(kId);
    CHECK(first->not_after - first->not_before == 24h + 1min);

    offset = 14h;  // past half-life plus the default jitter (at most 5 % of 24 h)
    cm.check_now();
    CHECK(store.get(kId) != first);
    CHECK(cm.counters().renewed == 1);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
}
