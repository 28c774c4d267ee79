// The HBONE server: TLS (the destination workload's identity, chosen by the
// local address the client dialled), HTTP/2, one CONNECT stream per tunnelled
// connection, :authority validated, L4 policy applied, then a TCP connection
// to the workload. Answers 200 / 400 / 401 / 503 as ztunnel does.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>

#include "config.h"
#include "h2_conn.h"
#include "policy.h"

namespace warren::node {

class Node;
class Tunnel;

// The pure part: validate a CONNECT request against the snapshot.
struct InboundRequest {
  std::string method, authority, path, scheme, protocol;
  bool has_path = false;
  SockAddr local;           // the address the client dialled (workload ip:15008)
  SockAddr peer;            // the client's address
  std::string peer_identity;
  // The pseudo-headers of a request; addresses and identity are the caller's.
  static InboundRequest from_headers(const Headers& h);
};
struct InboundDecision {
  int status = 200;  // 200, 400 or 401
  std::string reason;
  const config::Workload* dst = nullptr;
  SockAddr upstream;
  policy::ConnFacts facts;
};
InboundDecision decide_inbound(const config::Snapshot& snap, const InboundRequest& req);

class Inbound : public H2Conn::Owner {
 public:
  explicit Inbound(Node& node);
  ~Inbound() override;
  // Opens/closes the HBONE listeners to match the snapshot's local workloads.
  Result<void> sync_listeners(const config::Snapshot& snap);
  // Re-checks every open tunnel against the new policy; closes those denied now.
  void recheck(const config::Snapshot& snap);
  void close_all();
  size_t listeners() const { return listeners_.size(); }
  size_t connections() const { return conns_.size(); }

  // H2Conn::Owner
  StreamHandler* on_new_stream(H2Conn* c, int32_t sid) override;
  void on_ready(H2Conn* c) override;
  void on_conn_close(H2Conn* c, const std::string& reason) override;

 private:
  friend class InboundStream;
  struct ConnInfo {
    std::unique_ptr<H2Conn> conn;
    SockAddr local, peer;
    std::string peer_identity;
  };
  struct Active {
    Tunnel* tunnel;
    policy::ConnFacts facts;
    std::string dst_uid;
  };
  static void on_accept(void* ctx, uv_stream_t* server);
  void accept(uv_stream_t* server);

  Node& node_;
  std::map<SockAddr, net::TcpListener*> listeners_;
  std::unordered_map<H2Conn*, ConnInfo> conns_;
  std::unordered_map<Tunnel*, Active> active_;
};

}  // namespace warren::node
