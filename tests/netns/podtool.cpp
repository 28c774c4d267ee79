// warren-podtool: the test program run inside pods. Each subcommand prints
// JSON lines on stdout and exits 0 on success; on failure it prints a message
// on stderr and exits nonzero. Servers print {"listening":PORT} once ready.
//
//   serve --port P [--speak-first N] [--echo | --sink | --discard | --bulk N] [--count N]
//   udp-echo-serve --port P [--count N]
//   connect --to IP:PORT [--send-marker S] [--expect-echo] [--expect-speak-first N]
//           [--hold SECONDS] [--timeout-ms T]
//   transfer --to IP:PORT --bytes N [--peer bulk|echo] [--expect-bytes M]
//   udp-echo --to IP:PORT [--count N] [--timeout-ms T]
//   long-lived --to IP:PORT [--interval-ms 100] [--duration S] [--stop-file F]
//   rr --to IP:PORT [--rate R] [--seconds S] [--size B]
//   tput --to IP:PORT [--seconds S] [--streams K]
//   cps --to IP:PORT [--seconds S] [--concurrency C]
//   http-serve --port P --name NAME [...], http-get --to IP:PORT [...]   (podtool_http.cpp)
#include "podtool.h"

#include <arpa/inet.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <iostream>
#include <mutex>
#include <thread>

namespace warren::podtool {

using nlohmann::json;

std::string Args::str(const std::string& k, const std::string& def) const {
  auto it = kv.find(k);
  return it == kv.end() ? def : it->second;
}

long long Args::num(const std::string& k, long long def) const {
  auto it = kv.find(k);
  if (it == kv.end()) return def;
  try {
    return std::stoll(it->second);
  } catch (...) {
    fail("--" + k + ": not a number: " + it->second);
  }
}

std::string Args::need(const std::string& k) const {
  if (!has(k)) fail("missing --" + k);
  return str(k);
}

Args parse_args(int argc, char** argv, int first) {
  Args a;
  for (int i = first; i < argc; i++) {
    std::string k = argv[i];
    if (k.rfind("--", 0) != 0) fail("unexpected argument " + k);
    k = k.substr(2);
    if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0)
      a.kv[k] = argv[++i];
    else
      a.kv[k] = "";
  }
  return a;
}

static uint64_t splitmix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

void gen_fill(uint64_t seed, uint64_t pos, char* buf, size_t n) {
  uint64_t base = seed << 56;
  size_t i = 0;
  while (i < n) {
    uint64_t w = splitmix(base + (pos + i) / 8);
    size_t off = (pos + i) % 8;
    for (; off < 8 && i < n; off++, i++) buf[i] = static_cast<char>(w >> (off * 8));
  }
}

long long gen_mismatch(uint64_t seed, uint64_t pos, const char* buf, size_t n) {
  std::vector<char> want(n);
  gen_fill(seed, pos, want.data(), n);
  if (std::memcmp(want.data(), buf, n) == 0) return -1;
  for (size_t i = 0; i < n; i++)
    if (want[i] != buf[i]) return static_cast<long long>(i);
  return -1;
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr);
}
Sha256::~Sha256() {
  EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
}
void Sha256::update(const void* p, size_t n) {
  EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), p, n);
}
std::string Sha256::hex() {
  unsigned char md[32];
  unsigned len = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), md, &len);
  static const char* kHex = "0123456789abcdef";
  std::string s;
  for (unsigned i = 0; i < len; i++) s += {kHex[md[i] >> 4], kHex[md[i] & 15]};
  return s;
}

sockaddr_in parse_addr(const std::string& s) {
  auto colon = s.rfind(':');
  sockaddr_in a{};
  a.sin_family = AF_INET;
  if (colon == std::string::npos ||
      inet_pton(AF_INET, s.substr(0, colon).c_str(), &a.sin_addr) != 1)
    fail("bad address (want IPv4:PORT): " + s);
  a.sin_port = htons(static_cast<uint16_t>(std::stoi(s.substr(colon + 1))));
  return a;
}

std::string addr_str(const sockaddr_in& a) {
  char ip[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
  return std::string(ip) + ":" + std::to_string(ntohs(a.sin_port));
}

std::string peer_of(int fd) {
  sockaddr_in a{};
  socklen_t l = sizeof a;
  return getpeername(fd, reinterpret_cast<sockaddr*>(&a), &l) == 0 ? addr_str(a) : "";
}

std::string local_of(int fd) {
  sockaddr_in a{};
  socklen_t l = sizeof a;
  return getsockname(fd, reinterpret_cast<sockaddr*>(&a), &l) == 0 ? addr_str(a) : "";
}

static std::mutex g_out;
void emit(const json& j) {
  std::lock_guard<std::mutex> l(g_out);
  std::cout << j.dump() << std::endl;
}

void fail(const std::string& msg) {
  std::cerr << "warren-podtool: " << msg << std::endl;
  std::exit(1);
}

bool send_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

void set_timeouts(int fd, int ms) {
  timeval tv{ms / 1000, (ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

int tcp_connect(const sockaddr_in& to, int timeout_ms) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  set_timeouts(fd, timeout_ms);  // connect() honours SO_SNDTIMEO
  if (connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

double percentile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

namespace {

struct ServeOpts {
  long long speak_first = 0, bulk = -1;
  bool echo = false, sink = false, discard = false;
};

void handle(int fd, const ServeOpts& o) {
  json r{{"peer", peer_of(fd)}, {"local", local_of(fd)}};
  Sha256 sha;
  uint64_t in = 0;
  bool ok = true, verified = true;
  std::vector<char> buf(1 << 16);
  if (o.speak_first > 0) {
    std::vector<char> s(static_cast<size_t>(o.speak_first));
    gen_fill(kServerSeed, 0, s.data(), s.size());
    ok = send_all(fd, s.data(), s.size());
  }
  std::thread writer;
  if (o.bulk >= 0) {
    writer = std::thread([&] {
      std::vector<char> s(1 << 16);
      for (uint64_t pos = 0; pos < static_cast<uint64_t>(o.bulk);) {
        size_t n = std::min<uint64_t>(s.size(), o.bulk - pos);
        gen_fill(kServerSeed, pos, s.data(), n);
        if (!send_all(fd, s.data(), n)) return;
        pos += n;
      }
      shutdown(fd, SHUT_WR);
    });
  }
  while (ok) {
    ssize_t n = recv(fd, buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      r["error"] = std::strerror(errno);
      ok = false;
      break;
    }
    if (n == 0) break;
    if (!o.discard) sha.update(buf.data(), static_cast<size_t>(n));
    if (o.bulk >= 0 && verified) {
      long long bad = gen_mismatch(kClientSeed, in, buf.data(), static_cast<size_t>(n));
      if (bad >= 0) {
        verified = false;
        r["first_mismatch"] = in + static_cast<uint64_t>(bad);
      }
    }
    in += static_cast<uint64_t>(n);
    if (o.echo && !send_all(fd, buf.data(), static_cast<size_t>(n))) ok = false;
  }
  std::string digest = sha.hex();
  if (o.sink && ok) ok = send_all(fd, (digest + "\n").data(), digest.size() + 1);
  if (o.bulk < 0) shutdown(fd, SHUT_WR);
  if (writer.joinable()) writer.join();
  r["bytes_in"] = in;
  r["sha256_in"] = digest;
  if (o.bulk >= 0) {
    r["sent"] = o.bulk;
    r["received"] = in;
    ok = ok && verified;
  }
  r["ok"] = ok;
  emit(r);
  close(fd);
}

}  // namespace

int cmd_serve(const Args& a) {
  ServeOpts o;
  o.speak_first = a.num("speak-first", 0);
  o.bulk = a.has("bulk") ? a.num("bulk", 0) : -1;
  o.echo = a.has("echo");
  o.sink = a.has("sink");
  o.discard = a.has("discard");  // no SHA-256 of the input (throughput runs)
  long long count = a.num("count", -1);
  int port = static_cast<int>(a.num("port", -1));
  if (port < 0) fail("serve needs --port");
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa = parse_addr(a.str("bind", "0.0.0.0") + ":" + std::to_string(port));
  if (bind(ls, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || listen(ls, 4096) != 0)
    fail("listen on port " + std::to_string(port) + ": " + std::strerror(errno));
  emit({{"listening", port}});
  std::vector<std::thread> threads;
  for (long long i = 0; count < 0 || i < count; i++) {
    int fd = accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      fail(std::string("accept: ") + std::strerror(errno));
    }
    std::thread t(handle, fd, o);
    if (count < 0)
      t.detach();
    else
      threads.push_back(std::move(t));
  }
  for (auto& t : threads) t.join();
  return 0;
}

int cmd_udp_echo_serve(const Args& a) {
  int port = static_cast<int>(a.num("port", -1));
  long long count = a.num("count", -1);
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa = parse_addr("0.0.0.0:" + std::to_string(port));
  if (port < 0 || bind(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
    fail("udp bind: " + std::string(std::strerror(errno)));
  emit({{"listening", port}});
  char buf[65536];
  for (long long i = 0; count < 0 || i < count; i++) {
    sockaddr_in from{};
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(s, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &fl);
    if (n < 0) fail(std::string("recvfrom: ") + std::strerror(errno));
    sendto(s, buf, static_cast<size_t>(n), 0, reinterpret_cast<sockaddr*>(&from), fl);
    emit({{"peer", addr_str(from)}, {"bytes", n}});
  }
  return 0;
}

}  // namespace warren::podtool

int main(int argc, char** argv) {
  using namespace warren::podtool;
  ::signal(SIGPIPE, SIG_IGN);
  if (argc < 2) fail("usage: warren-podtool SUBCOMMAND [--options]; see podtool.cpp");
  std::string cmd = argv[1];
  Args a = parse_args(argc, argv, 2);
  if (cmd == "serve") return cmd_serve(a);
  if (cmd == "udp-echo-serve") return cmd_udp_echo_serve(a);
  if (cmd == "connect") return cmd_connect(a);
  if (cmd == "transfer") return cmd_transfer(a);
  if (cmd == "udp-echo") return cmd_udp_echo(a);
  if (cmd == "long-lived") return cmd_long_lived(a);
  if (cmd == "rr") return cmd_rr(a);
  if (cmd == "tput") return cmd_tput(a);
  if (cmd == "cps") return cmd_cps(a);
  if (cmd == "http-serve") return cmd_http_serve(a);
  if (cmd == "http-get") return cmd_http_get(a);
  fail("unknown subcommand " + cmd);
}
