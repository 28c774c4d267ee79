// warren-podtool client subcommands (see podtool.cpp for the list).
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>

#include "podtool.h"

namespace warren::podtool {

using nlohmann::json;

namespace {

int connect_or_fail(const Args& a) {
  sockaddr_in to = parse_addr(a.need("to"));
  int fd = tcp_connect(to, static_cast<int>(a.num("timeout-ms", 5000)));
  if (fd < 0) fail("connect " + a.str("to") + ": " + std::strerror(errno));
  return fd;
}

bool recv_exact(int fd, char* p, size_t n) {
  while (n > 0) {
    ssize_t r = recv(fd, p, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

}  // namespace

int cmd_connect(const Args& a) {
  int fd = connect_or_fail(a);
  json r{{"ok", true}, {"peername", peer_of(fd)}, {"sockname", local_of(fd)}};
  if (long long n = a.num("expect-speak-first", 0); n > 0) {
    std::vector<char> b(static_cast<size_t>(n));
    if (!recv_exact(fd, b.data(), b.size())) fail("server did not speak first");
    if (gen_mismatch(kServerSeed, 0, b.data(), b.size()) >= 0) fail("speak-first bytes differ");
    r["speak_first_ok"] = true;
  }
  if (a.has("send-marker")) {
    std::string m = a.str("send-marker");
    if (!send_all(fd, m.data(), m.size()))
      fail("send marker: " + std::string(std::strerror(errno)));
    if (a.has("expect-echo")) {
      std::string back(m.size(), '\0');
      if (!recv_exact(fd, back.data(), back.size()) || back != m) fail("echo differs or missing");
      r["echo_ok"] = true;
    }
  }
  if (long long hold = a.num("hold", 0); hold > 0)
    std::this_thread::sleep_for(std::chrono::seconds(hold));
  emit(r);
  close(fd);
  return 0;
}

int cmd_transfer(const Args& a) {
  long long bytes = a.num("bytes", -1);
  if (bytes < 0) fail("transfer needs --bytes");
  bool echo_peer = a.str("peer", "bulk") == "echo";
  uint64_t expect = static_cast<uint64_t>(a.num("expect-bytes", bytes));
  uint64_t seed = echo_peer ? kClientSeed : kServerSeed;
  int fd = connect_or_fail(a);
  set_timeouts(fd, static_cast<int>(a.num("timeout-ms", 30000)));
  std::atomic<bool> send_ok{true};
  std::thread writer([&] {
    std::vector<char> s(1 << 16);
    for (uint64_t pos = 0; pos < static_cast<uint64_t>(bytes);) {
      size_t n = std::min<uint64_t>(s.size(), bytes - pos);
      gen_fill(kClientSeed, pos, s.data(), n);
      if (!send_all(fd, s.data(), n)) {
        send_ok = false;
        return;
      }
      pos += n;
    }
    shutdown(fd, SHUT_WR);
  });
  std::vector<char> buf(1 << 16);
  uint64_t got = 0;
  long long mismatch = -1;
  std::string err;
  for (;;) {
    ssize_t n = recv(fd, buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      err = std::strerror(errno);
      break;
    }
    if (n == 0) break;
    if (mismatch < 0) {
      long long bad = gen_mismatch(seed, got, buf.data(), static_cast<size_t>(n));
      if (bad >= 0) mismatch = static_cast<long long>(got) + bad;
    }
    got += static_cast<uint64_t>(n);
  }
  writer.join();
  close(fd);
  bool ok = send_ok && err.empty() && mismatch < 0 && got == expect;
  json r{{"sent", bytes}, {"received", got}, {"ok", ok}};
  if (mismatch >= 0) r["first_mismatch"] = mismatch;
  if (!err.empty()) r["error"] = err;
  emit(r);
  if (!ok) fail("transfer failed: " + r.dump());
  return 0;
}

int cmd_udp_echo(const Args& a) {
  sockaddr_in to = parse_addr(a.need("to"));
  long long count = a.num("count", 3);
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  set_timeouts(s, static_cast<int>(a.num("timeout-ms", 2000)));
  long long got = 0;
  std::string local;
  for (long long i = 0; i < count; i++) {
    std::string msg = "warren-udp-" + std::to_string(i);
    sendto(s, msg.data(), msg.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
    char buf[2048];
    ssize_t n = recv(s, buf, sizeof buf, 0);
    if (n == static_cast<ssize_t>(msg.size()) && std::memcmp(buf, msg.data(), msg.size()) == 0)
      got++;
    local = local_of(s);
  }
  emit({{"ok", got == count}, {"sent", count}, {"received", got}, {"sockname", local}});
  if (got != count) fail("udp echo: " + std::to_string(got) + "/" + std::to_string(count));
  return 0;
}

int cmd_long_lived(const Args& a) {
  int interval = static_cast<int>(a.num("interval-ms", 100));
  double duration = static_cast<double>(a.num("duration", 3600));
  std::string stop = a.str("stop-file");
  int fd = connect_or_fail(a);
  set_timeouts(fd, 10000);
  emit({{"pid", getpid()}, {"peername", peer_of(fd)}, {"sockname", local_of(fd)}});
  double start = now_s(), last_report = start;
  long long lines = 0;
  for (;;) {
    struct stat st {};
    if (!stop.empty() && ::stat(stop.c_str(), &st) == 0) break;
    if (now_s() - start >= duration) break;
    std::string line = "seq " + std::to_string(lines) + "\n";
    std::string back(line.size(), '\0');
    if (!send_all(fd, line.data(), line.size()))
      fail("send after " + std::to_string(lines) + " lines: " + std::strerror(errno));
    errno = 0;
    if (!recv_exact(fd, back.data(), back.size()))
      fail("echo after " + std::to_string(lines) +
           " lines: " + (errno ? std::strerror(errno) : "connection closed"));
    if (back != line) fail("echo differs at line " + std::to_string(lines));
    lines++;
    if (now_s() - last_report >= 1.0) {
      last_report = now_s();
      emit({{"t", static_cast<int>(last_report - start)}, {"lines", lines}});
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(interval));
  }
  shutdown(fd, SHUT_WR);
  close(fd);
  emit({{"ok", true}, {"lines", lines}});
  return 0;
}

int cmd_rr(const Args& a) {
  double rate = static_cast<double>(a.num("rate", 1000));
  double seconds = static_cast<double>(a.num("seconds", 5));
  size_t size = static_cast<size_t>(a.num("size", 64));
  int fd = connect_or_fail(a);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof one);
  set_timeouts(fd, 10000);
  std::vector<char> req(size, 'r'), resp(size);
  std::vector<double> lat;
  double start = now_s(), step = 1.0 / rate;
  for (long long i = 0;; i++) {
    // Latency counts from the scheduled send time (no coordinated omission).
    double sched = start + static_cast<double>(i) * step;
    if (sched - start >= seconds) break;
    double wait = sched - now_s();
    if (wait > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait));
    if (!send_all(fd, req.data(), size) || !recv_exact(fd, resp.data(), size))
      fail("rr: request " + std::to_string(i) + ": " + std::strerror(errno));
    lat.push_back((now_s() - sched) * 1e6);
  }
  close(fd);
  size_t n = lat.size();
  emit({{"ok", true},
        {"requests", n},
        {"rate", rate},
        {"size", size},
        {"p50_us", percentile(lat, 0.50)},
        {"p90_us", percentile(lat, 0.90)},
        {"p99_us", percentile(lat, 0.99)},
        {"max_us", n ? lat.back() : 0.0}});
  return 0;
}

int cmd_tput(const Args& a) {
  double seconds = static_cast<double>(a.num("seconds", 5));
  int streams = static_cast<int>(a.num("streams", 1));
  sockaddr_in to = parse_addr(a.need("to"));
  std::atomic<uint64_t> total{0};
  std::atomic<int> errors{0};
  double start = now_s();
  std::vector<std::thread> ts;
  for (int i = 0; i < streams; i++) {
    ts.emplace_back([&] {
      int fd = tcp_connect(to, 5000);
      if (fd < 0) {
        errors++;
        return;
      }
      std::vector<char> buf(1 << 17, 't');
      uint64_t sent = 0;
      while (now_s() - start < seconds) {
        if (!send_all(fd, buf.data(), buf.size())) {
          errors++;
          break;
        }
        sent += buf.size();
      }
      shutdown(fd, SHUT_WR);
      char sink[4096];
      while (recv(fd, sink, sizeof sink, 0) > 0) {
      }
      close(fd);
      total += sent;
    });
  }
  for (auto& t : ts) t.join();
  double el = now_s() - start;
  double gbps = static_cast<double>(total.load()) * 8 / el / 1e9;
  emit({{"ok", errors == 0},
        {"bytes", total.load()},
        {"seconds", el},
        {"streams", streams},
        {"gbps", gbps},
        {"errors", errors.load()}});
  return errors == 0 ? 0 : 1;
}

int cmd_cps(const Args& a) {
  double seconds = static_cast<double>(a.num("seconds", 5));
  int conc = static_cast<int>(a.num("concurrency", 1));
  sockaddr_in to = parse_addr(a.need("to"));
  std::atomic<uint64_t> done{0};
  std::atomic<int> errors{0};
  std::mutex mu;
  std::vector<double> lat;
  double start = now_s();
  std::vector<std::thread> ts;
  for (int i = 0; i < conc; i++) {
    ts.emplace_back([&] {
      std::vector<double> mine;
      while (now_s() - start < seconds) {
        double t0 = now_s();
        int fd = tcp_connect(to, 5000);
        char c = 'x', back = 0;
        bool ok = fd >= 0 && send_all(fd, &c, 1) && recv_exact(fd, &back, 1) && back == c;
        if (fd >= 0) close(fd);
        if (!ok) {
          errors++;
          continue;
        }
        mine.push_back((now_s() - t0) * 1e6);
        done++;
      }
      std::lock_guard<std::mutex> l(mu);
      lat.insert(lat.end(), mine.begin(), mine.end());
    });
  }
  for (auto& t : ts) t.join();
  double el = now_s() - start;
  emit({{"ok", errors == 0},
        {"connections", done.load()},
        {"cps", static_cast<double>(done) / el},
        {"errors", errors.load()},
        {"p50_us", percentile(lat, 0.5)},
        {"p99_us", percentile(lat, 0.99)}});
  return errors == 0 ? 0 : 1;
}

}  // namespace warren::podtool
