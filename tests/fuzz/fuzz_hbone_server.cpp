// The HBONE server session fed raw bytes as they come out of TLS: nghttp2
// with warren's session settings and limits (H2Conn, cleartext mode), and
// each request through decide_inbound against a small snapshot. The first
// input byte chooses whether the client preface is prepended, so the fuzzer
// reaches frame parsing without having to discover the magic.
#include <cstdint>
#include <cstring>

#include "config.h"
#include "h2_conn.h"
#include "inbound.h"

using namespace warren;
using namespace warren::node;

namespace {

config::SnapshotPtr snapshot() {
  static config::SnapshotPtr snap = [] {
    auto doc = nlohmann::json::parse(R"({
      "node": {"name": "node-b", "address": "127.0.0.3"},
      "certificates": {"rootCert": "root.pem", "dir": "certs"},
      "workloads": [
        {"uid": "a", "name": "client", "namespace": "default", "serviceAccount": "sleep",
         "node": "node-a", "ips": ["127.0.10.1"]},
        {"uid": "b", "name": "echo", "namespace": "default", "serviceAccount": "echo",
         "node": "node-b", "ips": ["127.0.20.1"], "labels": {"app": "echo"}}],
      "policies": [{"metadata": {"name": "deny-9090", "namespace": "default"},
                    "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"ports": ["9090"]}}]}]}}]
    })");
    auto r = config::parse(doc);
    if (!r.ok()) abort();
    return r.value();
  }();
  return snap;
}

struct Stream : StreamHandler {
  void on_headers(H2Conn* c, int32_t sid, Headers&& h, bool) override {
    InboundRequest req = InboundRequest::from_headers(h);
    req.local = *SockAddr::parse("127.0.20.1:15008");
    req.peer = *SockAddr::parse("127.0.10.1:40000");
    req.peer_identity = "spiffe://cluster.local/ns/default/sa/sleep";
    auto d = decide_inbound(*snapshot(), req);
    c->submit_response(sid, d.status, d.status == 200);
    if (d.status == 200) c->send_data(sid, "hello", 5);
  }
  void on_data(H2Conn* c, int32_t sid, const uint8_t*, size_t len) override { c->consume(sid, len); }
  void on_end_stream(H2Conn* c, int32_t sid) override { c->end_stream(sid); }
  void on_stream_close(H2Conn*, int32_t, uint32_t) override { delete this; }
};

struct Owner : H2Conn::Owner {
  StreamHandler* on_new_stream(H2Conn*, int32_t) override { return new Stream; }
  void on_conn_close(H2Conn*, const std::string&) override {}
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Owner owner;
  H2Conn conn(nullptr, nullptr, /*server=*/true, &owner);
  conn.start();
  if (data[0] & 1) conn.receive(NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN);
  // Feed in chunks split by the second byte, as a network would.
  size_t chunk = size > 1 ? (data[1] % 64) + 1 : 1;
  for (size_t off = 1; off < size && !conn.closed(); off += chunk)
    conn.receive(reinterpret_cast<const char*>(data + off), std::min(chunk, size - off));
  // Bounded output: the session never answers with more than it was fed allows.
  if (conn.sink().size() > (1u << 20) + size * 64) abort();
  conn.close("done");
  return 0;
}
