#include "warren/tls_context.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <cstring>

namespace warren::tls {

namespace {

constexpr const char* kCipherSuites = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384";
constexpr const char* kGroups = "X25519:P-256";
constexpr unsigned char kAlpnH2[] = {2, 'h', '2'};

Error ssl_err(const std::string& what) {
  std::string detail = certs::drain_openssl_errors();
  return make_error(Errc::kTls, detail.empty() ? what : what + ": " + detail);
}

// The trust domain a context requires of its peers ("" = any valid SPIFFE id),
// owned by the SSL_CTX through ex_data so it lives exactly as long as it.
void free_trust_domain(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  delete static_cast<std::string*>(ptr);
}

int trust_domain_index() {
  static const int idx = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_trust_domain);
  return idx;
}

// Runs the normal chain verification, then checks the leaf's SPIFFE id.
int verify_cert(X509_STORE_CTX* store, void* arg) {
  if (X509_verify_cert(store) != 1) return 0;
  const auto* td = static_cast<const std::string*>(arg);
  X509* leaf = X509_STORE_CTX_get0_cert(store);
  auto uri = certs::spiffe_uri_of(leaf);
  certs::SpiffeId id;
  if (!uri || !certs::parse_spiffe_id(*uri, &id).ok() || (!td->empty() && id.trust_domain != *td)) {
    X509_STORE_CTX_set_current_cert(store, leaf);
    X509_STORE_CTX_set_error_depth(store, 0);
    X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
  }
  return 1;
}

// A ClientHello without the ALPN extension never reaches the ALPN callback,
// so its absence is refused here.
int client_hello_cb(SSL* ssl, int* alert, void*) {
  const unsigned char* data = nullptr;
  size_t len = 0;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &data,
                                &len) != 1) {
    *alert = SSL_AD_NO_APPLICATION_PROTOCOL;
    return SSL_CLIENT_HELLO_ERROR;
  }
  return SSL_CLIENT_HELLO_SUCCESS;
}

int alpn_select_cb(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                   unsigned int inlen, void*) {
  unsigned int i = 0;
  while (i < inlen) {
    unsigned int n = in[i];
    if (n == 0 || i + 1 + n > inlen) break;  // malformed list
    if (n == 2 && std::memcmp(in + i + 1, "h2", 2) == 0) {
      *out = in + i + 1;
      *outlen = 2;
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + n;
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;  // no_application_protocol
}

// Everything both sides share: protocol, ciphers, identity, trust, no resumption.
// `id` may be null for a side that presents no certificate (the push client).
Result<SslCtxPtr> base_ctx(const SSL_METHOD* method, const certs::Identity* id,
                           const std::vector<X509*>& trust_roots, std::string trust_domain) {
  if (id && (!id->leaf || !id->key))
    return make_error(Errc::kInvalidArgument, "identity without cert/key");
  if (trust_roots.empty()) return make_error(Errc::kInvalidArgument, "empty trust bundle");
  ERR_clear_error();
  SslCtxPtr ctx(SSL_CTX_new(method));
  if (!ctx) return ssl_err("SSL_CTX_new");
  SSL_CTX* c = ctx.get();
  if (SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION) != 1)
    return ssl_err("restricting to TLS 1.3");
  if (SSL_CTX_set_ciphersuites(c, kCipherSuites) != 1) return ssl_err("setting ciphersuites");
  if (SSL_CTX_set1_groups_list(c, kGroups) != 1) return ssl_err("setting groups");
  SSL_CTX_set_options(c, SSL_OP_NO_TICKET | SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  // Record buffers (about 34 KB per connection) are freed while a
  // connection is idle: a node holds thousands of idle tunnels, the
  // controller one connection per node. warren-node and warren-waypoint
  // keep them on busy connections instead (H2Conn::keep_tls_buffers_while_busy).
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_num_tickets(c, 0);
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_max_early_data(c, 0);

  if (id) {
    if (SSL_CTX_use_certificate(c, id->leaf.get()) != 1) return ssl_err("using leaf certificate");
    for (const auto& inter : id->chain)
      if (SSL_CTX_add1_chain_cert(c, inter.get()) != 1) return ssl_err("adding chain certificate");
    if (SSL_CTX_use_PrivateKey(c, id->key.get()) != 1) return ssl_err("using private key");
    if (SSL_CTX_check_private_key(c) != 1) return ssl_err("key does not match certificate");
  }

  X509_STORE* store = SSL_CTX_get_cert_store(c);
  for (X509* root : trust_roots)
    if (X509_STORE_add_cert(store, root) != 1) return ssl_err("adding trust root");

  auto* td = new std::string(std::move(trust_domain));
  if (SSL_CTX_set_ex_data(c, trust_domain_index(), td) != 1) {
    delete td;
    return ssl_err("SSL_CTX_set_ex_data");
  }
  SSL_CTX_set_cert_verify_callback(c, verify_cert, td);
  return ctx;
}

}  // namespace

void SslCtxDeleter::operator()(SSL_CTX* c) const {
  SSL_CTX_free(c);
}
void SslDeleter::operator()(SSL* s) const {
  SSL_free(s);
}

Result<SslCtxPtr> make_server_ctx(const certs::Identity& id, const std::vector<X509*>& trust_roots,
                                  std::string trust_domain) {
  if (trust_domain.empty())
    return make_error(Errc::kInvalidArgument, "server context needs a trust domain");
  auto ctx = base_ctx(TLS_server_method(), &id, trust_roots, std::move(trust_domain));
  if (!ctx) return ctx.error();
  SSL_CTX* c = ctx->get();
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  SSL_CTX_set_client_hello_cb(c, client_hello_cb, nullptr);
  SSL_CTX_set_alpn_select_cb(c, alpn_select_cb, nullptr);
  return ctx;
}

Result<SslCtxPtr> make_client_ctx(const certs::Identity& id,
                                  const std::vector<X509*>& trust_roots) {
  auto ctx = base_ctx(TLS_client_method(), &id, trust_roots, "");
  if (!ctx) return ctx.error();
  SSL_CTX* c = ctx->get();
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nullptr);
  if (SSL_CTX_set_alpn_protos(c, kAlpnH2, sizeof kAlpnH2) != 0) return ssl_err("setting ALPN");
  return ctx;
}

Result<SslCtxPtr> make_push_server_ctx(const certs::Identity& id) {
  // The trust store is unused (no client certificates are asked for) but
  // base_ctx wants one root: the serving chain's own issuer chain will do.
  std::vector<X509*> roots{id.leaf.get()};
  auto ctx = base_ctx(TLS_server_method(), &id, roots, "push");
  if (!ctx) return ctx.error();
  SSL_CTX* c = ctx->get();
  SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nullptr);
  SSL_CTX_set_client_hello_cb(c, client_hello_cb, nullptr);
  SSL_CTX_set_alpn_select_cb(c, alpn_select_cb, nullptr);
  return ctx;
}

Result<SslCtxPtr> make_push_client_ctx(const std::vector<X509*>& trust_roots) {
  auto ctx = base_ctx(TLS_client_method(), nullptr, trust_roots, "");
  if (!ctx) return ctx.error();
  SSL_CTX* c = ctx->get();
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nullptr);
  if (SSL_CTX_set_alpn_protos(c, kAlpnH2, sizeof kAlpnH2) != 0) return ssl_err("setting ALPN");
  return ctx;
}

Result<std::string> peer_spiffe_id(SSL* ssl) {
  if (ssl == nullptr || !SSL_is_init_finished(ssl))
    return make_error(Errc::kTls, "handshake not complete");
  X509* peer = SSL_get0_peer_certificate(ssl);
  if (peer == nullptr) return make_error(Errc::kTls, "peer sent no certificate");
  long v = SSL_get_verify_result(ssl);
  if (v != X509_V_OK)
    return make_error(Errc::kTls, std::string("peer certificate not verified: ") +
                                      X509_verify_cert_error_string(v));
  auto uri = certs::spiffe_uri_of(peer);
  if (!uri) return make_error(Errc::kTls, "peer certificate has no single spiffe:// URI SAN");
  if (auto r = certs::parse_spiffe_id(*uri, nullptr); !r) return r.error().wrap("peer identity");
  return *uri;
}

bool check_peer_identity(SSL* ssl, const std::string& expected_spiffe_id) {
  auto id = peer_spiffe_id(ssl);
  return id.ok() && *id == expected_spiffe_id;
}

bool negotiated_h2(SSL* ssl) {
  const unsigned char* proto = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(ssl, &proto, &len);
  return len == 2 && std::memcmp(proto, "h2", 2) == 0;
}

}  // namespace warren::tls
