// Real TLS handshakes between two in-memory SSL objects joined by a BIO pair.
#include "warren/tls_context.h"
#include "warren/tls_session.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <catch2/catch.hpp>
#include <chrono>

using namespace warren;
using namespace warren::certs;
using namespace warren::tls;
using namespace std::chrono_literals;
using Clock = std::chrono::system_clock;

namespace {

const std::string kClientId = "spiffe://cluster.local/ns/shop/sa/frontend";
const std::string kServerId = "spiffe://cluster.local/ns/shop/sa/reviews";

Ca new_ca(const std::string& cn) {
  auto key = generate_p256_key();
  REQUIRE(key.ok());
  auto cert = make_root_ca(key->get(), cn, 24h * 365);
  REQUIRE(cert.ok());
  return Ca{std::move(*cert), std::move(*key)};
}

Identity new_identity(const Ca& ca, const std::string& id, Clock::time_point nb,
                      Clock::time_point na) {
  auto key = generate_p256_key();
  REQUIRE(key.ok());
  auto cert = issue_workload_cert(ca, key->get(), id, nb, na);
  REQUIRE(cert.ok());
  Identity out;
  out.spiffe_id = id;
  out.leaf = std::move(*cert);
  out.key = std::move(*key);
  out.not_before = nb;
  out.not_after = na;
  return out;
}

Identity new_identity(const Ca& ca, const std::string& id) {
  return new_identity(ca, id, Clock::now() - 1min, Clock::now() + 24h);
}

struct Side {
  SslPtr ssl;
  bool done = false, failed = false;
  std::string error;

  void step() {
    if (done || failed) return;
    int rc = SSL_do_handshake(ssl.get());
    if (rc == 1) {
      done = true;
      return;
    }
    int e = SSL_get_error(ssl.get(), rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
    failed = true;
    error = drain_openssl_errors();
  }
  // After the handshake: process post-handshake messages (tickets, alerts).
  void pump() {
    if (!done || failed) return;
    char b;
    int rc = SSL_read(ssl.get(), &b, 1);
    int e = SSL_get_error(ssl.get(), rc);
    if (e != SSL_ERROR_WANT_READ) {
      failed = true;
      error = drain_openssl_errors();
    }
  }
};

struct Handshake {
  Side client, server;
  bool ok() const { return client.done && server.done && !client.failed && !server.failed; }
};

Handshake run_handshake(SSL_CTX* cctx, SSL_CTX* sctx) {
  ERR_clear_error();
  Handshake h;
  h.client.ssl.reset(SSL_new(cctx));
  h.server.ssl.reset(SSL_new(sctx));
  REQUIRE(h.client.ssl);
  REQUIRE(h.server.ssl);
  BIO *bc = nullptr, *bs = nullptr;
  REQUIRE(BIO_new_bio_pair(&bc, 0, &bs, 0) == 1);
  SSL_set_bio(h.client.ssl.get(), bc, bc);
  SSL_set_bio(h.server.ssl.get(), bs, bs);
  SSL_set_connect_state(h.client.ssl.get());
  SSL_set_accept_state(h.server.ssl.get());
  for (int i = 0; i < 20 && !(h.client.done && h.server.done); ++i) {
    h.client.step();
    h.server.step();
    if (h.client.failed || h.server.failed) break;
  }
  // Let the last flight and any alert reach the other side.
  h.client.step();
  h.server.step();
  h.client.pump();
  h.server.pump();
  return h;
}

struct Pki {
  Ca ca = new_ca("mesh root");
  std::vector<X509*> roots() const { return {ca.cert.get()}; }
};

SslCtxPtr server_ctx(const Identity& id, const std::vector<X509*>& roots,
                     const std::string& td = "cluster.local") {
  auto ctx = make_server_ctx(id, roots, td);
  REQUIRE(ctx.ok());
  return std::move(*ctx);
}

SslCtxPtr client_ctx(const Identity& id, const std::vector<X509*>& roots) {
  auto ctx = make_client_ctx(id, roots);
  REQUIRE(ctx.ok());
  return std::move(*ctx);
}

// A plain client context an attacker or an old peer might use.
SslCtxPtr raw_client(const Identity* id, int max_version, bool alpn_h2) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  REQUIRE(ctx);
  SSL_CTX_set_max_proto_version(ctx.get(), max_version);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  if (id) {
    REQUIRE(SSL_CTX_use_certificate(ctx.get(), id->leaf.get()) == 1);
    REQUIRE(SSL_CTX_use_PrivateKey(ctx.get(), id->key.get()) == 1);
  }
  static const unsigned char h2[] = {2, 'h', '2'};
  if (alpn_h2) REQUIRE(SSL_CTX_set_alpn_protos(ctx.get(), h2, sizeof h2) == 0);
  return ctx;
}

}  // namespace

TEST_CASE("HBONE TLS: good certificates handshake with the expected properties", "[tls]") {
  Pki pki;
  Identity cid = new_identity(pki.ca, kClientId), sid = new_identity(pki.ca, kServerId);
  auto sctx = server_ctx(sid, pki.roots());
  auto cctx = client_ctx(cid, pki.roots());
  Handshake h = run_handshake(cctx.get(), sctx.get());
  INFO("client: " << h.client.error << " server: " << h.server.error);
  REQUIRE(h.ok());
  SSL* c = h.client.ssl.get();
  SSL* s = h.server.ssl.get();

  auto peer = peer_spiffe_id(s);
  REQUIRE(peer.ok());
  CHECK(*peer == kClientId);
  CHECK(peer_spiffe_id(c).ok());
  CHECK(check_peer_identity(c, kServerId));
  CHECK_FALSE(check_peer_identity(c, kClientId));
  CHECK_FALSE(check_peer_identity(c, "spiffe://cluster.local/ns/shop/sa/other"));

  CHECK(SSL_version(c) == TLS1_3_VERSION);
  std::string cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(c));
  CHECK((cipher == "TLS_AES_128_GCM_SHA256" || cipher == "TLS_AES_256_GCM_SHA384"));
  CHECK(negotiated_h2(c));
  CHECK(negotiated_h2(s));
  CHECK(SSL_get_servername(s, TLSEXT_NAMETYPE_host_name) == nullptr);  // no SNI
  CHECK(SSL_get_negotiated_group(c) == NID_X25519);
  // No ticket was sent, so nothing can be resumed.
  CHECK(SSL_SESSION_is_resumable(SSL_get_session(c)) == 0);

  // Application data flows both ways.
  CHECK(SSL_write(c, "ping", 4) == 4);
  char buf[8] = {};
  CHECK(SSL_read(s, buf, sizeof buf) == 4);
  CHECK(std::string(buf, 4) == "ping");
}

TEST_CASE("HBONE TLS: intermediates and a two-root bundle (root rotation)", "[tls]") {
  Ca old_root = new_ca("old root"), new_root = new_ca("new root");
  auto ikey = generate_p256_key();
  auto icert = issue_intermediate_ca(new_root, ikey->get(), "intermediate", 24h);
  REQUIRE(icert.ok());
  Ca inter{std::move(*icert), std::move(*ikey)};
  Identity sid = new_identity(inter, kServerId);
  sid.chain.push_back(ref(inter.cert.get()));
  Identity cid = new_identity(old_root, kClientId);
  std::vector<X509*> bundle{old_root.cert.get(), new_root.cert.get()};
  auto sctx = server_ctx(sid, bundle);
  auto cctx = client_ctx(cid, bundle);
  Handshake h = run_handshake(cctx.get(), sctx.get());
  INFO("client: " << h.client.error << " server: " << h.server.error);
  REQUIRE(h.ok());
  CHECK(check_peer_identity(h.client.ssl.get(), kServerId));
  CHECK(peer_spiffe_id(h.server.ssl.get()).value() == kClientId);

  // The server without its intermediate cannot be verified.
  Identity bare = new_identity(inter, kServerId);
  auto bare_ctx = server_ctx(bare, bundle);
  Handshake h2 = run_handshake(cctx.get(), bare_ctx.get());
  CHECK(h2.client.failed);
  CHECK(SSL_get_verify_result(h2.client.ssl.get()) != X509_V_OK);
}

TEST_CASE("HBONE TLS: the server refuses bad clients", "[tls]") {
  Pki pki;
  Identity sid = new_identity(pki.ca, kServerId);
  auto sctx = server_ctx(sid, pki.roots());

  SECTION("client certificate from another CA") {
    Ca other = new_ca("other root");
    Identity cid = new_identity(other, kClientId);
    auto cctx = client_ctx(cid, pki.roots());
    Handshake h = run_handshake(cctx.get(), sctx.get());
    CHECK(h.server.failed);
    CHECK_FALSE(h.ok());
    CHECK(SSL_get_verify_result(h.server.ssl.get()) != X509_V_OK);
  }
  SECTION("expired client certificate") {
    auto past = Clock::now() - 48h;
    Identity cid = new_identity(pki.ca, kClientId, past - 24h, past);
    auto cctx = client_ctx(cid, pki.roots());
    Handshake h = run_handshake(cctx.get(), sctx.get());
    CHECK(h.server.failed);
    CHECK(SSL_get_verify_result(h.server.ssl.get()) == X509_V_ERR_CERT_HAS_EXPIRED);
  }
  SECTION("client certificate not yet valid") {
    auto future = Clock::now() + 48h;
    Identity cid = new_identity(pki.ca, kClientId, future, future + 24h);
    auto cctx = client_ctx(cid, pki.roots());
    Handshake h = run_handshake(cctx.get(), sctx.get());
    CHECK(h.server.failed);
    CHECK(SSL_get_verify_result(h.server.ssl.get()) == X509_V_ERR_CERT_NOT_YET_VALID);
  }
  SECTION("wrong trust domain") {
    Identity cid = new_identity(pki.ca, "spiffe://evil.example/ns/shop/sa/frontend");
    auto cctx = client_ctx(cid, pki.roots());
    Handshake h = run_handshake(cctx.get(), sctx.get());
    CHECK(h.server.failed);
    CHECK(SSL_get_verify_result(h.server.ssl.get()) == X509_V_ERR_APPLICATION_VERIFICATION);
  }
  SECTION("a SPIFFE URI that is not a workload id") {
    Identity cid = new_identity(pki.ca, "spiffe://cluster.local/something/else");
    auto cctx = client_ctx(cid, pki.roots());
    Handshake h = run_handshake(cctx.get(), sctx.get());
    CHECK(h.server.failed);
  }
  SECTION("TLS 1.2-only client") {
    Identity cid = new_identity(pki.ca, kClientId);
    auto cctx = raw_client(&cid, TLS1_2_VERSION, true);
    Handshake h = run_handshake(cctx.get(), sctx.get());
    CHECK(h.server.failed);
    CHECK(h.client.failed);
  }
  SECTION("client without a certificate") {
    auto cctx = raw_client(nullptr, TLS1_3_VERSION, true);
    Handshake h = run_handshake(cctx.get(), sctx.get());
    CHECK(h.server.failed);
    CHECK_FALSE(h.ok());
  }
  SECTION("client offering no ALPN at all") {
    Identity cid = new_identity(pki.ca, kClientId);
    auto cctx = raw_client(&cid, TLS1_3_VERSION, false);
    Handshake h = run_handshake(cctx.get(), sctx.get());
    CHECK(h.server.failed);
    CHECK(h.client.failed);
  }
  SECTION("client offering ALPN without h2") {
    Identity cid = new_identity(pki.ca, kClientId);
    auto cctx = client_ctx(cid, pki.roots());
    static const unsigned char http11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    REQUIRE(SSL_CTX_set_alpn_protos(cctx.get(), http11, sizeof http11) == 0);
    Handshake h = run_handshake(cctx.get(), sctx.get());
    CHECK(h.server.failed);
    CHECK(h.client.failed);
  }
  SECTION("client offering only ChaCha20") {
    Identity cid = new_identity(pki.ca, kClientId);
    auto cctx = raw_client(&cid, TLS1_3_VERSION, true);
    REQUIRE(SSL_CTX_set_ciphersuites(cctx.get(), "TLS_CHACHA20_POLY1305_SHA256") == 1);
    Handshake h = run_handshake(cctx.get(), sctx.get());
    CHECK(h.server.failed);
  }
}

TEST_CASE("HBONE TLS: the client refuses bad servers", "[tls]") {
  Pki pki;
  Identity cid = new_identity(pki.ca, kClientId);
  auto cctx = client_ctx(cid, pki.roots());

  SECTION("server certificate from another CA") {
    Ca other = new_ca("other root");
    Identity sid = new_identity(other, kServerId);
    auto sctx = server_ctx(sid, pki.roots());
    Handshake h = run_handshake(cctx.get(), sctx.get());
    CHECK(h.client.failed);
    CHECK(SSL_get_verify_result(h.client.ssl.get()) != X509_V_OK);
  }
  SECTION("expired server certificate") {
    auto past = Clock::now() - 48h;
    Identity sid = new_identity(pki.ca, kServerId, past - 24h, past);
    auto sctx = server_ctx(sid, pki.roots());
    Handshake h = run_handshake(cctx.get(), sctx.get());
    CHECK(h.client.failed);
    CHECK(SSL_get_verify_result(h.client.ssl.get()) == X509_V_ERR_CERT_HAS_EXPIRED);
  }
  SECTION("server with another identity than expected") {
    Identity sid = new_identity(pki.ca, "spiffe://cluster.local/ns/shop/sa/impostor");
    auto sctx = server_ctx(sid, pki.roots());
    Handshake h = run_handshake(cctx.get(), sctx.get());
    REQUIRE(h.ok());
    CHECK_FALSE(check_peer_identity(h.client.ssl.get(), kServerId));
  }
  SECTION("server whose URI is not a workload SPIFFE id") {
    Identity sid = new_identity(pki.ca, "spiffe://cluster.local/");
    auto sctx = server_ctx(sid, pki.roots());
    Handshake h = run_handshake(cctx.get(), sctx.get());
    CHECK(h.client.failed);
    CHECK(SSL_get_verify_result(h.client.ssl.get()) == X509_V_ERR_APPLICATION_VERIFICATION);
  }
}

TEST_CASE("HBONE TLS: context construction errors", "[tls]") {
  Pki pki;
  Identity id = new_identity(pki.ca, kServerId);
  CHECK_FALSE(make_server_ctx(id, {}, "cluster.local").ok());
  CHECK_FALSE(make_server_ctx(id, pki.roots(), "").ok());
  CHECK_FALSE(make_client_ctx(Identity{}, pki.roots()).ok());
  Identity mismatched = new_identity(pki.ca, kServerId);
  mismatched.key = std::move(new_identity(pki.ca, kClientId).key);
  auto r = make_client_ctx(mismatched, pki.roots());
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::kTls);
  // Not finished: no peer id.
  auto cctx = make_client_ctx(id, pki.roots());
  REQUIRE(cctx.ok());
  SslPtr ssl(SSL_new(cctx->get()));
  CHECK_FALSE(peer_spiffe_id(ssl.get()).ok());
  CHECK_FALSE(check_peer_identity(ssl.get(), kServerId));
}

TEST_CASE("HBONE TLS: an idle session holds no record or output buffers", "[tls]") {
  Pki pki;
  Identity cid = new_identity(pki.ca, kClientId), sid = new_identity(pki.ca, kServerId);
  auto sctx = server_ctx(sid, pki.roots());
  auto cctx = client_ctx(cid, pki.roots());
  CHECK((SSL_CTX_get_mode(sctx.get()) & SSL_MODE_RELEASE_BUFFERS) != 0);
  CHECK((SSL_CTX_get_mode(cctx.get()) & SSL_MODE_RELEASE_BUFFERS) != 0);
  warren::tls::Session c(cctx.get(), false), s(sctx.get(), true);
  auto move = [](warren::tls::Session& from, warren::tls::Session& to) {
    std::string out = from.take_output();
    if (!out.empty()) to.feed(out.data(), out.size());
  };
  for (int i = 0; i < 20 && !(c.handshake_done() && s.handshake_done()); ++i) {
    c.handshake();
    move(c, s);
    s.handshake();
    move(s, c);
  }
  REQUIRE(c.handshake_done());
  REQUIRE(s.handshake_done());
  // 1 MiB through: the output grows as needed while data flows ...
  std::string big(1 << 20, 'x');
  REQUIRE(c.write(big.data(), big.size()));
  CHECK(c.output().size() > big.size());
  move(c, s);
  // ... and once handed over the session keeps no buffer behind.
  CHECK(c.output().capacity() < 1024);
  std::string got;
  char buf[16384];
  size_t n = 0;
  while (s.read(buf, sizeof buf, &n) == warren::tls::Status::kOk && n > 0) got.append(buf, n);
  CHECK(got == big);
  s.take_output();  // any post-handshake messages
  CHECK(s.output().capacity() < 1024);
}
