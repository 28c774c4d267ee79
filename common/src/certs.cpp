#include "warren/certs.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <ctime>

namespace warren::certs {

namespace {

using Clock = std::chrono::system_clock;

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

Error ssl_err(const std::string& what) {
  std::string detail = drain_openssl_errors();
  return make_error(Errc::kTls, detail.empty() ? what : what + ": " + detail);
}

std::string bio_string(BIO* b) {
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  return std::string(data, n > 0 ? static_cast<size_t>(n) : 0);
}

Result<void> set_time(ASN1_TIME* t, Clock::time_point tp) {
  time_t secs = Clock::to_time_t(tp);
  if (ASN1_TIME_set(t, secs) == nullptr) return ssl_err("setting certificate time");
  return {};
}

Clock::time_point from_asn1(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return {};
  return Clock::from_time_t(timegm(&tm));
}

Result<void> add_conf_ext(X509* x, X509V3_CTX* ctx, int nid, const char* value) {
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, ctx, nid, value);
  if (ext == nullptr) return ssl_err(std::string("building extension ") + OBJ_nid2sn(nid));
  int ok = X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  if (ok != 1) return ssl_err(std::string("adding extension ") + OBJ_nid2sn(nid));
  return {};
}

Result<void> set_random_serial(X509* x) {
  unsigned char buf[16];
  if (RAND_bytes(buf, sizeof buf) != 1) return ssl_err("random serial");
  buf[0] &= 0x7f;  // positive
  buf[0] |= 0x01;  // and never zero / never shortened below 121 bits
  BIGNUM* bn = BN_bin2bn(buf, sizeof buf, nullptr);
  bool ok = bn != nullptr && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != nullptr;
  BN_free(bn);
  if (!ok) return ssl_err("setting serial");
  return {};
}

// The common skeleton: version 3, serial, validity, key, subject/issuer.
Result<X509Ptr> new_cert(EVP_PKEY* pub, const std::string& common_name, X509* issuer,
                         Clock::time_point nb, Clock::time_point na) {
  X509Ptr x(X509_new());
  if (!x || X509_set_version(x.get(), 2) != 1) return ssl_err("X509_new");
  if (auto r = set_random_serial(x.get()); !r) return r.error();
  if (auto r = set_time(X509_getm_notBefore(x.get()), nb); !r) return r.error();
  if (auto r = set_time(X509_getm_notAfter(x.get()), na); !r) return r.error();
  if (X509_set_pubkey(x.get(), pub) != 1) return ssl_err("setting public key");
  X509_NAME* name = X509_get_subject_name(x.get());
  if (!common_name.empty() &&
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(common_name.c_str()), -1,
                                 -1, 0) != 1) {
    return ssl_err("setting common name");
  }
  X509_NAME* iname = issuer ? X509_get_subject_name(issuer) : name;
  if (X509_set_issuer_name(x.get(), iname) != 1) return ssl_err("setting issuer");
  return x;
}

Result<void> add_key_ids(X509* x, X509* issuer) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer ? issuer : x, x, nullptr, nullptr, 0);
  if (auto r = add_conf_ext(x, &ctx, NID_subject_key_identifier, "hash"); !r) return r;
  return add_conf_ext(x, &ctx, NID_authority_key_identifier, "keyid:always");
}

Result<X509Ptr> make_ca_cert(EVP_PKEY* pub, const std::string& cn, std::chrono::seconds lifetime,
                             const Ca* parent) {
  if (lifetime.count() <= 0) return make_error(Errc::kInvalidArgument, "CA lifetime must be > 0");
  auto now = Clock::now();
  auto x = new_cert(pub, cn, parent ? parent->cert.get() : nullptr, now - std::chrono::minutes(1),
                    now + lifetime);
  if (!x) return x.error();
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, nullptr, x->get(), nullptr, nullptr, 0);
  if (auto r = add_conf_ext(x->get(), &ctx, NID_basic_constraints, "critical,CA:TRUE"); !r)
    return r.error();
  if (auto r = add_conf_ext(x->get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign"); !r)
    return r.error();
  if (auto r = add_key_ids(x->get(), parent ? parent->cert.get() : nullptr); !r) return r.error();
  EVP_PKEY* signer = parent ? parent->key.get() : pub;
  if (X509_sign(x->get(), signer, EVP_sha256()) <= 0) return ssl_err("signing CA certificate");
  return x;
}

Result<std::string> read_small_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error::sys(path);
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      Error e = Error::sys(path);
      ::close(fd);
      return e;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > (4u << 20)) {
      ::close(fd);
      return make_error(Errc::kInvalidArgument, path + ": larger than 4 MiB");
    }
  }
  ::close(fd);
  return out;
}

int no_password(char*, int, int, void*) {
  return 0;
}  // never prompt on a terminal

}  // namespace

void KeyDeleter::operator()(EVP_PKEY* k) const {
  EVP_PKEY_free(k);
}
void X509Deleter::operator()(X509* c) const {
  X509_free(c);
}
void X509StackDeleter::operator()(stack_st_X509* s) const {
  sk_X509_pop_free(s, X509_free);
}

X509Ptr ref(X509* c) {
  if (c) X509_up_ref(c);
  return X509Ptr(c);
}
KeyPtr ref(EVP_PKEY* k) {
  if (k) EVP_PKEY_up_ref(k);
  return KeyPtr(k);
}

std::string drain_openssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

// ---- SPIFFE -------------------------------------------------------------------------------

std::string SpiffeId::to_string() const {
  return "spiffe://" + trust_domain + "/ns/" + ns + "/sa/" + sa;
}

Result<void> parse_spiffe_id(std::string_view uri, SpiffeId* out) {
  auto bad = [&](const char* why) {
    return make_error(Errc::kInvalidArgument, "\"" + std::string(uri) + "\": " + why);
  };
  constexpr std::string_view kScheme = "spiffe://";
  if (uri.substr(0, kScheme.size()) != kScheme) return bad("does not start with spiffe://");
  std::string_view rest = uri.substr(kScheme.size());
  size_t slash = rest.find('/');
  if (slash == std::string_view::npos) return bad("no path");
  std::string_view td = rest.substr(0, slash);
  if (td.empty()) return bad("empty trust domain");
  for (char c : td) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_'))
      return bad("trust domain may hold only lowercase letters, digits, '.', '-', '_'");
  }
  // Expect exactly 4 segments: ns, <ns>, sa, <sa>.
  std::string_view path = rest.substr(slash + 1);
  std::vector<std::string_view> segs;
  while (true) {
    size_t p = path.find('/');
    segs.push_back(path.substr(0, p));
    if (p == std::string_view::npos) break;
    path = path.substr(p + 1);
  }
  if (segs.size() != 4 || segs[0] != "ns" || segs[2] != "sa")
    return bad("path is not /ns/<namespace>/sa/<service-account>");
  for (size_t i : {1u, 3u}) {
    if (segs[i].empty()) return bad("empty namespace or service account");
    for (char c : segs[i]) {
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '.' || c == '-' || c == '_';
      if (!ok) return bad("namespace and service account may hold only [A-Za-z0-9._-]");
    }
  }
  if (out) *out = SpiffeId{std::string(td), std::string(segs[1]), std::string(segs[3])};
  return {};
}

std::optional<std::string> spiffe_uri_of(X509* cert) {
  if (cert == nullptr) return std::nullopt;
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return std::nullopt;
  std::optional<std::string> found;
  int count = 0;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, i);
    if (gn->type != GEN_URI) continue;
    const ASN1_IA5STRING* s = gn->d.uniformResourceIdentifier;
    std::string v(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                  static_cast<size_t>(ASN1_STRING_length(s)));
    if (v.rfind("spiffe://", 0) != 0) continue;
    if (v.find('\0') != std::string::npos) continue;
    ++count;
    found = std::move(v);
  }
  GENERAL_NAMES_free(names);
  if (count != 1) return std::nullopt;
  return found;
}

// ---- generation ---------------------------------------------------------------------------

Result<KeyPtr> generate_p256_key() {
  KeyPtr k(EVP_EC_gen("P-256"));
  if (!k) return ssl_err("generating P-256 key");
  return k;
}

Result<X509Ptr> make_root_ca(EVP_PKEY* key, std::string common_name,
                             std::chrono::seconds lifetime) {
  return make_ca_cert(key, common_name, lifetime, nullptr);
}

Result<X509Ptr> issue_intermediate_ca(const Ca& parent, EVP_PKEY* pub, std::string common_name,
                                      std::chrono::seconds lifetime) {
  return make_ca_cert(pub, common_name, lifetime, &parent);
}

Result<X509Ptr> issue_workload_cert(const Ca& ca, EVP_PKEY* leaf_pub, const std::string& spiffe_id,
                                    Clock::time_point not_before, Clock::time_point not_after) {
  if (!ca.cert || !ca.key || !leaf_pub)
    return make_error(Errc::kInvalidArgument, "issue_workload_cert: missing CA or key");
  if (spiffe_id.rfind("spiffe://", 0) != 0)
    return make_error(Errc::kInvalidArgument, "\"" + spiffe_id + "\" is not a spiffe:// URI");
  auto x = new_cert(leaf_pub, "", ca.cert.get(), not_before, not_after);
  if (!x) return x.error();
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, ca.cert.get(), x->get(), nullptr, nullptr, 0);
  if (auto r = add_conf_ext(x->get(), &ctx, NID_basic_constraints, "critical,CA:FALSE"); !r)
    return r.error();
  if (auto r =
          add_conf_ext(x->get(), &ctx, NID_key_usage, "critical,digitalSignature,keyEncipherment");
      !r)
    return r.error();
  if (auto r = add_conf_ext(x->get(), &ctx, NID_ext_key_usage, "serverAuth,clientAuth"); !r)
    return r.error();
  if (auto r = add_key_ids(x->get(), ca.cert.get()); !r) return r.error();

  // The SAN is built directly (not through the config syntax) so that any
  // character in the id is carried verbatim.
  GENERAL_NAMES* names = sk_GENERAL_NAME_new_null();
  GENERAL_NAME* gn = GENERAL_NAME_new();
  ASN1_IA5STRING* uri = ASN1_IA5STRING_new();
  bool ok = names && gn && uri && ASN1_STRING_set(uri, spiffe_id.data(), spiffe_id.size()) == 1;
  if (ok) {
    GENERAL_NAME_set0_value(gn, GEN_URI, uri);
    uri = nullptr;
    ok = sk_GENERAL_NAME_push(names, gn) > 0;
    if (ok) gn = nullptr;
  }
  // Critical: the subject is empty (RFC 5280 4.2.1.6).
  ok = ok && X509_add1_ext_i2d(x->get(), NID_subject_alt_name, names, 1, X509V3_ADD_DEFAULT) == 1;
  ASN1_IA5STRING_free(uri);
  GENERAL_NAME_free(gn);
  GENERAL_NAMES_free(names);
  if (!ok) return ssl_err("adding URI SAN");

  if (X509_sign(x->get(), ca.key.get(), EVP_sha256()) <= 0)
    return ssl_err("signing workload certificate");
  return x;
}

Result<void> verify_chain(X509* leaf, const std::vector<X509*>& intermediates,
                          const std::vector<X509*>& roots, Clock::time_point at) {
  std::unique_ptr<X509_STORE, decltype(&X509_STORE_free)> store(X509_STORE_new(), &X509_STORE_free);
  X509StackPtr untrusted(sk_X509_new_null());
  if (!store || !untrusted) return ssl_err("verify_chain");
  for (X509* r : roots)
    if (X509_STORE_add_cert(store.get(), r) != 1) return ssl_err("adding root");
  for (X509* c : intermediates) {
    X509_up_ref(c);
    sk_X509_push(untrusted.get(), c);
  }
  for (int purpose : {X509_PURPOSE_SSL_CLIENT, X509_PURPOSE_SSL_SERVER}) {
    std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> ctx(X509_STORE_CTX_new(),
                                                                        &X509_STORE_CTX_free);
    if (!ctx || X509_STORE_CTX_init(ctx.get(), store.get(), leaf, untrusted.get()) != 1)
      return ssl_err("X509_STORE_CTX_init");
    X509_STORE_CTX_set_purpose(ctx.get(), purpose);
    X509_STORE_CTX_set_time(ctx.get(), 0, Clock::to_time_t(at));
    if (X509_verify_cert(ctx.get()) != 1) {
      int e = X509_STORE_CTX_get_error(ctx.get());
      drain_openssl_errors();
      return make_error(Errc::kTls, std::string("certificate verification failed: ") +
                                        X509_verify_cert_error_string(e));
    }
  }
  return {};
}

Clock::time_point not_before_of(X509* cert) {
  return from_asn1(X509_get0_notBefore(cert));
}
Clock::time_point not_after_of(X509* cert) {
  return from_asn1(X509_get0_notAfter(cert));
}

// ---- PEM ----------------------------------------------------------------------------------

std::string to_pem(X509* cert) {
  BioPtr b(BIO_new(BIO_s_mem()));
  if (!b || PEM_write_bio_X509(b.get(), cert) != 1) return {};
  return bio_string(b.get());
}

std::string to_pem(EVP_PKEY* key) {
  BioPtr b(BIO_new(BIO_s_mem()));
  if (!b || PEM_write_bio_PrivateKey(b.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return {};
  return bio_string(b.get());
}

Result<std::vector<X509Ptr>> read_certs_pem(std::string_view pem) {
  ERR_clear_error();
  BioPtr b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!b) return ssl_err("BIO_new_mem_buf");
  std::vector<X509Ptr> out;
  while (X509* x = PEM_read_bio_X509(b.get(), nullptr, no_password, nullptr)) out.emplace_back(x);
  unsigned long e = ERR_peek_last_error();
  if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
    ERR_clear_error();  // the normal end of input
  } else if (e != 0) {
    return ssl_err("bad certificate PEM");
  }
  if (out.empty()) return make_error(Errc::kInvalidArgument, "no certificate found");
  return out;
}

Result<std::vector<X509Ptr>> read_certs_file(const std::string& path) {
  auto data = read_small_file(path);
  if (!data) return data.error();
  auto certs = read_certs_pem(*data);
  if (!certs) return certs.error().wrap(path);
  return certs;
}

Result<KeyPtr> read_key_pem(std::string_view pem) {
  ERR_clear_error();
  BioPtr b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!b) return ssl_err("BIO_new_mem_buf");
  KeyPtr k(PEM_read_bio_PrivateKey(b.get(), nullptr, no_password, nullptr));
  if (!k) {
    unsigned long e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
      ERR_clear_error();
      return make_error(Errc::kInvalidArgument, "no private key found");
    }
    return ssl_err("bad private key PEM");
  }
  return k;
}

Result<KeyPtr> read_key_file(const std::string& path) {
  auto data = read_small_file(path);
  if (!data) return data.error();
  auto k = read_key_pem(*data);
  if (!k) return k.error().wrap(path);
  return k;
}

bool key_matches(X509* cert, EVP_PKEY* key) {
  bool ok = cert && key && X509_check_private_key(cert, key) == 1;
  ERR_clear_error();
  return ok;
}

Result<void> write_file_atomic(const std::string& path, std::string_view data, unsigned mode) {
  static std::atomic<unsigned> counter{0};
  std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return Error::sys("create " + tmp);
  auto fail = [&](const std::string& what) {
    Error e = Error::sys(what + " " + tmp);
    ::close(fd);
    ::unlink(tmp.c_str());
    return e;
  };
  if (::fchmod(fd, mode) != 0) return fail("chmod");
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("write");
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) return fail("fsync");
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Error e = Error::sys("rename " + tmp + " -> " + path);
    ::unlink(tmp.c_str());
    return e;
  }
  return {};
}

// ---- Ca -----------------------------------------------------------------------------------

Result<Ca> Ca::load(const std::string& cert_file, const std::string& key_file) {
  auto certs = read_certs_file(cert_file);
  if (!certs) return certs.error();
  auto key = read_key_file(key_file);
  if (!key) return key.error();
  Ca ca{std::move(certs->front()), std::move(*key)};
  if (X509_check_ca(ca.cert.get()) == 0)
    return make_error(Errc::kInvalidArgument, cert_file + ": not a CA certificate");
  if (!key_matches(ca.cert.get(), ca.key.get()))
    return make_error(Errc::kInvalidArgument,
                      key_file + ": private key does not match the certificate in " + cert_file);
  return ca;
}

Result<void> Ca::save(const std::string& cert_file, const std::string& key_file) const {
  if (auto r = write_file_atomic(key_file, to_pem(key.get()), 0600); !r) return r;
  return write_file_atomic(cert_file, to_pem(cert.get()), 0644);
}

}  // namespace warren::certs

// ---- IdentityStore, in-memory edits (the file-backed part is in identity_store.cpp) ------

namespace warren::certs {

void IdentityStore::put(std::shared_ptr<const Identity> id) {
  if (!id) return;
  by_id_[id->spiffe_id] = std::move(id);
}

bool IdentityStore::remove(const std::string& spiffe_id) { return by_id_.erase(spiffe_id) > 0; }

void IdentityStore::set_roots(std::vector<X509Ptr> roots) { roots_ = std::move(roots); }

}  // namespace warren::certs
