// PKCS#10 certificate signing requests for workload identities: warren-node
// makes one per identity it needs, the controller's CA checks it and signs
// (REFERENCE.md "Certificates": ECDSA P-256, SHA-256, the SPIFFE id as the
// only URI SAN, no CN).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "warren/certs.h"
#include "warren/result.h"

namespace warren::certs {

// A P-256 CSR with one URI SAN is well under 1 KiB of PEM; anything larger
// than this is refused before it is parsed.
inline constexpr size_t kMaxCsrPemBytes = 16 * 1024;

// A CSR for `key` (must be an EC P-256 private key): empty subject, a
// subjectAltName extension holding only the URI `spiffe_id` (which must parse
// with parse_spiffe_id), signed with ECDSA-SHA256. Returns the PEM
// ("-----BEGIN CERTIFICATE REQUEST-----").
Result<std::string> make_csr_pem(EVP_PKEY* key, const std::string& spiffe_id);

struct ParsedCsr {
  std::string spiffe_id;  // the one URI SAN
  KeyPtr public_key;      // the requester's key (public part only), EC P-256
};

// Parses and checks a CSR PEM. Refused (Errc::kInvalidArgument, the reason in
// the message): more than kMaxCsrPemBytes; no CERTIFICATE REQUEST block or a
// second one; a key that is not EC P-256; a signature algorithm other than
// ECDSA-SHA256 or a signature that does not verify; no subjectAltName, more
// than one, or any name in it other than exactly one URI; a URI that is not a
// valid SPIFFE id (parse_spiffe_id). The subject and every other extension
// are ignored: a CA builds the certificate from the id and the key only.
Result<ParsedCsr> parse_csr_pem(std::string_view pem);

}  // namespace warren::certs
