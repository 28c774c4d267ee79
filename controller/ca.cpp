#include "ca.h"

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>

#include "warren/csr.h"
#include "warren/log.h"

namespace warren::controller {

namespace {

using certs::X509Ptr;
using Clock = std::chrono::system_clock;

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isspace(c) != 0; });
}

bool self_signed(X509* c) {
  return X509_self_signed(c, 1) == 1;
}

Error invalid(std::string msg) {
  return make_error(Errc::kInvalidArgument, std::move(msg));
}

Result<void> check_options(const CaOptions& o) {
  if (auto r = certs::parse_spiffe_id("spiffe://" + o.trust_domain + "/ns/a/sa/b", nullptr); !r)
    return invalid("trust domain \"" + o.trust_domain + "\" is not valid");
  if (o.workload_ttl.count() <= 0) return invalid("workload certificate lifetime must be > 0");
  if (o.max_ttl < o.workload_ttl)
    return invalid("maximum workload certificate lifetime is shorter than the default one");
  if (o.root_ttl.count() <= 0) return invalid("root lifetime must be > 0");
  return {};
}

Result<std::vector<X509Ptr>> read_cas(std::string_view pem, const std::string& what) {
  auto certs = certs::read_certs_pem(pem);
  if (!certs) return certs.error().wrap(what);
  for (auto& c : *certs)
    if (X509_check_ca(c.get()) == 0)
      return invalid(what + ": holds a certificate that is not a CA");
  return certs;
}

Result<std::vector<X509Ptr>> read_cas_file(const std::string& path) {
  auto certs = certs::read_certs_file(path);
  if (!certs) return certs.error();
  for (auto& c : *certs)
    if (X509_check_ca(c.get()) == 0)
      return invalid(path + ": holds a certificate that is not a CA");
  return certs;
}

// The root in <state_dir>: reloaded when both files are there, generated and
// saved when neither is; a half-present pair is an error (never overwritten).
Result<certs::Ca> load_or_generate_root(const CaOptions& o) {
  std::string cert = o.state_dir + "/root-cert.pem", key = o.state_dir + "/root-key.pem";
  bool has_cert = exists(cert), has_key = exists(key);
  if (has_cert && has_key) {
    auto ca = certs::Ca::load(cert, key);
    if (!ca) return ca.error();
    if (!self_signed(ca->cert.get())) return invalid(cert + ": not a self-signed root");
    struct stat st {};
    if (::stat(key.c_str(), &st) == 0 && (st.st_mode & 077) != 0)
      spdlog::warn("CA: {} is readable by group or others (mode {:o}); it should be 0600", key,
                   st.st_mode & 0777);
    spdlog::info("CA: using the root saved in {}", cert);
    return ca;
  }
  if (has_cert || has_key) {
    const std::string& missing = has_cert ? key : cert;
    const std::string& present = has_cert ? cert : key;
    return invalid(missing + ": missing while " + present +
                   " exists; refusing to generate a new root over it (restore the file, or "
                   "remove both to start a new root)");
  }
  if (::mkdir(o.state_dir.c_str(), 0700) != 0 && errno != EEXIST)
    return Error::sys("creating CA state directory " + o.state_dir);
  auto k = certs::generate_p256_key();
  if (!k) return k.error();
  auto root = certs::make_root_ca(k->get(), o.root_common_name, o.root_ttl);
  if (!root) return root.error();
  certs::Ca ca{std::move(*root), std::move(*k)};
  if (auto r = ca.save(cert, key); !r) return r.error().wrap("saving the generated root");
  spdlog::info("CA: generated a new self-signed root, saved in {}", cert);
  return ca;
}

std::string hex(const unsigned char* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    out += d[p[i] >> 4];
    out += d[p[i] & 15];
  }
  return out;
}

std::string der(X509* c) {
  unsigned char* buf = nullptr;
  int n = i2d_X509(c, &buf);
  std::string out(n > 0 ? reinterpret_cast<char*>(buf) : "", n > 0 ? static_cast<size_t>(n) : 0);
  OPENSSL_free(buf);
  return out;
}

}  // namespace

CertificateAuthority::CertificateAuthority(CertificateAuthority&&) noexcept = default;
CertificateAuthority& CertificateAuthority::operator=(CertificateAuthority&&) noexcept = default;
CertificateAuthority::~CertificateAuthority() = default;

Result<CertificateAuthority> CertificateAuthority::create(CaOptions opts) {
  if (auto r = check_options(opts); !r) return r.error();
  CertificateAuthority ca;
  ca.opts_ = std::move(opts);
  const CaOptions& o = ca.opts_;
  std::vector<X509Ptr> chain, extra;
  std::string where;
  if (!o.cert_file.empty() || !o.key_file.empty()) {
    if (o.cert_file.empty() || o.key_file.empty())
      return invalid("a user-supplied CA needs both a certificate file and a key file");
    auto loaded = certs::Ca::load(o.cert_file, o.key_file);
    if (!loaded) return loaded.error();
    ca.signer_ = std::move(*loaded);
    // Certificates after the first in cert_file count as chain.
    if (auto all = certs::read_certs_file(o.cert_file); all && all->size() > 1)
      for (size_t i = 1; i < all->size(); ++i) chain.push_back(std::move((*all)[i]));
    if (!o.chain_file.empty()) {
      auto c = read_cas_file(o.chain_file);
      if (!c) return c.error();
      for (auto& x : *c) chain.push_back(std::move(x));
    }
    where = o.cert_file;
  } else if (!o.state_dir.empty()) {
    auto root = load_or_generate_root(o);
    if (!root) return root.error();
    ca.signer_ = std::move(*root);
    ca.generated_ = true;
    where = o.state_dir + "/root-cert.pem";
  } else {
    return invalid(
        "no signing CA: give a certificate and key file, or a state directory for a "
        "generated root");
  }
  if (!o.extra_roots_file.empty()) {
    auto c = read_cas_file(o.extra_roots_file);
    if (!c) return c.error();
    extra = std::move(*c);
  }
  if (auto r = ca.assemble(std::move(chain), std::move(extra), where); !r) return r.error();
  return ca;
}

Result<CertificateAuthority> CertificateAuthority::from_pem(std::string_view cert_pem,
                                                            std::string_view key_pem,
                                                            std::string_view chain_pem,
                                                            std::string_view extra_roots_pem,
                                                            CaOptions opts) {
  if (auto r = check_options(opts); !r) return r.error();
  auto certs = certs::read_certs_pem(cert_pem);
  if (!certs) return certs.error().wrap("certificate");
  auto key = certs::read_key_pem(key_pem);
  if (!key) return key.error().wrap("key");
  CertificateAuthority ca;
  ca.opts_ = std::move(opts);
  ca.signer_ = certs::Ca{std::move(certs->front()), std::move(*key)};
  if (X509_check_ca(ca.signer_.cert.get()) == 0)
    return invalid("certificate: not a CA certificate");
  if (!certs::key_matches(ca.signer_.cert.get(), ca.signer_.key.get()))
    return invalid("key: private key does not match the certificate");
  std::vector<X509Ptr> chain, extra;
  for (size_t i = 1; i < certs->size(); ++i) chain.push_back(std::move((*certs)[i]));
  if (!blank(chain_pem)) {
    auto c = read_cas(chain_pem, "chain");
    if (!c) return c.error();
    for (auto& x : *c) chain.push_back(std::move(x));
  }
  if (!blank(extra_roots_pem)) {
    auto c = read_cas(extra_roots_pem, "extra roots");
    if (!c) return c.error();
    extra = std::move(*c);
  }
  if (auto r = ca.assemble(std::move(chain), std::move(extra), "certificate"); !r) return r.error();
  return ca;
}

Clock::time_point CertificateAuthority::now() const {
  return opts_.clock ? opts_.clock() : Clock::now();
}

Result<void> CertificateAuthority::assemble(std::vector<X509Ptr> chain, std::vector<X509Ptr> extra,
                                            const std::string& where) {
  X509* s = signer_.cert.get();
  // Sent with every leaf: the signer unless it is the root, then the rest.
  (self_signed(s) ? chain_roots_ : intermediates_).push_back(certs::ref(s));
  for (auto& c : chain) {
    if (X509_cmp(c.get(), s) == 0) continue;  // Istio's cert-chain.pem repeats the signer
    if (X509_check_ca(c.get()) == 0)
      return invalid(where + ": the chain holds a certificate that is not a CA");
    (self_signed(c.get()) ? chain_roots_ : intermediates_).push_back(std::move(c));
  }
  extra_roots_ = std::move(extra);
  rebuild_bundle();
  if (roots_.empty())
    return invalid(where +
                   ": the signing certificate is not self-signed and no root was given (end the "
                   "chain with the root, or add it to the extra trusted roots)");
  chain_not_after_ = certs::not_after_of(s);
  for (const auto* list : {&intermediates_, &chain_roots_})
    for (const auto& c : *list)
      chain_not_after_ = std::min(chain_not_after_, certs::not_after_of(c.get()));
  auto t = now();
  if (chain_not_after_ <= t)
    return invalid(where + ": the signing chain expired at " +
                   log::rfc3339_millis(chain_not_after_));
  if (auto r = probe(); !r)
    return invalid(
        where + ": the signing certificate does not chain to a trusted root: " + r.error().message);
  chain_tail_pem_.clear();
  for (auto& c : intermediates_) chain_tail_pem_ += certs::to_pem(c.get());
  if (chain_not_after_ - t < opts_.workload_ttl)
    spdlog::warn("CA: the signing chain expires at {}: workload certificates will be shorter",
                 log::rfc3339_millis(chain_not_after_));
  return {};
}

void CertificateAuthority::rebuild_bundle() {
  roots_.clear();
  for (const auto* list : {&chain_roots_, &extra_roots_})
    for (const auto& c : *list) {
      bool dup = std::any_of(roots_.begin(), roots_.end(),
                             [&](const X509Ptr& r) { return X509_cmp(r.get(), c.get()) == 0; });
      if (!dup) roots_.push_back(certs::ref(c.get()));
    }
  bundle_pem_.clear();
  std::vector<std::string> ders;
  for (auto& r : roots_) {
    bundle_pem_ += certs::to_pem(r.get());
    ders.push_back(der(r.get()));
  }
  std::sort(ders.begin(), ders.end());
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestInit_ex(md, EVP_sha256(), nullptr);
  for (auto& d : ders) EVP_DigestUpdate(md, d.data(), d.size());
  EVP_DigestFinal_ex(md, out, &n);
  EVP_MD_CTX_free(md);
  fingerprint_ = hex(out, n);
}

// A probe leaf, verified as a node would: catches a wrong chain or root.
Result<void> CertificateAuthority::probe() const {
  auto key = certs::generate_p256_key();
  if (!key) return key.error();
  auto t = now();
  auto leaf = certs::issue_workload_cert(
      signer_, key->get(), "spiffe://" + opts_.trust_domain + "/ns/warren-system/sa/ca-probe",
      t - std::chrono::minutes(1),
      std::min<Clock::time_point>(t + std::chrono::hours(1), chain_not_after_));
  if (!leaf) return leaf.error();
  std::vector<X509*> inter;
  for (auto& c : intermediates_) inter.push_back(c.get());
  return certs::verify_chain(leaf->get(), inter, root_ptrs(), t);
}

std::vector<X509*> CertificateAuthority::root_ptrs() const {
  std::vector<X509*> out;
  for (auto& r : roots_) out.push_back(r.get());
  return out;
}

Result<void> CertificateAuthority::set_extra_roots_pem(std::string_view pem) {
  std::vector<X509Ptr> fresh;
  if (!blank(pem)) {
    auto c = read_cas(pem, "extra roots");
    if (!c) return c.error();
    fresh = std::move(*c);
  }
  std::vector<X509Ptr> old = std::move(extra_roots_);
  extra_roots_ = std::move(fresh);
  rebuild_bundle();
  // The signing chain's root may have come from the extra roots: it must stay.
  if (auto r = probe(); !r) {
    extra_roots_ = std::move(old);
    rebuild_bundle();
    return invalid(
        "extra roots: the signing certificate would no longer chain to a trusted "
        "root: " +
        r.error().message);
  }
  spdlog::info("CA: trust bundle now holds {} root(s), fingerprint {}", roots_.size(),
               fingerprint_.substr(0, 16));
  return {};
}

Error CertificateAuthority::refuse(Error e, const std::string& spiffe_id) {
  ++stats_.refused;
  spdlog::warn("CA: refused to sign {}: {}", log::escape(spiffe_id), log::escape(e.message));
  return e.wrap("signing " + spiffe_id);
}

Result<std::string> CertificateAuthority::sign(std::string_view csr_pem,
                                               const std::string& spiffe_id,
                                               std::chrono::seconds ttl) {
  auto csr = certs::parse_csr_pem(csr_pem);
  if (!csr) return refuse(csr.error(), spiffe_id);
  if (csr->spiffe_id != spiffe_id)
    return refuse(invalid("the CSR is for " + csr->spiffe_id + ", not " + spiffe_id), spiffe_id);
  certs::SpiffeId id;
  if (auto r = certs::parse_spiffe_id(spiffe_id, &id); !r) return refuse(r.error(), spiffe_id);
  if (id.trust_domain != opts_.trust_domain)
    return refuse(
        make_error(Errc::kPermissionDenied, "outside the trust domain " + opts_.trust_domain),
        spiffe_id);
  if (ttl.count() <= 0) ttl = opts_.workload_ttl;
  ttl = std::min(ttl, opts_.max_ttl);
  auto t = now();
  auto not_after = std::min<Clock::time_point>(t + ttl, chain_not_after_);
  if (not_after <= t)
    return refuse(make_error(Errc::kUnavailable, "the signing chain expired at " +
                                                     log::rfc3339_millis(chain_not_after_)),
                  spiffe_id);
  auto leaf = certs::issue_workload_cert(signer_, csr->public_key.get(), spiffe_id,
                                         t - std::chrono::minutes(1), not_after);
  if (!leaf) return refuse(leaf.error(), spiffe_id);
  ++stats_.issued;
  spdlog::debug("CA: issued {} until {}", spiffe_id, log::rfc3339_millis(not_after));
  return certs::to_pem(leaf->get()) + chain_tail_pem_;
}

Result<std::string> CertificateAuthority::sign_for_node(const std::string& node,
                                                        std::string_view csr_pem,
                                                        const std::string& spiffe_id,
                                                        std::chrono::seconds ttl) {
  if (!opts_.authorize)
    return refuse(make_error(Errc::kPermissionDenied, "no node authorizer is configured"),
                  spiffe_id);
  if (!opts_.authorize(node, spiffe_id))
    return refuse(
        make_error(Errc::kPermissionDenied, "node " + node + " runs no pod with this identity"),
        spiffe_id);
  return sign(csr_pem, spiffe_id, ttl);
}

}  // namespace warren::controller
