// The capture programs' loader (bpf/capture.bpf.c as an embedded libbpf
// skeleton). Maps and links are pinned under <pin_dir>:
//   <pin_dir>/maps/<map>             every map, reused by the next start
//   <pin_dir>/links/<program>        cgroup links (connect4/6, getpeername4/6, sockops)
//   <pin_dir>/links/sk_lookup-<ino>  one sk_lookup link per enrolled pod netns
// so a warren-node restart keeps capture in place: the new process reopens
// the pinned links and swaps its programs in (bpf_link_update), it never
// detaches. uninstall() removes all of it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "warren/ip.h"
#include "warren/result.h"
#include "warren_bpf.h"

struct capture;
struct bpf_link;

namespace warren::bpf {

struct CaptureOptions {
  std::string pin_dir;  // /sys/fs/bpf/warren/<node>
  std::string cgroup;   // cgroup v2 directory the pods' processes live under
};

struct PodEntry {
  uint64_t netns_cookie = 0;
  std::optional<IpAddr> ip4, ip6;
  bool fast_path = false;
  uint32_t pod_id = 0;
  std::vector<uint16_t> excluded_ports;
};

struct DirectFlow {
  SockAddr client, server;
  uint64_t netns_cookie = 0;
  uint64_t sock_cookie = 0;  // the client socket's SO_COOKIE
  uint64_t bytes_sent = 0, bytes_received = 0;
  bool closed = false;
};

class Capture {
 public:
  ~Capture();
  Capture(const Capture&) = delete;
  Capture& operator=(const Capture&) = delete;

  // Loads the programs (reusing pinned maps), attaches them to the cgroup or
  // swaps them into pinned links, and pins what is new.
  static Result<std::unique_ptr<Capture>> open(const CaptureOptions& opts);
  // Detaches every link under pin_dir and removes the pins. Idempotent.
  static Result<void> uninstall(const std::string& pin_dir);

  // ---- enrollment ----
  Result<void> enroll(const PodEntry& pod);
  Result<void> unenroll(uint64_t netns_cookie);
  // Cookies currently in the enrolled map (after a restart: the previous run's).
  std::vector<uint64_t> enrolled() const;
  // sk_lookup on one pod netns (link pinned as sk_lookup-<inode>; an existing
  // pin is updated with this run's program).
  Result<void> attach_netns(int netns_fd, uint64_t netns_inode);
  Result<void> detach_netns(uint64_t netns_inode);
  std::vector<uint64_t> attached_netns() const;  // inodes with a pinned link
  // The 15006 / 15008 listener of a pod address.
  Result<void> set_listener(const IpAddr& pod_ip, uint32_t slot, int listen_fd);

  // ---- the proxy's questions ----
  // Original destination of a captured connection: the client's netns and
  // its local port (the accepted socket's peer port). Removes the entry.
  std::optional<SockAddr> take_orig_dst(uint64_t netns_cookie, uint16_t port, bool v6);

  // A delivery socket (bound to `local`, connecting to `remote` inside the
  // pod) that sk_lookup must not steer; remove once connected.
  Result<void> add_delivery(const SockAddr& local, const SockAddr& remote);
  void remove_delivery(const SockAddr& local, const SockAddr& remote);

  // ---- same-node fast path ----
  Result<void> set_verdict(uint64_t netns_cookie, const SockAddr& dst);
  void clear_verdicts();
  std::vector<DirectFlow> direct_flows() const;
  void forget_flow(const DirectFlow& f);

  // Per-CPU counters summed, indexed by warren_stat.
  std::vector<uint64_t> stats() const;

  const CaptureOptions& options() const { return opts_; }
  // For BPF_PROG_TEST_RUN in tests.
  int sk_lookup_prog_fd() const;

 private:
  explicit Capture(CaptureOptions opts) : opts_(std::move(opts)) {}
  Result<void> load();
  Result<void> attach_cgroup_links();
  void remove_exclusions(uint64_t netns_cookie);

  CaptureOptions opts_;
  ::capture* skel_ = nullptr;
  std::vector<bpf_link*> links_;  // this process's handles (pinned ones stay)
  std::map<uint64_t, bpf_link*> netns_links_;
};

// "connect_captured", ... for a warren_stat index.
const char* stat_name(int i);
// Where pins live by default for a node.
std::string default_pin_dir(const std::string& node_name);
// Mounts bpffs at /sys/fs/bpf when it is not one already.
Result<void> ensure_bpffs(const std::string& root = "/sys/fs/bpf");

}  // namespace warren::bpf
