// Catch2 helpers shared by the BPF test files.
#pragma once

#include <catch2/catch.hpp>
#include <initializer_list>
#include <string>
#include <vector>

#include "bpf_env.h"

namespace wbt {

using warren::bpf::PodEntry;
using Stats = std::vector<uint64_t>;

inline PodEntry pod_entry(uint64_t cookie, const std::string& addr, bool fast = false,
                          std::vector<uint16_t> excluded = {}) {
  PodEntry p;
  p.netns_cookie = cookie;
  p.ip4 = ip(addr);
  p.fast_path = fast;
  p.excluded_ports = std::move(excluded);
  return p;
}

inline Stats diff(const Stats& before, const Stats& after) {
  Stats d(after.size());
  for (size_t i = 0; i < d.size(); ++i) d[i] = after[i] - before[i];
  return d;
}

// A stats delta with 1 in each listed slot (a slot listed twice: 2).
inline Stats only(std::initializer_list<int> slots) {
  Stats d(WARREN_STAT_MAX, 0);
  for (int s : slots) d[s] += 1;
  return d;
}

// Connects `s` to dst and requires the connection on listener `lfd` (the
// accepted socket's peer is s); nothing may be queued on `not_lfd`.
inline Fd lands_on(const Fd& s, const std::string& dst, const Fd& lfd, const Fd& not_lfd) {
  REQUIRE(connect_wait(s.get(), sa(dst)) == 0);
  Fd a = accept_wait(lfd.get());
  REQUIRE(a.get() >= 0);
  // Same port; the address may differ: getsockname on a captured socket
  // reports the pod's address, while the socket really sits on 127.0.0.1.
  CHECK(peer_of(a.get()).port == local_of(s.get()).port);
  CHECK_FALSE(readable(not_lfd.get(), 0));
  return a;
}

}  // namespace wbt
