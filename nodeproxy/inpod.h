// In-pod mode (DESIGN.md §5): warren-node learns about pods from warren-cni
// (Unix socket) and, at start, from /proc; for each pod the config enrolls it
// opens 15001 (outbound capture), 15006 (plaintext inbound) and 15008 (HBONE,
// through Inbound) inside the pod's netns, attaches sk_lookup there and adds
// the netns cookie to the map connect4/6 consult. Unenrolling reverses it;
// connections already open keep the path they started on.
#pragma once

#include <uv.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config.h"
#include "loader.h"
#include "warren/netns.h"
#include "warren/tcp.h"

namespace warren::cni {
class EnrollServer;
struct EnrollRequest;
}  // namespace warren::cni

namespace warren::node {

class Node;

class InPod {
 public:
  explicit InPod(Node& node);
  ~InPod();
  // Loads/attaches the BPF programs, starts the CNI socket, finds running
  // pods, enrolls those the config says.
  Result<void> start(const config::Snapshot& snap);
  // A new snapshot: enrollment, fast path switch, verdict cache flush and
  // re-check of same-node direct flows.
  void apply(const config::Snapshot& snap);
  void stop();

  bpf::Capture& capture() { return *capture_; }
  // Enrolled pods' IPs with their netns fd (for the HBONE listeners).
  std::vector<std::pair<IpAddr, int>> hbone_targets() const;
  int netns_for(const IpAddr& ip) const;
  // Records an ALLOW verdict for the same-node fast path.
  void allow_direct(uint64_t src_cookie, const IpAddr& src_ip, const SockAddr& dst);
  nlohmann::json status() const;
  // A socket inside the pod owning `dst`, bound transparently to the
  // client's address, registered so sk_lookup lets its SYN reach the
  // application. Call delivery_done() once connected (or failed).
  Result<net::TcpConn*> dial_delivery(const IpAddr& client, const SockAddr& dst, SockAddr* bound);
  void delivery_done(const SockAddr& bound, const SockAddr& dst);

 private:
  struct Pod {
    uint64_t inode = 0, cookie = 0;
    netns::NsFd ns;
    std::vector<IpAddr> ips;
    std::string name, namespace_, uid;  // from CNI; empty when found by the scan
    bool enrolled = false;
    bool fast_path = false;
    net::TcpListener* out4 = nullptr;
    net::TcpListener* out6 = nullptr;
    net::TcpListener* plain = nullptr;
    InPod* owner = nullptr;
  };
  Result<void> on_cni(const cni::EnrollRequest& req);
  Result<Pod*> add_pod(int ns_fd, std::vector<IpAddr> ips);
  void remove_pod(uint64_t inode);
  const config::Workload* workload_of(const Pod& p, const config::Snapshot& snap) const;
  void sync(const config::Snapshot& snap);
  Result<void> enroll(Pod& p, const config::Workload& w, const config::Snapshot& snap);
  void unenroll(Pod& p);
  void close_listeners(Pod& p);
  void recheck_direct_flows(const config::Snapshot& snap);
  void poll_flows();
  static void on_outbound(void* ctx, uv_stream_t* server);
  static void on_plain(void* ctx, uv_stream_t* server);
  void plain_inbound(Pod& p, net::TcpConn* tcp);
  Pod* pod_by_cookie(uint64_t cookie);

  Node& node_;
  std::unique_ptr<bpf::Capture> capture_;
  std::unique_ptr<cni::EnrollServer> cni_;
  std::map<uint64_t, std::unique_ptr<Pod>> pods_;  // by netns inode
  std::map<IpAddr, Pod*> by_ip_;                     // enrolled pods only
  std::set<std::pair<std::string, uint16_t>> seen_flows_;  // direct flows counted as opened
  std::vector<uint64_t> last_stats_;  // BPF counters at the previous poll
  uv_timer_t flow_timer_;
  bool timer_started_ = false;
  std::string node_name_;
};

}  // namespace warren::node
