#include "loader.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>

#include "capture.skel.h"
#include <spdlog/spdlog.h>

namespace warren::bpf {

namespace fs = std::filesystem;

namespace {

int libbpf_log(enum libbpf_print_level level, const char* fmt, va_list args) {
  char buf[1024];
  int n = vsnprintf(buf, sizeof buf, fmt, args);
  std::string_view s(buf, n > 0 ? std::min<size_t>(n, sizeof buf - 1) : 0);
  while (!s.empty() && s.back() == '\n') s.remove_suffix(1);
  if (level == LIBBPF_WARN)
    spdlog::warn("libbpf: {}", s);
  else
    spdlog::trace("libbpf: {}", s);
  return n;
}

Error bpf_error(const std::string& what, int err) {
  return Error::sys(what, err < 0 ? -err : err);
}

Result<void> mkdirs(const std::string& p) {
  std::error_code ec;
  fs::create_directories(p, ec);
  if (ec) return make_error(Errc::kSystem, "mkdir " + p + ": " + ec.message());
  return {};
}

void addr_to_words(const IpAddr& ip, __u32 out[4]) {
  std::memset(out, 0, 16);
  std::memcpy(out, ip.bytes().data(), ip.is_v4() ? 4 : 16);
}

IpAddr words_to_addr(const __u32 in[4], int family) {
  if (family == 10) {
    sockaddr_in6 sa{};
    sa.sin6_family = AF_INET6;
    std::memcpy(&sa.sin6_addr, in, 16);
    return IpAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&sa));
  }
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  std::memcpy(&sa.sin_addr, in, 4);
  return IpAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&sa));
}

warren_addr to_addr(const SockAddr& a) {
  warren_addr w{};
  addr_to_words(a.ip, w.ip);
  w.port = a.port;
  w.family = a.ip.is_v4() ? 2 : 10;
  return w;
}

struct CgroupProg {
  const char* name;
  bpf_program* (*get)(::capture*);
};

const CgroupProg kCgroupProgs[] = {
    {"connect4", [](::capture* s) { return s->progs.warren_connect4; }},
    {"connect6", [](::capture* s) { return s->progs.warren_connect6; }},
    {"getpeername4", [](::capture* s) { return s->progs.warren_getpeername4; }},
    {"getpeername6", [](::capture* s) { return s->progs.warren_getpeername6; }},
    {"getsockname4", [](::capture* s) { return s->progs.warren_getsockname4; }},
    {"sockops", [](::capture* s) { return s->progs.warren_sockops; }},
};

// Reuses a pinned link (swapping in `prog`) or makes one with `attach` and pins it.
Result<bpf_link*> pinned_link(const std::string& path, bpf_program* prog,
                              const std::function<bpf_link*()>& attach) {
  if (::access(path.c_str(), F_OK) == 0) {
    bpf_link* l = bpf_link__open(path.c_str());
    if (!l) return bpf_error("open pinned link " + path, errno);
    if (int err = bpf_link__update_program(l, prog); err) {
      bpf_link__destroy(l);
      return bpf_error("update pinned link " + path, err);
    }
    return l;
  }
  bpf_link* l = attach();
  if (!l) return bpf_error("attach " + path, errno);
  if (int err = bpf_link__pin(l, path.c_str()); err) {
    bpf_link__destroy(l);
    return bpf_error("pin " + path, err);
  }
  return l;
}

}  // namespace

const char* stat_name(int i) {
  static const char* const kNames[WARREN_STAT_MAX] = {
      "connect_captured", "connect_skip_mark",    "connect_skip_local", "connect_skip_excluded",
      "connect_direct",   "connect_not_enrolled", "orig_dst_recorded",  "getpeername_rewritten",
      "lookup_plaintext", "lookup_hbone",         "lookup_local",       "lookup_direct",
      "lookup_dropped",   "direct_flow_closed"};
  return i >= 0 && i < WARREN_STAT_MAX ? kNames[i] : "unknown";
}

std::string default_pin_dir(const std::string& node_name) { return "/sys/fs/bpf/warren/" + node_name; }

Result<void> ensure_bpffs(const std::string& root) {
  struct statfs st {};
  if (::statfs(root.c_str(), &st) == 0 && st.f_type == BPF_FS_MAGIC) return {};
  if (auto r = mkdirs(root); !r) return r;
  if (::mount("bpf", root.c_str(), "bpf", 0, nullptr) != 0) return Error::sys("mount bpffs at " + root);
  return {};
}

Capture::~Capture() {
  // Dropping our handles leaves pinned links attached (capture survives us).
  for (auto* l : links_) bpf_link__destroy(l);
  for (auto& [ino, l] : netns_links_) bpf_link__destroy(l);
  if (skel_) capture::destroy(skel_);
}

Result<std::unique_ptr<Capture>> Capture::open(const CaptureOptions& opts) {
  libbpf_set_print(libbpf_log);
  std::unique_ptr<Capture> c(new Capture(opts));
  if (auto r = c->load(); !r) return r.error();
  if (auto r = c->attach_cgroup_links(); !r) return r.error();
  return c;
}

Result<void> Capture::load() {
  if (auto r = ensure_bpffs(); !r) return r.error().wrap("bpffs");
  for (auto* d : {"/maps", "/links"})
    if (auto r = mkdirs(opts_.pin_dir + d); !r) return r;
  skel_ = capture::open();
  if (!skel_) return bpf_error("open BPF skeleton", errno);
  bpf_map* m;
  bpf_object__for_each_map(m, skel_->obj) {
    std::string name = bpf_map__name(m);
    if (name.find(".rodata") != std::string::npos || name.find(".bss") != std::string::npos ||
        name.find(".data") != std::string::npos)
      continue;
    std::string path = opts_.pin_dir + "/maps/" + name;
    if (int err = bpf_map__set_pin_path(m, path.c_str()); err) return bpf_error("pin path " + path, err);
  }
  if (int err = capture::load(skel_); err)
    return bpf_error("load BPF programs (a pinned map from an incompatible version? run "
                     "`warren-node --uninstall`)",
                     err);
  return {};
}

Result<void> Capture::attach_cgroup_links() {
  int cg = ::open(opts_.cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cg < 0) return Error::sys("open cgroup " + opts_.cgroup);
  for (const auto& p : kCgroupProgs) {
    bpf_program* prog = p.get(skel_);
    auto l = pinned_link(opts_.pin_dir + "/links/" + p.name, prog,
                         [&] { return bpf_program__attach_cgroup(prog, cg); });
    if (!l) {
      ::close(cg);
      return l.error();
    }
    links_.push_back(*l);
  }
  ::close(cg);
  return {};
}

Result<void> Capture::uninstall(const std::string& pin_dir) {
  std::error_code ec;
  if (!fs::exists(pin_dir, ec)) return {};
  if (fs::exists(pin_dir + "/links", ec)) {
    for (const auto& e : fs::directory_iterator(pin_dir + "/links", ec)) {
      bpf_link* l = bpf_link__open(e.path().c_str());
      if (l) {
        bpf_link__detach(l);
        bpf_link__destroy(l);
      }
      fs::remove(e.path(), ec);
    }
  }
  fs::remove_all(pin_dir, ec);
  if (ec) return make_error(Errc::kSystem, "remove " + pin_dir + ": " + ec.message());
  return {};
}

Result<void> Capture::enroll(const PodEntry& pod) {
  warren_pod v{};
  if (pod.ip4) std::memcpy(&v.ip4, pod.ip4->bytes().data(), 4);
  if (pod.ip6) std::memcpy(v.ip6, pod.ip6->bytes().data(), 16);
  v.flags = pod.fast_path ? WARREN_POD_FAST_PATH : 0;
  v.pod_id = pod.pod_id;
  // Exclusions first, so no connect is captured that should not be; a
  // re-enroll replaces the previous set.
  remove_exclusions(pod.netns_cookie);
  int ex = bpf_map__fd(skel_->maps.excluded_ports);
  struct {
    __u64 cookie;
    __u32 port, pad;
  } k{};
  k.cookie = pod.netns_cookie;
  for (uint16_t p : pod.excluded_ports) {
    k.port = p;
    __u8 one = 1;
    if (bpf_map_update_elem(ex, &k, &one, BPF_ANY) != 0) return Error::sys("excluded_ports update");
  }
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.enrolled_netns), &pod.netns_cookie, &v, BPF_ANY) != 0)
    return Error::sys("enrolled_netns update");
  return {};
}

Result<void> Capture::unenroll(uint64_t cookie) {
  bpf_map_delete_elem(bpf_map__fd(skel_->maps.enrolled_netns), &cookie);
  remove_exclusions(cookie);
  return {};
}

void Capture::remove_exclusions(uint64_t cookie) {
  int ex = bpf_map__fd(skel_->maps.excluded_ports);
  struct K {
    __u64 cookie;
    __u32 port, pad;
  };
  std::vector<K> del;
  K cur{}, next{};
  void* prev = nullptr;
  while (bpf_map_get_next_key(ex, prev, &next) == 0) {
    if (next.cookie == cookie) del.push_back(next);
    cur = next;
    prev = &cur;
  }
  for (auto& k : del) bpf_map_delete_elem(ex, &k);
}

std::vector<uint64_t> Capture::enrolled() const {
  std::vector<uint64_t> out;
  int fd = bpf_map__fd(skel_->maps.enrolled_netns);
  uint64_t cur = 0, next = 0;
  void* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    out.push_back(next);
    cur = next;
    prev = &cur;
  }
  return out;
}

Result<void> Capture::attach_netns(int netns_fd, uint64_t ino) {
  if (netns_links_.count(ino)) return {};
  std::string path = opts_.pin_dir + "/links/sk_lookup-" + std::to_string(ino);
  bpf_program* prog = skel_->progs.warren_sk_lookup;
  auto l = pinned_link(path, prog, [&] { return bpf_program__attach_netns(prog, netns_fd); });
  if (!l) return l.error();
  netns_links_[ino] = *l;
  return {};
}

Result<void> Capture::detach_netns(uint64_t ino) {
  std::string path = opts_.pin_dir + "/links/sk_lookup-" + std::to_string(ino);
  bpf_link* l = nullptr;
  if (auto it = netns_links_.find(ino); it != netns_links_.end()) {
    l = it->second;
    netns_links_.erase(it);
  } else if (::access(path.c_str(), F_OK) == 0) {
    l = bpf_link__open(path.c_str());
  }
  if (!l) return {};
  bpf_link__unpin(l);
  ::unlink(path.c_str());
  bpf_link__detach(l);
  bpf_link__destroy(l);
  return {};
}

std::vector<uint64_t> Capture::attached_netns() const {
  std::vector<uint64_t> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(opts_.pin_dir + "/links", ec)) {
    std::string n = e.path().filename();
    if (n.rfind("sk_lookup-", 0) != 0) continue;
    uint64_t ino = 0;
    auto [end, perr] = std::from_chars(n.data() + 10, n.data() + n.size(), ino);
    if (perr == std::errc() && end == n.data() + n.size()) out.push_back(ino);
  }
  return out;
}

Result<void> Capture::set_listener(const IpAddr& ip, uint32_t slot, int fd) {
  warren_listener_key k{};
  addr_to_words(ip, k.ip);
  k.family = ip.is_v4() ? 2 : 10;
  k.slot = slot;
  __u64 v = static_cast<__u64>(fd);
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.listeners), &k, &v, BPF_ANY) != 0)
    return Error::sys("listeners update for " + ip.to_string());
  return {};
}

std::optional<SockAddr> Capture::take_orig_dst(uint64_t cookie, uint16_t port, bool v6) {
  warren_conn_key k{};
  k.netns_cookie = cookie;
  k.port = port;
  k.family = v6 ? 10 : 2;
  warren_addr a{};
  int fd = bpf_map__fd(skel_->maps.conn_orig);
  if (bpf_map_lookup_and_delete_elem(fd, &k, &a) != 0) {
    // LRU hash maps gained lookup_and_delete in 5.14; fall back for safety.
    if (bpf_map_lookup_elem(fd, &k, &a) != 0) return std::nullopt;
    bpf_map_delete_elem(fd, &k);
  }
  return SockAddr{words_to_addr(a.ip, a.family), a.port};
}

Result<void> Capture::set_verdict(uint64_t cookie, const SockAddr& dst) {
  warren_verdict_key k{};
  k.netns_cookie = cookie;
  k.dst = to_addr(dst);
  __u32 v = WARREN_VERDICT_ALLOW;
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.verdicts), &k, &v, BPF_ANY) != 0)
    return Error::sys("verdicts update");
  return {};
}

void Capture::clear_verdicts() {
  int fd = bpf_map__fd(skel_->maps.verdicts);
  warren_verdict_key cur{}, next{};
  std::vector<warren_verdict_key> keys;
  void* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    keys.push_back(next);
    cur = next;
    prev = &cur;
  }
  for (auto& k : keys) bpf_map_delete_elem(fd, &k);
}

std::vector<DirectFlow> Capture::direct_flows() const {
  std::vector<DirectFlow> out;
  int fd = bpf_map__fd(skel_->maps.direct_flows);
  warren_flow_key cur{}, next{};
  void* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    warren_flow f{};
    if (bpf_map_lookup_elem(fd, &next, &f) == 0) {
      DirectFlow d;
      d.client = SockAddr{words_to_addr(next.saddr, next.family), next.sport};
      d.server = SockAddr{words_to_addr(next.daddr, next.family), next.dport};
      d.netns_cookie = f.netns_cookie;
      d.sock_cookie = f.sock_cookie;
      d.bytes_sent = f.bytes_sent;
      d.bytes_received = f.bytes_received;
      d.closed = f.closed != 0;
      out.push_back(d);
    }
    cur = next;
    prev = &cur;
  }
  return out;
}

namespace {
warren_flow_key flow_key(const SockAddr& client, const SockAddr& server) {
  warren_flow_key k{};
  addr_to_words(client.ip, k.saddr);
  addr_to_words(server.ip, k.daddr);
  k.sport = client.port;
  k.dport = server.port;
  k.family = client.ip.is_v4() ? 2 : 10;
  return k;
}
}  // namespace

void Capture::forget_flow(const DirectFlow& f) {
  auto k = flow_key(f.client, f.server);
  bpf_map_delete_elem(bpf_map__fd(skel_->maps.direct_flows), &k);
}

Result<void> Capture::add_delivery(const SockAddr& local, const SockAddr& remote) {
  auto k = flow_key(local, remote);
  __u8 one = 1;
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.deliveries), &k, &one, BPF_ANY) != 0)
    return Error::sys("deliveries update");
  return {};
}

void Capture::remove_delivery(const SockAddr& local, const SockAddr& remote) {
  auto k = flow_key(local, remote);
  bpf_map_delete_elem(bpf_map__fd(skel_->maps.deliveries), &k);
}

int Capture::sk_lookup_prog_fd() const { return bpf_program__fd(skel_->progs.warren_sk_lookup); }

std::vector<uint64_t> Capture::stats() const {
  int ncpu = libbpf_num_possible_cpus();
  std::vector<uint64_t> out(WARREN_STAT_MAX, 0);
  if (ncpu <= 0) return out;
  std::vector<uint64_t> per(ncpu);
  int fd = bpf_map__fd(skel_->maps.stats);
  for (__u32 i = 0; i < WARREN_STAT_MAX; ++i) {
    if (bpf_map_lookup_elem(fd, &i, per.data()) != 0) continue;
    for (auto v : per) out[i] += v;
  }
  return out;
}

}  // namespace warren::bpf
