#include "warren/csr.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <catch2/catch.hpp>
#include <string>

using namespace warren;
using namespace warren::certs;

namespace {

const std::string kId = "spiffe://cluster.local/ns/shop/sa/cart";

KeyPtr p256() {
  auto k = generate_p256_key();
  REQUIRE(k.ok());
  return std::move(*k);
}

struct ReqFree {
  void operator()(X509_REQ* r) const { X509_REQ_free(r); }
};
using Req = std::unique_ptr<X509_REQ, ReqFree>;

std::string req_pem(X509_REQ* req) {
  BIO* b = BIO_new(BIO_s_mem());
  REQUIRE(PEM_write_bio_X509_REQ(b, req) == 1);
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  std::string out(data, static_cast<size_t>(n));
  BIO_free(b);
  return out;
}

// A CSR built by hand: any key, any SAN text (OpenSSL config syntax, "" for
// none), any digest.
std::string raw_csr(EVP_PKEY* key, const std::string& san, const EVP_MD* md = EVP_sha256()) {
  Req req(X509_REQ_new());
  REQUIRE(X509_REQ_set_pubkey(req.get(), key) == 1);
  if (!san.empty()) {
    STACK_OF(X509_EXTENSION)* exts = sk_X509_EXTENSION_new_null();
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, nullptr, NID_subject_alt_name, san.c_str());
    REQUIRE(ext != nullptr);
    sk_X509_EXTENSION_push(exts, ext);
    REQUIRE(X509_REQ_add_extensions(req.get(), exts) == 1);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  }
  REQUIRE(X509_REQ_sign(req.get(), key, md) > 0);
  return req_pem(req.get());
}

void require_refused(const std::string& pem, const std::string& reason) {
  auto r = parse_csr_pem(pem);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::kInvalidArgument);
  INFO(r.error().message);
  CHECK(r.error().message.find(reason) != std::string::npos);
}

}  // namespace

TEST_CASE("csr: round trip carries the id and the key") {
  auto key = p256();
  auto pem = make_csr_pem(key.get(), kId);
  REQUIRE(pem.ok());
  CHECK(pem->rfind("-----BEGIN CERTIFICATE REQUEST-----", 0) == 0);
  auto parsed = parse_csr_pem(*pem);
  REQUIRE(parsed.ok());
  CHECK(parsed->spiffe_id == kId);
  CHECK(EVP_PKEY_eq(parsed->public_key.get(), key.get()) == 1);
}

TEST_CASE("csr: the subject is empty and the SAN is critical") {
  auto key = p256();
  auto pem = make_csr_pem(key.get(), kId);
  REQUIRE(pem.ok());
  BIO* b = BIO_new_mem_buf(pem->data(), static_cast<int>(pem->size()));
  Req req(PEM_read_bio_X509_REQ(b, nullptr, nullptr, nullptr));
  BIO_free(b);
  REQUIRE(req);
  CHECK(X509_NAME_entry_count(X509_REQ_get_subject_name(req.get())) == 0);
  STACK_OF(X509_EXTENSION)* exts = X509_REQ_get_extensions(req.get());
  REQUIRE(sk_X509_EXTENSION_num(exts) == 1);
  CHECK(X509_EXTENSION_get_critical(sk_X509_EXTENSION_value(exts, 0)) == 1);
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  CHECK(X509_REQ_get_signature_nid(req.get()) == NID_ecdsa_with_SHA256);
}

TEST_CASE("csr: a hand-made CSR in the same shape parses") {
  auto key = p256();
  auto parsed = parse_csr_pem(raw_csr(key.get(), "URI:" + kId));
  REQUIRE(parsed.ok());
  CHECK(parsed->spiffe_id == kId);
}

TEST_CASE("csr: make refuses other keys and bad ids") {
  KeyPtr rsa(EVP_RSA_gen(2048));
  REQUIRE(rsa);
  CHECK_FALSE(make_csr_pem(rsa.get(), kId).ok());
  KeyPtr p384(EVP_EC_gen("P-384"));
  CHECK_FALSE(make_csr_pem(p384.get(), kId).ok());
  auto key = p256();
  CHECK_FALSE(make_csr_pem(key.get(), "spiffe://cluster.local/ns/shop").ok());
  CHECK_FALSE(make_csr_pem(key.get(), "https://example.com/").ok());
}

TEST_CASE("csr: wrong key types are refused") {
  KeyPtr rsa(EVP_RSA_gen(2048));
  REQUIRE(rsa);
  require_refused(raw_csr(rsa.get(), "URI:" + kId), "not EC P-256");
  KeyPtr p384(EVP_EC_gen("P-384"));
  REQUIRE(p384);
  require_refused(raw_csr(p384.get(), "URI:" + kId, EVP_sha384()), "not EC P-256");
}

TEST_CASE("csr: SHA-1 signatures are refused") {
  auto key = p256();
  require_refused(raw_csr(key.get(), "URI:" + kId, EVP_sha1()), "not ecdsa-with-SHA256");
}

TEST_CASE("csr: the SAN must be exactly one SPIFFE URI") {
  auto key = p256();
  require_refused(raw_csr(key.get(), ""), "no subjectAltName");
  require_refused(raw_csr(key.get(), "URI:" + kId + ",URI:spiffe://cluster.local/ns/a/sa/b"),
                  "exactly one name");
  require_refused(raw_csr(key.get(), "URI:" + kId + ",DNS:cart.shop.svc"), "exactly one name");
  require_refused(raw_csr(key.get(), "DNS:cart.shop.svc"), "not a URI");
  require_refused(raw_csr(key.get(), "URI:https://cart.shop/"), "URI SAN");
  require_refused(raw_csr(key.get(), "URI:spiffe://cluster.local/ns/shop/sa/cart/extra"),
                  "URI SAN");
}

TEST_CASE("csr: garbage and empty input are refused") {
  require_refused("", "no CERTIFICATE REQUEST");
  require_refused("hello world", "no CERTIFICATE REQUEST");
  require_refused("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                  "malformed");
  // A certificate is not a CSR.
  auto key = p256();
  auto root = make_root_ca(key.get(), "root", std::chrono::hours(1));
  REQUIRE(root.ok());
  require_refused(to_pem(root->get()), "no CERTIFICATE REQUEST");
}

TEST_CASE("csr: oversized input is refused before parsing") {
  auto key = p256();
  auto pem = make_csr_pem(key.get(), kId);
  REQUIRE(pem.ok());
  std::string big = *pem + std::string(kMaxCsrPemBytes, '\n');
  require_refused(big, "larger than");
}

TEST_CASE("csr: two PEM blocks are refused") {
  auto key = p256();
  auto a = make_csr_pem(key.get(), kId);
  auto b = make_csr_pem(key.get(), "spiffe://cluster.local/ns/a/sa/b");
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  require_refused(*a + *b, "more than one PEM block");
}

TEST_CASE("csr: a tampered CSR does not verify") {
  auto key = p256();
  auto pem = make_csr_pem(key.get(), kId);
  REQUIRE(pem.ok());
  BIO* b = BIO_new_mem_buf(pem->data(), static_cast<int>(pem->size()));
  Req req(PEM_read_bio_X509_REQ(b, nullptr, nullptr, nullptr));
  BIO_free(b);
  REQUIRE(req);
  unsigned char* der = nullptr;
  int n = i2d_X509_REQ(req.get(), &der);
  REQUIRE(n > 0);
  std::string bytes(reinterpret_cast<char*>(der), static_cast<size_t>(n));
  OPENSSL_free(der);

  SECTION("the id swapped for another of the same length") {
    size_t at = bytes.find("sa/cart");
    REQUIRE(at != std::string::npos);
    bytes.replace(at, 7, "sa/cash");
  }
  SECTION("a flipped bit in the signature") {
    bytes[bytes.size() - 2] ^= 0x01;
  }

  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  Req bad(d2i_X509_REQ(nullptr, &p, static_cast<long>(bytes.size())));
  REQUIRE(bad);
  require_refused(req_pem(bad.get()), "signature does not verify");
}
