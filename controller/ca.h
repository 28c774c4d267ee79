// The controller's certificate authority (DESIGN.md §6, REFERENCE.md
// "Certificates"): signs SPIFFE workload certificates on CSRs from
// warren-node with a generated self-signed root or a user-supplied root or
// intermediate, and publishes the trust bundle every node verifies with.
//
// Where the signing CA comes from, in order:
//   1. cert_file + key_file (+ chain_file): a user-supplied root, or an
//      intermediate whose chain_file holds the certificates above it up to
//      the root. Istio's cacerts layout maps as cert_file=ca-cert.pem,
//      key_file=ca-key.pem, chain_file=cert-chain.pem (a leading copy of the
//      signing certificate in the chain is skipped), extra_roots_file may
//      name root-cert.pem when the chain omits the root.
//   2. from_pem(): the same, as PEM text (a Kubernetes Secret's data, read by
//      whoever watches the Secret).
//   3. state_dir: a self-signed root generated on first start and saved as
//      <state_dir>/root-cert.pem and root-key.pem (0600), reloaded on every
//      later start so a restarted controller keeps its root.
// At load the CA issues itself a probe certificate and verifies it against
// the bundle, so a key, chain or root that does not fit fails at start-up,
// naming the file, rather than on the first node.
//
// Root rotation (both roots trusted during the overlap):
//   1. Trust the new root first: restart with the old signing CA as before
//      and the new root in extra_roots_file (or call set_extra_roots_pem).
//      The bundle now holds both; wait until every node acknowledged it.
//   2. Sign with the new root: restart with the new root (or an intermediate
//      under it) as cert/key and the OLD root in extra_roots_file. Nodes
//      renew at half-life onto the new root; certificates from the old one
//      keep verifying because the bundle still holds it.
//   3. After the longest workload lifetime has passed (max_ttl, 24 h with the
//      defaults) drop the old root from extra_roots_file (restart, or
//      set_extra_roots_pem). roots_fingerprint() changes at each step: the push
//      server sends the new bundle then.
// Step 1 may be skipped when a short failure window is acceptable: a node
// that receives a new-root certificate before a peer has the new bundle
// fails handshakes with that peer until the bundle arrives.
//
// Thread-compatible: use from the controller's loop thread.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "warren/certs.h"
#include "warren/result.h"

namespace warren::controller {

// Whether the node named `node` may obtain `spiffe_id` (a pod running as that
// identity is scheduled there): Model::identity_on_node.
using NodeAuthorizer = std::function<bool(const std::string& node, const std::string& spiffe_id)>;

struct CaOptions {
  std::string trust_domain = "cluster.local";
  std::string cert_file, key_file, chain_file;                 // a user-supplied signing CA
  std::string extra_roots_file;                                // further trusted roots (rotation)
  std::string state_dir;                                       // where a generated root lives
  std::chrono::seconds workload_ttl = std::chrono::hours(24);  // when a CSR asks for none
  std::chrono::seconds max_ttl = std::chrono::hours(24 * 90);  // Istio's cap
  std::chrono::seconds root_ttl = std::chrono::hours(24 * 365 * 10);  // generated root
  std::string root_common_name = "Warren Root CA";
  NodeAuthorizer authorize;  // for sign_for_node; unset: sign_for_node refuses
  std::function<std::chrono::system_clock::time_point()> clock;  // default system_clock::now
};

class CertificateAuthority {
 public:
  using Clock = std::chrono::system_clock;

  // From files or state_dir as described above. Errors name the file.
  static Result<CertificateAuthority> create(CaOptions opts);
  // From PEM text; cert_file/key_file/chain_file/extra_roots_file/state_dir in
  // `opts` are ignored. chain_pem and extra_roots_pem may be empty. Errors name
  // the part ("certificate", "key", "chain", "extra roots"); the caller adds
  // the Secret's name with Error::wrap.
  static Result<CertificateAuthority> from_pem(std::string_view cert_pem, std::string_view key_pem,
                                               std::string_view chain_pem,
                                               std::string_view extra_roots_pem,
                                               CaOptions opts = {});

  CertificateAuthority(CertificateAuthority&&) noexcept;
  CertificateAuthority& operator=(CertificateAuthority&&) noexcept;
  ~CertificateAuthority();

  // Signs a workload certificate for `spiffe_id` and returns the chain PEM:
  // the leaf, then the intermediates above it (never the root; roots travel
  // in the trust bundle). Refuses (kInvalidArgument) a CSR that does not
  // parse or verify (certs::parse_csr_pem) or whose URI SAN is not exactly
  // `spiffe_id`; (kPermissionDenied) an id outside the trust domain. ttl <= 0
  // means workload_ttl; longer than max_ttl is cut to max_ttl; not_after is
  // never later than that of any certificate of the signing chain. The
  // leaf's not_before is one minute in the past (clock skew between nodes).
  //
  // Does NOT check that the caller may hold the identity: use sign_for_node
  // from the push server, or check Model::identity_on_node first.
  Result<std::string> sign(std::string_view csr_pem, const std::string& spiffe_id,
                           std::chrono::seconds ttl = std::chrono::seconds(0));
  // sign() after options.authorize(node, spiffe_id) said yes; otherwise
  // kPermissionDenied. `node` must come from the authenticated connection
  // (the node's own client certificate or token), never from the request.
  Result<std::string> sign_for_node(const std::string& node, std::string_view csr_pem,
                                    const std::string& spiffe_id,
                                    std::chrono::seconds ttl = std::chrono::seconds(0));

  // Every trusted root, PEM concatenated: the signing chain's root first, then
  // the extra roots; duplicates removed.
  const std::string& trust_bundle_pem() const { return bundle_pem_; }
  std::vector<X509*> root_ptrs() const;
  // Hex SHA-256 over the sorted DER of the roots: changes exactly when the
  // set of trusted roots changes (the push server's cue to resend the bundle).
  const std::string& roots_fingerprint() const { return fingerprint_; }

  // Replaces the extra trusted roots at run time (rotation steps 1 and 3
  // without a restart). Empty PEM means none. On error nothing changes.
  Result<void> set_extra_roots_pem(std::string_view pem);

  X509* signing_cert() const { return signer_.cert.get(); }
  // The earliest not_after of the signing chain: no workload outlives it.
  Clock::time_point chain_not_after() const { return chain_not_after_; }
  const std::string& trust_domain() const { return opts_.trust_domain; }
  bool generated_root() const { return generated_; }

  struct Stats {
    uint64_t issued = 0, refused = 0;
  };
  const Stats& stats() const { return stats_; }

 private:
  CertificateAuthority() = default;
  // Sorts `chain` into intermediates and roots, builds the bundle, runs the
  // probe. `where` names the signing certificate's origin for errors.
  Result<void> assemble(std::vector<certs::X509Ptr> chain, std::vector<certs::X509Ptr> extra,
                        const std::string& where);
  void rebuild_bundle();
  Result<void> probe() const;
  Clock::time_point now() const;
  Error refuse(Error e, const std::string& spiffe_id);

  CaOptions opts_;
  certs::Ca signer_;
  std::vector<certs::X509Ptr> intermediates_;  // the signer unless a root, up to the root
  std::vector<certs::X509Ptr> chain_roots_;    // the signing chain's root(s)
  std::vector<certs::X509Ptr> extra_roots_;
  std::vector<certs::X509Ptr> roots_;  // chain_roots_ + extra_roots_, deduplicated
  std::string chain_tail_pem_;         // intermediates, appended to every leaf
  std::string bundle_pem_, fingerprint_;
  Clock::time_point chain_not_after_{};
  bool generated_ = false;
  Stats stats_;
};

}  // namespace warren::controller
