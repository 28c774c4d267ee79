// Certificates for the fake API server, made at start-up: a throwaway CA
// (warren/certs.h make_root_ca), a server certificate for 127.0.0.1, ::1 and
// localhost, client certificates on demand, and the server's SSL_CTX (TLS
// 1.2+, client certificates requested but optional and verified against the
// CA when sent).
#pragma once

#include <openssl/types.h>

#include <string>
#include <utility>

#include "warren/certs.h"
#include "warren/result.h"

namespace warren::fakes {

struct FakePki {
  certs::Ca ca;
  certs::X509Ptr server_cert;
  certs::KeyPtr server_key;

  static Result<FakePki> create();
  std::string ca_pem() const;
  // PEM certificate and key, CN=<cn>, EKU clientAuth.
  Result<std::pair<std::string, std::string>> client_cert(const std::string& cn) const;
  // A new SSL_CTX (the caller frees it with SSL_CTX_free).
  Result<SSL_CTX*> server_ctx() const;
};

}  // namespace warren::fakes
