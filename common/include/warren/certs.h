// Workload identity certificates: SPIFFE ids, key and certificate generation
// (dev CA, tests, the controller's CA), PEM I/O and the on-disk identity store
// warren-node serves HBONE with.
//
// Certificates follow REFERENCE.md "Certificates": ECDSA P-256, SHA-256, the
// SPIFFE id as the only URI SAN, no CN.
#pragma once

#include <openssl/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "warren/result.h"

struct stack_st_X509;  // STACK_OF(X509)

namespace warren::certs {

// ---- RAII ---------------------------------------------------------------------------------

struct KeyDeleter {
  void operator()(EVP_PKEY* k) const;
};
struct X509Deleter {
  void operator()(X509* c) const;
};
struct X509StackDeleter {  // frees the stack and every certificate in it
  void operator()(stack_st_X509* s) const;
};
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyDeleter>;
using X509Ptr = std::unique_ptr<X509, X509Deleter>;
using X509StackPtr = std::unique_ptr<stack_st_X509, X509StackDeleter>;

// Takes a new reference (X509_up_ref / EVP_PKEY_up_ref).
X509Ptr ref(X509* c);
KeyPtr ref(EVP_PKEY* k);

// Drains OpenSSL's thread-local error queue into one line ("" when empty).
std::string drain_openssl_errors();

// ---- SPIFFE ids ---------------------------------------------------------------------------

struct SpiffeId {
  std::string trust_domain, ns, sa;
  // spiffe://<trust_domain>/ns/<ns>/sa/<sa>
  std::string to_string() const;
  bool operator==(const SpiffeId&) const = default;
};

// Accepts exactly spiffe://<td>/ns/<ns>/sa/<sa>: every part non-empty, no
// further path segments, query or fragment; the trust domain is lowercase
// letters, digits, '.', '-', '_' (SPIFFE spec); ns/sa are letters, digits,
// '.', '-', '_'.
Result<void> parse_spiffe_id(std::string_view uri, SpiffeId* out);

// The certificate's one URI SAN starting with "spiffe://"; nullopt when there
// is none or more than one.
std::optional<std::string> spiffe_uri_of(X509* cert);

// ---- generation ---------------------------------------------------------------------------

Result<KeyPtr> generate_p256_key();

// Self-signed root: CN=common_name, basicConstraints CA:TRUE (critical),
// keyUsage keyCertSign+cRLSign (critical), SKI/AKI; valid from now - 1 min.
Result<X509Ptr> make_root_ca(EVP_PKEY* key, std::string common_name, std::chrono::seconds lifetime);

struct Ca {
  X509Ptr cert;
  KeyPtr key;

  // Reads both PEM files; the key must match the certificate and the
  // certificate must be a CA. Errors name the file.
  static Result<Ca> load(const std::string& cert_file, const std::string& key_file);
  // Writes both atomically; the key file gets mode 0600, the cert 0644.
  Result<void> save(const std::string& cert_file, const std::string& key_file) const;
};

// An intermediate CA signed by `parent` (for chains leaf -> intermediate -> root).
Result<X509Ptr> issue_intermediate_ca(const Ca& parent, EVP_PKEY* pub, std::string common_name,
                                      std::chrono::seconds lifetime);

// A workload leaf for `leaf_pub`: SHA-256 signature by ca.key, subject empty,
// the URI SAN `spiffe_id` only (critical, as the subject is empty), CA:FALSE,
// keyUsage digitalSignature+keyEncipherment, EKU serverAuth+clientAuth,
// random positive 128-bit serial, SKI/AKI. The id must start with "spiffe://"
// but is otherwise not validated, so tests can mint odd identities. No check
// is made that the times are sensible (tests mint expired certificates).
Result<X509Ptr> issue_workload_cert(const Ca& ca, EVP_PKEY* leaf_pub, const std::string& spiffe_id,
                                    std::chrono::system_clock::time_point not_before,
                                    std::chrono::system_clock::time_point not_after);

// Verifies leaf + intermediates up to one of `roots` at time `at` for TLS
// client or server use (the same checks a TLS handshake makes).
Result<void> verify_chain(X509* leaf, const std::vector<X509*>& intermediates,
                          const std::vector<X509*>& roots,
                          std::chrono::system_clock::time_point at);

std::chrono::system_clock::time_point not_before_of(X509* cert);
std::chrono::system_clock::time_point not_after_of(X509* cert);

// ---- PEM ----------------------------------------------------------------------------------

std::string to_pem(X509* cert);
std::string to_pem(EVP_PKEY* key);  // unencrypted PKCS#8 private key
// Every CERTIFICATE block in order; an error when there is none or one is bad.
Result<std::vector<X509Ptr>> read_certs_pem(std::string_view pem);
Result<std::vector<X509Ptr>> read_certs_file(const std::string& path);
Result<KeyPtr> read_key_pem(std::string_view pem);
Result<KeyPtr> read_key_file(const std::string& path);
// Does `key` hold the private key of `cert`?
bool key_matches(X509* cert, EVP_PKEY* key);

// Writes via a temporary file in the same directory and rename(2), so readers
// never see half a file; the file ends up with exactly `mode`.
Result<void> write_file_atomic(const std::string& path, std::string_view data, unsigned mode);

// ---- identity store -----------------------------------------------------------------------

struct Identity {
  std::string spiffe_id;  // read from the leaf's URI SAN
  X509Ptr leaf;
  std::vector<X509Ptr> chain;  // intermediates, leaf excluded, in file order
  KeyPtr key;
  std::chrono::system_clock::time_point not_before, not_after;
};

// Identities from a directory laid out as
//   <dir>/<namespace>/<service-account>/cert-chain.pem   leaf, then intermediates
//   <dir>/<namespace>/<service-account>/key.pem
// plus a trust bundle file holding one or more roots (several during a root
// rotation). The directory names only organise files: an identity's id comes
// from its certificate, so a test may place any certificate anywhere.
//
// Thread-compatible: the owner calls load/reload from one thread; the
// shared_ptrs handed out stay valid after a reload replaces an identity.
class IdentityStore {
 public:
  struct ReloadReport {
    std::vector<std::string> added, updated, removed;  // SPIFFE ids
    bool roots_changed = false;
    // One per broken file; the identity (or bundle) it would replace is kept.
    std::vector<Error> errors;
    bool changed() const {
      return roots_changed || !added.empty() || !updated.empty() || !removed.empty();
    }
  };

  // Reads the bundle and every identity. A bad bundle fails the whole load and
  // leaves the store unchanged. A bad identity (unreadable, no/several SPIFFE
  // URIs, key not matching the certificate, id already used by another
  // directory) is skipped: the good ones are loaded and the error lists every
  // bad file, one per line, as "<file>: <reason>".
  Result<void> load(const std::string& dir, const std::string& root_file);

  // Re-reads files whose inode, size or mtime changed since they were read,
  // picks up new directories and drops directories whose cert-chain.pem and
  // key.pem are both gone.
  ReloadReport reload();

  // In-memory use, for warren-node in controller mode where certificates come
  // from the CA, not from files (nodeproxy/cert_manager.h). These edit what
  // get()/ids()/roots() return; a later load() or reload() rebuilds from the
  // directory and drops what was put here, so do not mix the two on one store.
  // put: adds or replaces the identity with id->spiffe_id (the caller has
  // checked the key and chain); remove: true when there was one.
  void put(std::shared_ptr<const Identity> id);
  bool remove(const std::string& spiffe_id);
  void set_roots(std::vector<X509Ptr> roots);

  std::shared_ptr<const Identity> get(const std::string& spiffe_id) const;
  std::vector<std::string> ids() const;  // sorted
  const std::vector<X509Ptr>& roots() const { return roots_; }
  std::vector<X509*> root_ptrs() const;

  struct FileStamp {
    unsigned long long ino = 0, size = 0;
    long long mtime_ns = 0;
    bool exists = false;
    bool operator==(const FileStamp&) const = default;
  };

 private:
  struct Entry {
    FileStamp cert_stamp, key_stamp;
    std::shared_ptr<const Identity> id;  // null when never loaded successfully
  };
  Result<void> load_roots();
  // Loads <dir_>/<rel>; on success the identity, else an error naming the file.
  Result<std::shared_ptr<const Identity>> load_one(const std::string& rel) const;
  std::vector<std::string> scan(std::vector<Error>* errors) const;
  void rebuild_index(std::vector<Error>* errors);

  std::string dir_, root_file_;
  FileStamp root_stamp_;
  std::vector<X509Ptr> roots_;
  std::map<std::string, Entry> entries_;  // key: "<ns>/<sa>"
  std::map<std::string, std::shared_ptr<const Identity>> by_id_;
};

}  // namespace warren::certs
