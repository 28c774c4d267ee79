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

// ---- IdentityStore ------------------------------------------------------------------------
// (Kept in this file because the brief gives certs.cpp; a natural split is
// identity_store.cpp.)

namespace {

constexpr const char* kChainFile = "cert-chain.pem";
constexpr const char* kKeyFile = "key.pem";

IdentityStore::FileStamp stamp_of(const std::string& path) {
  IdentityStore::FileStamp s;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return s;
  s.exists = true;
  s.ino = st.st_ino;
  s.size = static_cast<unsigned long long>(st.st_size);
  s.mtime_ns = static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  return s;
}

bool is_dir(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Sorted names of the subdirectories of `dir` (hidden ones skipped).
Result<std::vector<std::string>> subdirs(const std::string& dir) {
  struct DirCloser {
    void operator()(DIR* d) const { ::closedir(d); }
  };
  std::unique_ptr<DIR, DirCloser> d(::opendir(dir.c_str()));
  if (!d) return Error::sys(dir);
  std::vector<std::string> out;
  while (dirent* e = ::readdir(d.get())) {
    if (e->d_name[0] == '.') continue;
    std::string name = e->d_name;
    if (is_dir(dir + "/" + name)) out.push_back(std::move(name));
  }
  std::sort(out.begin(), out.end());
  return out;
}

Error join_errors(const std::vector<Error>& errs) {
  std::string msg;
  for (const Error& e : errs) {
    if (!msg.empty()) msg += "\n";
    msg += e.message;
  }
  return make_error(errs.front().code, msg);
}

}  // namespace

std::vector<std::string> IdentityStore::scan(std::vector<Error>* errors) const {
  std::vector<std::string> rels;
  auto nss = subdirs(dir_);
  if (!nss) {
    errors->push_back(nss.error());
    return rels;
  }
  for (const std::string& ns : *nss) {
    auto sas = subdirs(dir_ + "/" + ns);
    if (!sas) {
      errors->push_back(sas.error());
      continue;
    }
    for (const std::string& sa : *sas) {
      std::string rel = ns + "/" + sa;
      std::string base = dir_ + "/" + rel + "/";
      if (stamp_of(base + kChainFile).exists || stamp_of(base + kKeyFile).exists)
        rels.push_back(std::move(rel));
    }
  }
  return rels;
}

Result<std::shared_ptr<const Identity>> IdentityStore::load_one(const std::string& rel) const {
  std::string cert_path = dir_ + "/" + rel + "/" + kChainFile;
  std::string key_path = dir_ + "/" + rel + "/" + kKeyFile;
  auto certs = read_certs_file(cert_path);
  if (!certs) return certs.error();
  auto key = read_key_file(key_path);
  if (!key) return key.error();
  auto id = std::make_shared<Identity>();
  id->leaf = std::move(certs->front());
  for (size_t i = 1; i < certs->size(); ++i) id->chain.push_back(std::move((*certs)[i]));
  auto uri = spiffe_uri_of(id->leaf.get());
  if (!uri)
    return make_error(Errc::kInvalidArgument,
                      cert_path + ": the leaf certificate has no single spiffe:// URI SAN");
  if (!key_matches(id->leaf.get(), key->get()))
    return make_error(Errc::kInvalidArgument,
                      key_path + ": private key does not match the certificate in " + cert_path);
  id->spiffe_id = std::move(*uri);
  id->key = std::move(*key);
  id->not_before = not_before_of(id->leaf.get());
  id->not_after = not_after_of(id->leaf.get());
  return std::shared_ptr<const Identity>(std::move(id));
}

Result<void> IdentityStore::load_roots() {
  FileStamp st = stamp_of(root_file_);
  root_stamp_ = st;  // a broken bundle is reported once, not on every reload
  auto roots = read_certs_file(root_file_);
  if (!roots) return roots.error();
  roots_ = std::move(*roots);
  return {};
}

void IdentityStore::rebuild_index(std::vector<Error>* errors) {
  by_id_.clear();
  for (auto& [rel, e] : entries_) {
    if (!e.id) continue;
    auto [it, inserted] = by_id_.emplace(e.id->spiffe_id, e.id);
    if (!inserted) {
      errors->push_back(
          make_error(Errc::kInvalidArgument, dir_ + "/" + rel + "/" + kChainFile + ": identity " +
                                                 e.id->spiffe_id +
                                                 " is already served from another directory"));
    }
  }
}

Result<void> IdentityStore::load(const std::string& dir, const std::string& root_file) {
  IdentityStore fresh;
  fresh.dir_ = dir;
  fresh.root_file_ = root_file;
  if (auto r = fresh.load_roots(); !r) return r.error().wrap("loading trust bundle");
  std::vector<Error> errors;
  if (!is_dir(dir)) return make_error(Errc::kNotFound, dir + ": not a directory");
  for (const std::string& rel : fresh.scan(&errors)) {
    Entry e;
    e.cert_stamp = stamp_of(dir + "/" + rel + "/" + kChainFile);
    e.key_stamp = stamp_of(dir + "/" + rel + "/" + kKeyFile);
    auto id = fresh.load_one(rel);
    if (id) {
      e.id = std::move(*id);
    } else {
      errors.push_back(id.error());
    }
    fresh.entries_.emplace(rel, std::move(e));
  }
  fresh.rebuild_index(&errors);
  *this = std::move(fresh);
  if (!errors.empty()) return join_errors(errors);
  return {};
}

IdentityStore::ReloadReport IdentityStore::reload() {
  ReloadReport rep;
  if (stamp_of(root_file_) != root_stamp_) {
    std::vector<X509Ptr> old = std::move(roots_);
    if (auto r = load_roots(); r) {
      rep.roots_changed = true;
    } else {
      roots_ = std::move(old);
      rep.errors.push_back(r.error().wrap("trust bundle kept"));
    }
  }
  size_t scan_errors = rep.errors.size();
  std::vector<std::string> rels = scan(&rep.errors);
  if (rep.errors.size() != scan_errors && rels.empty()) return rep;  // unreadable: keep all

  auto before = by_id_;
  std::map<std::string, Entry> next;
  for (const std::string& rel : rels) {
    Entry e;
    e.cert_stamp = stamp_of(dir_ + "/" + rel + "/" + kChainFile);
    e.key_stamp = stamp_of(dir_ + "/" + rel + "/" + kKeyFile);
    auto old = entries_.find(rel);
    if (old != entries_.end() && old->second.cert_stamp == e.cert_stamp &&
        old->second.key_stamp == e.key_stamp) {
      next.emplace(rel, std::move(old->second));
      continue;
    }
    auto id = load_one(rel);
    if (id) {
      e.id = std::move(*id);
    } else {
      rep.errors.push_back(id.error());
      if (old != entries_.end()) e.id = old->second.id;  // keep serving the last good one
    }
    next.emplace(rel, std::move(e));
  }
  entries_ = std::move(next);
  rebuild_index(&rep.errors);

  for (const auto& [id, ptr] : by_id_) {
    auto it = before.find(id);
    if (it == before.end()) {
      rep.added.push_back(id);
    } else if (it->second != ptr) {
      rep.updated.push_back(id);
    }
  }
  for (const auto& [id, ptr] : before)
    if (!by_id_.count(id)) rep.removed.push_back(id);
  return rep;
}

std::shared_ptr<const Identity> IdentityStore::get(const std::string& spiffe_id) const {
  auto it = by_id_.find(spiffe_id);
  return it == by_id_.end() ? nullptr : it->second;
}

std::vector<std::string> IdentityStore::ids() const {
  std::vector<std::string> out;
  for (const auto& [id, ptr] : by_id_) out.push_back(id);
  return out;
}

std::vector<X509*> IdentityStore::root_ptrs() const {
  std::vector<X509*> out;
  for (const auto& r : roots_) out.push_back(r.get());
  return out;
}

}  // namespace warren::certs
