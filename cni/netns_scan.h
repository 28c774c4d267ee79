// Finds the network namespaces of running processes through /proc, for
// warren-node's start-up reconcile (which pods are already running), and
// reads each one's addresses with rtnetlink. The caller's thread never
// changes netns: each netns is entered on a short-lived helper thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "warren/ip.h"
#include "warren/result.h"

namespace warren::cni {

struct NetnsInfo {
  uint64_t inode = 0;       // st_ino of /proc/<pid>/ns/net
  pid_t pid = 0;            // one process in it
  std::vector<IpAddr> ips;  // sorted, distinct; loopback and IPv6 link-local left out
};

// One entry per distinct netns other than the caller's own, sorted by inode.
// Only thread-group leaders (/proc/<pid>) are looked at. Processes that exit
// during the scan are skipped. Processes or namespaces the caller may not
// inspect (EACCES/EPERM: non-dumpable processes, netns of foreign user
// namespaces) are skipped with a warning; when no other process at all is
// visible (no CAP_SYS_PTRACE) the scan fails rather than answer "no pods".
Result<std::vector<NetnsInfo>> scan_netns();

// Opens a netns file (/proc/<pid>/ns/net, /var/run/netns/<name>, a CNI_NETNS
// path) O_RDONLY|O_CLOEXEC and checks it is a network namespace. The caller
// closes the fd.
Result<int> open_netns(const std::string& path);

// The inode identifying the netns at `path` (what NetnsInfo::inode holds).
Result<uint64_t> netns_inode(const std::string& path);

// The addresses of the netns behind `netns_fd` (as NetnsInfo::ips), read with
// RTM_GETADDR on a helper thread that setns()'s into it.
Result<std::vector<IpAddr>> netns_addresses(int netns_fd);

}  // namespace warren::cni
