#include "warren/csr.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstring>
#include <memory>

namespace warren::certs {

namespace {

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
struct ReqDeleter {
  void operator()(X509_REQ* r) const { X509_REQ_free(r); }
};
using ReqPtr = std::unique_ptr<X509_REQ, ReqDeleter>;
struct ExtsDeleter {
  void operator()(STACK_OF(X509_EXTENSION) * s) const {
    sk_X509_EXTENSION_pop_free(s, X509_EXTENSION_free);
  }
};
using ExtsPtr = std::unique_ptr<STACK_OF(X509_EXTENSION), ExtsDeleter>;
struct NamesDeleter {
  void operator()(GENERAL_NAMES* n) const { GENERAL_NAMES_free(n); }
};
using NamesPtr = std::unique_ptr<GENERAL_NAMES, NamesDeleter>;

Error bad(const std::string& why) {
  drain_openssl_errors();
  return make_error(Errc::kInvalidArgument, "certificate signing request: " + why);
}

Error ssl_err(const std::string& what) {
  std::string detail = drain_openssl_errors();
  return make_error(Errc::kTls, detail.empty() ? what : what + ": " + detail);
}

int no_password(char*, int, int, void*) {
  return 0;
}

bool is_p256(EVP_PKEY* key) {
  if (key == nullptr || !EVP_PKEY_is_a(key, "EC")) return false;
  char name[64] = {};
  size_t len = 0;
  if (EVP_PKEY_get_group_name(key, name, sizeof name, &len) != 1) return false;
  std::string_view n(name, len);
  return n == "prime256v1" || n == "P-256" || n == "secp256r1";
}

}  // namespace

Result<std::string> make_csr_pem(EVP_PKEY* key, const std::string& spiffe_id) {
  if (!is_p256(key)) return make_error(Errc::kInvalidArgument, "CSR key must be EC P-256");
  if (auto r = parse_spiffe_id(spiffe_id, nullptr); !r) return r.error();
  ERR_clear_error();
  ReqPtr req(X509_REQ_new());
  if (!req || X509_REQ_set_version(req.get(), 0) != 1) return ssl_err("X509_REQ_new");
  if (X509_REQ_set_pubkey(req.get(), key) != 1) return ssl_err("setting CSR key");

  // subjectAltName = URI:<id>, critical as the subject is empty.
  NamesPtr names(sk_GENERAL_NAME_new_null());
  GENERAL_NAME* gn = GENERAL_NAME_new();
  ASN1_IA5STRING* uri = ASN1_IA5STRING_new();
  bool ok = names && gn && uri && ASN1_STRING_set(uri, spiffe_id.data(), spiffe_id.size()) == 1;
  if (ok) {
    GENERAL_NAME_set0_value(gn, GEN_URI, uri);
    uri = nullptr;
    ok = sk_GENERAL_NAME_push(names.get(), gn) > 0;
    if (ok) gn = nullptr;
  }
  ASN1_IA5STRING_free(uri);
  GENERAL_NAME_free(gn);
  if (!ok) return ssl_err("building URI SAN");
  ExtsPtr exts(sk_X509_EXTENSION_new_null());
  X509_EXTENSION* ext = X509V3_EXT_i2d(NID_subject_alt_name, 1, names.get());
  if (!exts || ext == nullptr) {
    X509_EXTENSION_free(ext);
    return ssl_err("building subjectAltName");
  }
  if (sk_X509_EXTENSION_push(exts.get(), ext) <= 0) {
    X509_EXTENSION_free(ext);
    return ssl_err("building extension list");
  }
  if (X509_REQ_add_extensions(req.get(), exts.get()) != 1) return ssl_err("adding CSR extensions");
  if (X509_REQ_sign(req.get(), key, EVP_sha256()) <= 0) return ssl_err("signing CSR");

  BioPtr b(BIO_new(BIO_s_mem()));
  if (!b || PEM_write_bio_X509_REQ(b.get(), req.get()) != 1) return ssl_err("writing CSR PEM");
  char* data = nullptr;
  long n = BIO_get_mem_data(b.get(), &data);
  return std::string(data, n > 0 ? static_cast<size_t>(n) : 0);
}

Result<ParsedCsr> parse_csr_pem(std::string_view pem) {
  if (pem.size() > kMaxCsrPemBytes)
    return bad("larger than " + std::to_string(kMaxCsrPemBytes) + " bytes");
  ERR_clear_error();
  BioPtr b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!b) return ssl_err("BIO_new_mem_buf");
  ReqPtr req(PEM_read_bio_X509_REQ(b.get(), nullptr, no_password, nullptr));
  if (!req) {
    unsigned long e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
      return bad("no CERTIFICATE REQUEST PEM block found");
    return bad("malformed: " + drain_openssl_errors());
  }
  // Whatever follows the block must not be another PEM block.
  char* rest = nullptr;
  long rest_len = BIO_get_mem_data(b.get(), &rest);
  if (rest_len > 0 && std::string_view(rest, static_cast<size_t>(rest_len)).find("-----BEGIN") !=
                          std::string_view::npos)
    return bad("more than one PEM block");

  EVP_PKEY* pub = X509_REQ_get0_pubkey(req.get());
  if (pub == nullptr) return bad("unreadable public key");
  if (!is_p256(pub)) return bad("the key is not EC P-256");
  if (X509_REQ_get_signature_nid(req.get()) != NID_ecdsa_with_SHA256)
    return bad("the signature algorithm is not ecdsa-with-SHA256");
  if (X509_REQ_verify(req.get(), pub) != 1) return bad("the signature does not verify");

  ExtsPtr exts(X509_REQ_get_extensions(req.get()));
  if (!exts) return bad("no subjectAltName");
  int crit = 0;
  NamesPtr names(static_cast<GENERAL_NAMES*>(
      X509V3_get_d2i(exts.get(), NID_subject_alt_name, &crit, nullptr)));
  if (!names) {
    if (crit == -2) return bad("more than one subjectAltName extension");
    if (crit == -1) return bad("no subjectAltName");
    return bad("malformed subjectAltName");
  }
  if (sk_GENERAL_NAME_num(names.get()) != 1)
    return bad("subjectAltName must hold exactly one name (a spiffe:// URI), it holds " +
               std::to_string(sk_GENERAL_NAME_num(names.get())));
  const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), 0);
  if (gn->type != GEN_URI) return bad("the subjectAltName is not a URI");
  const ASN1_IA5STRING* s = gn->d.uniformResourceIdentifier;
  std::string id(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                 static_cast<size_t>(ASN1_STRING_length(s)));
  if (id.find('\0') != std::string::npos) return bad("the URI SAN holds a NUL byte");
  if (auto r = parse_spiffe_id(id, nullptr); !r) return bad("URI SAN " + r.error().message);

  ParsedCsr out;
  out.spiffe_id = std::move(id);
  out.public_key = ref(pub);
  return out;
}

}  // namespace warren::certs
