// The SOCKS5 entry on 15080 for clients that are not captured: the client's
// source address names its workload; the target is planned (outbound_plan.h)
// and reached over HBONE from the pool, or over plain TCP for non-mesh targets.
#pragma once

#include <string>

#include "warren/tcp.h"

namespace warren::node {

class Node;

// A connection the eBPF capture redirected to 15001 in a pod's netns: planned
// and tunnelled like a SOCKS5 request, with the pod as source and the
// original destination as target; failures reset the application's socket.
void start_captured_outbound(Node& node, net::TcpConn* tcp, const IpAddr& pod_ip,
                             const SockAddr& orig_dst, uint64_t netns_cookie);

class SocksEntry {
 public:
  explicit SocksEntry(Node& node);
  ~SocksEntry();
  Result<SockAddr> listen(const SockAddr& addr);
  void close();
  static constexpr uint64_t kHandshakeTimeoutMs = 10000;

 private:
  static void on_accept(void* ctx, uv_stream_t* server);
  Node& node_;
  net::TcpListener* listener_ = nullptr;
};

}  // namespace warren::node
