#include "warren/certs.h"

#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

using namespace warren;
using namespace warren::certs;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::system_clock;

Ca new_ca(const std::string& cn = "test root") {
  auto key = generate_p256_key();
  REQUIRE(key.ok());
  auto cert = make_root_ca(key->get(), cn, 24h * 365);
  REQUIRE(cert.ok());
  return Ca{std::move(*cert), std::move(*key)};
}

struct Leaf {
  X509Ptr cert;
  KeyPtr key;
};

Leaf new_leaf(const Ca& ca, const std::string& id, Clock::time_point nb = Clock::now() - 1min,
              Clock::time_point na = Clock::now() + 24h) {
  auto key = generate_p256_key();
  REQUIRE(key.ok());
  auto cert = issue_workload_cert(ca, key->get(), id, nb, na);
  REQUIRE(cert.ok());
  return Leaf{std::move(*cert), std::move(*key)};
}

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "warren-certs-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

void write(const fs::path& p, const std::string& data) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::trunc) << data;
}

// Writes <dir>/<ns>/<sa>/{cert-chain.pem,key.pem}.
void put_identity(const fs::path& dir, const std::string& ns, const std::string& sa,
                  const Leaf& leaf, const std::string& extra_chain = "") {
  write(dir / ns / sa / "cert-chain.pem", to_pem(leaf.cert.get()) + extra_chain);
  write(dir / ns / sa / "key.pem", to_pem(leaf.key.get()));
}

}  // namespace

TEST_CASE("parse_spiffe_id accepts exactly spiffe://td/ns/x/sa/y", "[certs]") {
  SpiffeId id;
  REQUIRE(parse_spiffe_id("spiffe://cluster.local/ns/shop/sa/reviews", &id).ok());
  CHECK(id.trust_domain == "cluster.local");
  CHECK(id.ns == "shop");
  CHECK(id.sa == "reviews");
  CHECK(id.to_string() == "spiffe://cluster.local/ns/shop/sa/reviews");

  for (const char* bad :
       {"", "spiffe://", "http://cluster.local/ns/a/sa/b", "spiffe:///ns/a/sa/b",
        "spiffe://cluster.local", "spiffe://cluster.local/", "spiffe://cluster.local/ns/a",
        "spiffe://cluster.local/ns/a/sa/", "spiffe://cluster.local/ns//sa/b",
        "spiffe://cluster.local/ns/a/sa/b/c", "spiffe://cluster.local/sa/a/ns/b",
        "spiffe://Cluster.local/ns/a/sa/b", "spiffe://cluster.local/ns/a/sa/b?x=1",
        "spiffe://c:1/ns/a/sa/b", "spiffe://cluster.local/ns/a b/sa/c"}) {
    INFO(bad);
    CHECK_FALSE(parse_spiffe_id(bad, &id).ok());
  }
}

TEST_CASE("root CA has CA:TRUE, keyCertSign and key ids", "[certs]") {
  Ca ca = new_ca("Warren test");
  X509* x = ca.cert.get();
  CHECK(X509_check_ca(x) == 1);
  CHECK((X509_get_extension_flags(x) & EXFLAG_CRITICAL) == 0);  // all critical exts understood
  CHECK((X509_get_key_usage(x) & KU_KEY_CERT_SIGN) != 0);
  CHECK(X509_get0_subject_key_id(x) != nullptr);
  CHECK(X509_get0_authority_key_id(x) != nullptr);
  CHECK(X509_check_issued(x, x) == X509_V_OK);
  CHECK(key_matches(x, ca.key.get()));
  CHECK(not_after_of(x) > Clock::now() + 24h * 364);
}

TEST_CASE("workload cert: URI SAN only, no CN, leaf usages, verifies", "[certs]") {
  Ca ca = new_ca();
  const std::string id = "spiffe://cluster.local/ns/shop/sa/reviews";
  Leaf leaf = new_leaf(ca, id);
  X509* x = leaf.cert.get();
  CHECK(spiffe_uri_of(x) == id);
  CHECK(X509_NAME_entry_count(X509_get_subject_name(x)) == 0);
  CHECK(X509_check_ca(x) == 0);
  CHECK(X509_get_key_usage(x) == (KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT));
  CHECK(X509_get_extended_key_usage(x) == (XKU_SSL_SERVER | XKU_SSL_CLIENT));
  CHECK(X509_get_signature_nid(x) == NID_ecdsa_with_SHA256);
  EVP_PKEY* pub = X509_get0_pubkey(x);
  CHECK(EVP_PKEY_is_a(pub, "EC"));
  CHECK(EVP_PKEY_get_bits(pub) == 256);
  const ASN1_INTEGER* serial = X509_get0_serialNumber(x);
  CHECK(ASN1_STRING_length(serial) == 16);
  CHECK(verify_chain(x, {}, {ca.cert.get()}, Clock::now()).ok());

  // Serial numbers are random.
  Leaf other = new_leaf(ca, id);
  CHECK(ASN1_INTEGER_cmp(serial, X509_get0_serialNumber(other.cert.get())) != 0);

  // Not before / after are honoured.
  auto past = Clock::now() - 48h;
  Leaf expired = new_leaf(ca, id, past - 1h, past);
  CHECK(not_after_of(expired.cert.get()) ==
        std::chrono::time_point_cast<std::chrono::seconds>(past));
  auto r = verify_chain(expired.cert.get(), {}, {ca.cert.get()}, Clock::now());
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Catch::Contains("expired"));

  // Another CA does not verify.
  Ca other_ca = new_ca("other");
  CHECK_FALSE(verify_chain(x, {}, {other_ca.cert.get()}, Clock::now()).ok());
  // Both roots of a rotation bundle are accepted.
  CHECK(verify_chain(x, {}, {other_ca.cert.get(), ca.cert.get()}, Clock::now()).ok());
  // Non-spiffe ids are refused at issue time.
  auto k = generate_p256_key();
  CHECK_FALSE(issue_workload_cert(ca, k->get(), "https://x", Clock::now(), Clock::now() + 1h).ok());
}

TEST_CASE("intermediate CAs chain to the root", "[certs]") {
  Ca root = new_ca();
  auto ikey = generate_p256_key();
  REQUIRE(ikey.ok());
  auto icert = issue_intermediate_ca(root, ikey->get(), "intermediate", 24h);
  REQUIRE(icert.ok());
  Ca inter{std::move(*icert), std::move(*ikey)};
  Leaf leaf = new_leaf(inter, "spiffe://cluster.local/ns/a/sa/b");
  CHECK(verify_chain(leaf.cert.get(), {inter.cert.get()}, {root.cert.get()}, Clock::now()).ok());
  CHECK_FALSE(verify_chain(leaf.cert.get(), {}, {root.cert.get()}, Clock::now()).ok());
}

TEST_CASE("PEM round trips and errors", "[certs]") {
  Ca ca = new_ca();
  Leaf leaf = new_leaf(ca, "spiffe://cluster.local/ns/a/sa/b");
  std::string chain = to_pem(leaf.cert.get()) + to_pem(ca.cert.get());
  auto certs = read_certs_pem(chain);
  REQUIRE(certs.ok());
  REQUIRE(certs->size() == 2);
  CHECK(X509_cmp((*certs)[0].get(), leaf.cert.get()) == 0);
  CHECK(X509_cmp((*certs)[1].get(), ca.cert.get()) == 0);

  auto key = read_key_pem(to_pem(leaf.key.get()));
  REQUIRE(key.ok());
  CHECK(key_matches(leaf.cert.get(), key->get()));
  CHECK_FALSE(key_matches(leaf.cert.get(), ca.key.get()));

  CHECK_FALSE(read_certs_pem("").ok());
  CHECK_FALSE(read_certs_pem("garbage").ok());
  CHECK_FALSE(
      read_certs_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").ok());
  CHECK_FALSE(read_key_pem("").ok());
  CHECK_FALSE(read_key_pem(to_pem(leaf.cert.get())).ok());
  auto missing = read_certs_file("/nonexistent/warren/cert.pem");
  REQUIRE_FALSE(missing.ok());
  CHECK_THAT(missing.error().message, Catch::Contains("/nonexistent/warren/cert.pem"));
}

TEST_CASE("Ca save/load with a 0600 key", "[certs]") {
  TempDir tmp;
  Ca ca = new_ca();
  std::string cert = (tmp.path / "root-cert.pem").string(),
              key = (tmp.path / "root-key.pem").string();
  REQUIRE(ca.save(cert, key).ok());
  struct stat st {};
  REQUIRE(stat(key.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  auto loaded = Ca::load(cert, key);
  REQUIRE(loaded.ok());
  CHECK(X509_cmp(loaded->cert.get(), ca.cert.get()) == 0);

  Ca other = new_ca();
  write(tmp.path / "other-key.pem", to_pem(other.key.get()));
  auto bad = Ca::load(cert, (tmp.path / "other-key.pem").string());
  REQUIRE_FALSE(bad.ok());
  CHECK_THAT(bad.error().message, Catch::Contains("other-key.pem") && Catch::Contains("match"));
}

TEST_CASE("IdentityStore loads identities from the directory layout", "[certs]") {
  TempDir tmp;
  Ca ca = new_ca();
  write(tmp.path / "roots.pem", to_pem(ca.cert.get()));
  Leaf a = new_leaf(ca, "spiffe://cluster.local/ns/shop/sa/reviews");
  Leaf b = new_leaf(ca, "spiffe://cluster.local/ns/shop/sa/default");
  put_identity(tmp.path / "certs", "shop", "reviews", a);
  put_identity(tmp.path / "certs", "shop", "default", b, to_pem(ca.cert.get()));

  IdentityStore store;
  auto r = store.load((tmp.path / "certs").string(), (tmp.path / "roots.pem").string());
  REQUIRE(r.ok());
  CHECK(store.ids() == std::vector<std::string>{"spiffe://cluster.local/ns/shop/sa/default",
                                                "spiffe://cluster.local/ns/shop/sa/reviews"});
  auto id = store.get("spiffe://cluster.local/ns/shop/sa/reviews");
  REQUIRE(id);
  CHECK(X509_cmp(id->leaf.get(), a.cert.get()) == 0);
  CHECK(id->chain.empty());
  CHECK(key_matches(id->leaf.get(), id->key.get()));
  CHECK(id->not_after == not_after_of(a.cert.get()));
  CHECK(store.get("spiffe://cluster.local/ns/shop/sa/default")->chain.size() == 1);
  CHECK(store.get("spiffe://cluster.local/ns/x/sa/y") == nullptr);
  CHECK(store.root_ptrs().size() == 1);
}

TEST_CASE("IdentityStore reports bad identities by file and keeps the good ones", "[certs]") {
  TempDir tmp;
  Ca ca = new_ca();
  write(tmp.path / "roots.pem", to_pem(ca.cert.get()));
  fs::path dir = tmp.path / "certs";
  Leaf good = new_leaf(ca, "spiffe://cluster.local/ns/a/sa/good");
  Leaf other = new_leaf(ca, "spiffe://cluster.local/ns/a/sa/other");
  put_identity(dir, "a", "good", good);
  // key of another certificate
  write(dir / "a" / "mismatch" / "cert-chain.pem", to_pem(good.cert.get()));
  write(dir / "a" / "mismatch" / "key.pem", to_pem(other.key.get()));
  // no key
  write(dir / "a" / "nokey" / "cert-chain.pem", to_pem(other.cert.get()));
  // no SPIFFE id
  auto k = generate_p256_key();
  write(dir / "a" / "noid" / "cert-chain.pem", to_pem(ca.cert.get()));
  write(dir / "a" / "noid" / "key.pem", to_pem(ca.key.get()));

  IdentityStore store;
  auto r = store.load(dir.string(), (tmp.path / "roots.pem").string());
  REQUIRE_FALSE(r.ok());
  const std::string& msg = r.error().message;
  CHECK_THAT(msg, Catch::Contains((dir / "a" / "mismatch" / "key.pem").string() +
                                  ": private key does not match"));
  CHECK_THAT(msg, Catch::Contains((dir / "a" / "nokey" / "key.pem").string()));
  CHECK_THAT(msg, Catch::Contains((dir / "a" / "noid" / "cert-chain.pem").string() +
                                  ": the leaf certificate has no single spiffe:// URI SAN"));
  CHECK(store.ids() == std::vector<std::string>{"spiffe://cluster.local/ns/a/sa/good"});

  // A bad trust bundle fails the load and leaves the store as it was.
  write(tmp.path / "bad-roots.pem", "nothing here");
  auto r2 = store.load(dir.string(), (tmp.path / "bad-roots.pem").string());
  REQUIRE_FALSE(r2.ok());
  CHECK_THAT(r2.error().message, Catch::Contains("bad-roots.pem"));
  CHECK(store.get("spiffe://cluster.local/ns/a/sa/good") != nullptr);
}

TEST_CASE("IdentityStore::reload picks up rotations and keeps the old one on a broken file",
          "[certs]") {
  TempDir tmp;
  Ca ca = new_ca();
  fs::path roots = tmp.path / "roots.pem", dir = tmp.path / "certs";
  write(roots, to_pem(ca.cert.get()));
  const std::string id_a = "spiffe://cluster.local/ns/a/sa/a";
  const std::string id_b = "spiffe://cluster.local/ns/b/sa/b";
  Leaf a1 = new_leaf(ca, id_a);
  put_identity(dir, "a", "a", a1);
  IdentityStore store;
  REQUIRE(store.load(dir.string(), roots.string()).ok());
  auto held = store.get(id_a);

  // Nothing changed.
  auto rep = store.reload();
  CHECK_FALSE(rep.changed());
  CHECK(rep.errors.empty());

  // Rotation of a, a new b (written atomically, as warrenctl does).
  Leaf a2 = new_leaf(ca, id_a);
  REQUIRE(write_file_atomic((dir / "a/a/key.pem").string(), to_pem(a2.key.get()), 0600).ok());
  REQUIRE(
      write_file_atomic((dir / "a/a/cert-chain.pem").string(), to_pem(a2.cert.get()), 0644).ok());
  put_identity(dir, "b", "b", new_leaf(ca, id_b));
  rep = store.reload();
  CHECK(rep.errors.empty());
  CHECK(rep.updated == std::vector<std::string>{id_a});
  CHECK(rep.added == std::vector<std::string>{id_b});
  CHECK(X509_cmp(store.get(id_a)->leaf.get(), a2.cert.get()) == 0);
  CHECK(X509_cmp(held->leaf.get(), a1.cert.get()) == 0);  // old pointer still valid

  // A half-written (broken) certificate: the previous identity stays.
  write(dir / "a/a/cert-chain.pem", "-----BEGIN CERTIFICATE-----\nbroken");
  rep = store.reload();
  REQUIRE(rep.errors.size() == 1);
  CHECK_THAT(rep.errors[0].message, Catch::Contains((dir / "a/a/cert-chain.pem").string()));
  CHECK(rep.updated.empty());
  REQUIRE(store.get(id_a));
  CHECK(X509_cmp(store.get(id_a)->leaf.get(), a2.cert.get()) == 0);
  // Not reported again while the file stays the same.
  CHECK(store.reload().errors.empty());

  // Removal of b; root rotation to a bundle of two roots.
  fs::remove_all(dir / "b");
  Ca ca2 = new_ca("second");
  write(roots, to_pem(ca2.cert.get()) + to_pem(ca.cert.get()));
  rep = store.reload();
  CHECK(rep.removed == std::vector<std::string>{id_b});
  CHECK(rep.roots_changed);
  CHECK(store.roots().size() == 2);

  // A broken bundle keeps the old roots.
  write(roots, "oops, truncated");
  rep = store.reload();
  CHECK_FALSE(rep.roots_changed);
  REQUIRE(rep.errors.size() == 1);
  CHECK_THAT(rep.errors[0].message, Catch::Contains(roots.string()));
  CHECK(store.roots().size() == 2);
}
