#include "fake_tls.h"

#include <openssl/bn.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

namespace warren::fakes {

namespace {

Error ssl_error(const std::string& what) {
  return make_error(Errc::kTls, what + ": " + certs::drain_openssl_errors());
}

bool add_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (!ext) return false;
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return ok == 1;
}

// A leaf signed by the CA: CN=<cn>, the given SANs and extended key usage.
Result<certs::X509Ptr> issue_leaf(const certs::Ca& ca, EVP_PKEY* key, const std::string& cn,
                                  const char* san, const char* eku) {
  certs::X509Ptr cert(X509_new());
  if (!cert) return ssl_error("X509_new");
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 24 * 3600);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), X509_get_subject_name(ca.cert.get()));
  X509_set_pubkey(cert.get(), key);
  bool ok = add_ext(cert.get(), ca.cert.get(), NID_basic_constraints, "critical,CA:FALSE") &&
            add_ext(cert.get(), ca.cert.get(), NID_key_usage,
                    "critical,digitalSignature,keyEncipherment") &&
            add_ext(cert.get(), ca.cert.get(), NID_ext_key_usage, eku) &&
            (!san || add_ext(cert.get(), ca.cert.get(), NID_subject_alt_name, san));
  if (!ok) return ssl_error("certificate extensions");
  if (X509_sign(cert.get(), ca.key.get(), EVP_sha256()) == 0) return ssl_error("X509_sign");
  return cert;
}

}  // namespace

Result<FakePki> FakePki::create() {
  FakePki p;
  auto ca_key = certs::generate_p256_key();
  if (!ca_key) return ca_key.error();
  auto ca_cert = certs::make_root_ca(ca_key->get(), "fake-kubernetes-ca", std::chrono::hours(24));
  if (!ca_cert) return ca_cert.error();
  p.ca.cert = std::move(*ca_cert);
  p.ca.key = std::move(*ca_key);
  auto key = certs::generate_p256_key();
  if (!key) return key.error();
  auto cert = issue_leaf(p.ca, key->get(), "kube-apiserver",
                         "DNS:localhost,DNS:kubernetes.default.svc,IP:127.0.0.1,IP:::1",
                         "serverAuth");
  if (!cert) return cert.error();
  p.server_cert = std::move(*cert);
  p.server_key = std::move(*key);
  return p;
}

std::string FakePki::ca_pem() const { return certs::to_pem(ca.cert.get()); }

Result<std::pair<std::string, std::string>> FakePki::client_cert(const std::string& cn) const {
  auto key = certs::generate_p256_key();
  if (!key) return key.error();
  auto cert = issue_leaf(ca, key->get(), cn, nullptr, "clientAuth");
  if (!cert) return cert.error();
  return std::make_pair(certs::to_pem(cert->get()), certs::to_pem(key->get()));
}

Result<SSL_CTX*> FakePki::server_ctx() const {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) return ssl_error("SSL_CTX_new");
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  if (SSL_CTX_use_certificate(ctx, server_cert.get()) != 1 ||
      SSL_CTX_use_PrivateKey(ctx, server_key.get()) != 1) {
    SSL_CTX_free(ctx);
    return ssl_error("server certificate");
  }
  X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca.cert.get());
  // Ask for a client certificate, accept connections without one.
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, [](int ok, X509_STORE_CTX*) { return 1; });
  SSL_CTX_set_session_id_context(ctx, reinterpret_cast<const unsigned char*>("fake"), 4);
  return ctx;
}

}  // namespace warren::fakes
