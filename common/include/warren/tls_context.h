// SSL_CTX objects for HBONE, wire compatible with Istio ztunnel
// (DESIGN.md §4, REFERENCE.md "HBONE"):
//   - TLS 1.3 only; TLS_AES_128_GCM_SHA256 and TLS_AES_256_GCM_SHA384 only;
//     key exchange groups X25519 and P-256;
//   - ALPN "h2": the server selects h2 and fails the handshake (alert
//     no_application_protocol) when the client offers no ALPN or no h2;
//   - both sides present their identity (leaf + intermediates); the server
//     requires a client certificate; peers' chains are verified against the
//     trust bundle (several roots allowed, for root rotation);
//   - no session tickets, no session cache, no resumption; the client sends
//     no SNI (simply never call SSL_set_tlsext_host_name).
//
// Identity checks:
//   - server: inside the handshake. After the chain verifies, the client's
//     leaf must carry exactly one valid SPIFFE id (parse_spiffe_id) whose trust
//     domain is the context's; otherwise verification fails with
//     X509_V_ERR_APPLICATION_VERIFICATION and the handshake aborts. The
//     caller then reads the id with peer_spiffe_id() for policy.
//   - client: the chain is verified in the handshake; whether the server is
//     the identity the client meant to reach is checked afterwards with
//     check_peer_identity() (the caller closes the connection when false).
//
// Contexts are immutable after creation and meant to be shared by every
// connection of one identity; a certificate or bundle rotation builds new
// contexts, and connections made with the old ones keep them (SSL_CTX is
// reference counted by OpenSSL).
#pragma once

#include <openssl/types.h>

#include <memory>
#include <string>
#include <vector>

#include "warren/certs.h"
#include "warren/result.h"

namespace warren::tls {

struct SslCtxDeleter {
  void operator()(SSL_CTX* c) const;
};
struct SslDeleter {
  void operator()(SSL* s) const;
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxDeleter>;
using SslPtr = std::unique_ptr<SSL, SslDeleter>;

// The HBONE server side for identity `id`. `trust_roots` are copied into the
// context. `trust_domain` is what every client's SPIFFE id must carry.
Result<SslCtxPtr> make_server_ctx(const certs::Identity& id, const std::vector<X509*>& trust_roots,
                                  std::string trust_domain);

// The HBONE client side for identity `id`.
Result<SslCtxPtr> make_client_ctx(const certs::Identity& id, const std::vector<X509*>& trust_roots);

// The controller's push channel (15012, DESIGN.md §6). The server presents
// the controller's certificate (a SPIFFE id of the controller's service
// account) and asks for no client certificate: nodes authenticate with a
// token inside HTTP/2. The client presents nothing, verifies the server's
// chain against `trust_roots` and then checks its SPIFFE id with
// check_peer_identity(). Same TLS 1.3 / ALPN h2 settings as HBONE.
Result<SslCtxPtr> make_push_server_ctx(const certs::Identity& id);
Result<SslCtxPtr> make_push_client_ctx(const std::vector<X509*>& trust_roots);
// After a successful handshake: the verified peer's SPIFFE id. An error when
// the handshake is not done, the peer sent no certificate, the chain did not
// verify, or the leaf has no single valid spiffe://<td>/ns/<ns>/sa/<sa> URI.
Result<std::string> peer_spiffe_id(SSL* ssl);

// Client side: true when the verified peer is exactly `expected_spiffe_id`.
bool check_peer_identity(SSL* ssl, const std::string& expected_spiffe_id);

// True when ALPN selected "h2" (a client should check it after the handshake).
bool negotiated_h2(SSL* ssl);

}  // namespace warren::tls
