#include "harness.h"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

namespace warren::e2e {

namespace fs = std::filesystem;

namespace {
// SSL_write on a socket the node closed must fail, not kill the test.
const bool kSigpipeIgnored = [] {
  ::signal(SIGPIPE, SIG_IGN);
  return true;
}();
}  // namespace

std::string bin(const std::string& rel) { return std::string(WARREN_BIN_DIR) + rel; }

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
                std::chrono::milliseconds step) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(step);
  }
}

// ---- files and processes ----

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "warren-e2e-XXXXXX").string();
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  // WARREN_E2E_KEEP=1 keeps the directory (configs, node logs) for debugging.
  if (const char* keep = std::getenv("WARREN_E2E_KEEP"); keep && *keep == '1') return;
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file_atomic(const std::string& path, const std::string& data) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << data;
  }
  fs::rename(tmp, path);
}

static std::vector<char*> cargv(std::vector<std::string>& argv) {
  std::vector<char*> v;
  for (auto& a : argv) v.push_back(a.data());
  v.push_back(nullptr);
  return v;
}

// The child of fork() in a threaded process may only make async-signal-safe
// calls until it execs: another thread may hold the allocator's lock (under
// ASan the child then spins for ever). Everything is prepared before fork().
CmdResult run(const std::vector<std::string>& argv_in, const std::string& input) {
  std::vector<std::string> argv = argv_in;
  auto v = cargv(argv);
  int out[2], in[2];
  if (pipe(out) != 0 || pipe(in) != 0) throw std::runtime_error("pipe");
  pid_t pid = fork();
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(out[1], 2);
    close(in[1]);
    close(out[0]);
    ::signal(SIGPIPE, SIG_DFL);
    execv(v[0], v.data());
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  std::thread writer([&] {
    // A pipe, not a socket: write(), not send().
    const char* p = input.data();
    size_t left = input.size();
    while (left > 0) {
      ssize_t n = ::write(in[1], p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      p += n;
      left -= static_cast<size_t>(n);
    }
    close(in[1]);
  });
  CmdResult r;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(out[0], buf, sizeof buf)) > 0) r.output.append(buf, n);
  close(out[0]);
  writer.join();
  int st = 0;
  waitpid(pid, &st, 0);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

Process::Process(std::vector<std::string> argv, std::string log_path)
    : log_path_(std::move(log_path)) {
  int logfd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (logfd < 0) throw std::runtime_error("open " + log_path_);
  pid_t parent = getpid();
  auto v = cargv(argv);  // before fork(): see run()
  pid_ = fork();
  if (pid_ == 0) {
    // If the test process dies without running destructors (a signal, a
    // ctest timeout), take the node down with it.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(logfd, 1);
    dup2(logfd, 2);
    int devnull = ::open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    ::signal(SIGPIPE, SIG_DFL);
    execv(v[0], v.data());
    _exit(127);
  }
  ::close(logfd);
}

Process::~Process() { stop(); }

bool Process::alive() {
  if (exit_code_ || pid_ <= 0) return false;
  int st = 0;
  pid_t r = waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    exit_code_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return false;
  }
  return true;
}

bool Process::wait_exit(std::chrono::milliseconds timeout) {
  return wait_until([&] { return !alive(); }, timeout, 20ms);
}

void Process::signal(int sig) {
  if (alive()) ::kill(pid_, sig);
}

void Process::stop() {
  if (!alive()) return;
  ::kill(pid_, SIGTERM);
  if (!wait_exit(5s)) {
    ::kill(pid_, SIGKILL);
    wait_exit(5s);
  }
}

std::string Process::log() const { return read_file(log_path_); }

long Process::rss_kb() const {
  std::ifstream f("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

// ---- sockets ----

void Fd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

static sockaddr_in sin_of(const std::string& ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (inet_pton(AF_INET, ip.c_str(), &a.sin_addr) != 1)
    throw std::runtime_error("bad IPv4 address " + ip);
  return a;
}

std::string pick_loopback_prefix() {
  static std::mt19937 rng{std::random_device{}() ^ static_cast<unsigned>(getpid())};
  for (int tries = 0; tries < 100; tries++) {
    int a = 20 + static_cast<int>(rng() % 231);
    int b = static_cast<int>(rng() % 256);
    std::string p = "127." + std::to_string(a) + "." + std::to_string(b);
    // Probe the node ports: if anything is bound there, pick again.
    bool free = true;
    for (const char* last : {".2", ".3"})
      for (uint16_t port : {15080, 15000, 15020, 15021}) {
        Fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        auto sa = sin_of(p + last, port);
        if (::bind(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) free = false;
      }
    if (free) return p;
  }
  throw std::runtime_error("no free loopback prefix");
}

void set_recv_timeout(int fd, std::chrono::milliseconds t) {
  timeval tv{};
  tv.tv_sec = t.count() / 1000;
  tv.tv_usec = (t.count() % 1000) * 1000;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

Fd tcp_connect(const std::string& src_ip, const std::string& ip, uint16_t port,
               std::chrono::milliseconds timeout) {
  Fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!src_ip.empty()) {
    int one = 1;
    setsockopt(s.get(), SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    auto sa = sin_of(src_ip, 0);
    if (::bind(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return {};
  }
  set_recv_timeout(s.get(), timeout);
  auto da = sin_of(ip, port);
  if (::connect(s.get(), reinterpret_cast<sockaddr*>(&da), sizeof da) != 0) return {};
  set_recv_timeout(s.get(), 10s);
  return s;
}

Fd tcp_listen(const std::string& ip, uint16_t port, int backlog) {
  Fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  auto sa = sin_of(ip, port);
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
    throw std::runtime_error("bind " + ip + ":" + std::to_string(port) + ": " + strerror(errno));
  if (::listen(s.get(), backlog) != 0) throw std::runtime_error("listen");
  return s;
}

bool send_all(int fd, const void* data, size_t len) {
  auto* p = static_cast<const char*>(data);
  while (len > 0) {
    ssize_t n = ::send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

bool recv_exact(int fd, void* data, size_t len) {
  auto* p = static_cast<char*>(data);
  while (len > 0) {
    ssize_t n = ::recv(fd, p, len, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

std::optional<std::string> recv_to_eof(int fd, std::chrono::milliseconds timeout) {
  std::string out;
  auto deadline = Clock::now() + timeout;
  char buf[65536];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) return out;
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return std::nullopt;
    }
    out.append(buf, static_cast<size_t>(n));
  }
}

bool wait_closed(int fd, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  char buf[65536];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) return true;
    if (n < 0 && errno != EINTR && errno != EAGAIN) return true;
  }
}

SocksResult socks_connect(const std::string& src_ip, const std::string& proxy_ip,
                          uint16_t proxy_port, const std::string& dst_ip, uint16_t dst_port) {
  SocksResult r;
  r.fd = tcp_connect(src_ip, proxy_ip, proxy_port);
  if (!r.fd) return r;
  int fd = r.fd.get();
  set_recv_timeout(fd, 15s);
  const uint8_t hello[] = {5, 1, 0};
  uint8_t ans[2];
  if (!send_all(fd, hello, 3) || !recv_exact(fd, ans, 2) || ans[0] != 5 || ans[1] != 0) return r;
  auto da = sin_of(dst_ip, dst_port);
  uint8_t req[10] = {5, 1, 0, 1};
  std::memcpy(req + 4, &da.sin_addr, 4);
  std::memcpy(req + 8, &da.sin_port, 2);
  uint8_t rep[4];
  if (!send_all(fd, req, sizeof req) || !recv_exact(fd, rep, 4)) return r;
  r.reply = rep[1];
  size_t rest = rep[3] == 1 ? 6 : rep[3] == 4 ? 18 : 0;
  if (rep[3] == 3) {
    uint8_t l;
    if (!recv_exact(fd, &l, 1)) return r;
    rest = l + 2u;
  }
  uint8_t tail[300];
  recv_exact(fd, tail, rest);
  set_recv_timeout(fd, 10s);
  return r;
}

// ---- echo server ----

EchoServer::EchoServer(const std::string& ip, uint16_t port, std::string banner)
    : listen_fd_(tcp_listen(ip, port)), banner_(std::move(banner)) {
  fcntl(listen_fd_.get(), F_SETFL, O_NONBLOCK);
  if (pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) throw std::runtime_error("pipe");
  thread_ = std::thread([this] { loop(); });
}

EchoServer::~EchoServer() {
  (void)!::write(wake_[1], "x", 1);
  thread_.join();
  ::close(wake_[0]);
  ::close(wake_[1]);
}

void EchoServer::loop() {
  struct Conn {
    std::string pending;
    bool eof = false;
  };
  int ep = epoll_create1(EPOLL_CLOEXEC);
  auto add = [&](int fd, uint32_t ev) {
    epoll_event e{};
    e.events = ev;
    e.data.fd = fd;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
  };
  auto mod = [&](int fd, uint32_t ev) {
    epoll_event e{};
    e.events = ev;
    e.data.fd = fd;
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e);
  };
  add(listen_fd_.get(), EPOLLIN);
  add(wake_[0], EPOLLIN);
  std::map<int, Conn> conns;
  auto drop = [&](int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
    conns.erase(fd);
    open_--;
  };
  // Writes what is pending; after EOF and a flush, half-closes.
  auto pump = [&](int fd) -> bool {
    auto& c = conns[fd];
    while (!c.pending.empty()) {
      ssize_t n = ::send(fd, c.pending.data(), c.pending.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EAGAIN) break;
      if (n <= 0) return false;
      c.pending.erase(0, static_cast<size_t>(n));
    }
    uint32_t ev = EPOLLRDHUP;
    if (!c.eof && c.pending.size() < (4u << 20)) ev |= EPOLLIN;
    if (!c.pending.empty()) ev |= EPOLLOUT;
    if (c.eof && c.pending.empty()) {
      ::shutdown(fd, SHUT_WR);
      ev = EPOLLIN;  // wait for the peer's close (or reset)
    }
    mod(fd, ev);
    return true;
  };
  char buf[65536];
  for (;;) {
    epoll_event evs[64];
    int n = epoll_wait(ep, evs, 64, -1);
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == wake_[0]) {
        for (auto& [cfd, c] : conns) ::close(cfd);
        ::close(ep);
        return;
      }
      if (fd == listen_fd_.get()) {
        for (;;) {
          int c = ::accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (c < 0) break;
          accepted_++;
          open_++;
          conns[c].pending = banner_;
          add(c, EPOLLIN);
          if (!pump(c)) drop(c);
        }
        continue;
      }
      auto it = conns.find(fd);
      if (it == conns.end()) continue;
      bool ok = true;
      if (it->second.eof && it->second.pending.empty()) {
        // Already half-closed: only the final close or reset matters.
        ssize_t r = ::recv(fd, buf, sizeof buf, 0);
        if (r <= 0 && !(r < 0 && errno == EAGAIN)) drop(fd);
        continue;
      }
      if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        for (;;) {
          ssize_t r = ::recv(fd, buf, sizeof buf, 0);
          if (r > 0) {
            it->second.pending.append(buf, static_cast<size_t>(r));
            if (it->second.pending.size() >= (4u << 20)) break;
            continue;
          }
          if (r == 0) it->second.eof = true;
          else if (errno != EAGAIN) ok = false;
          break;
        }
      }
      if (ok) ok = pump(fd);
      if (!ok) drop(fd);
    }
  }
}

Firehose::Firehose(const std::string& ip, uint16_t port) : listen_fd_(tcp_listen(ip, port)) {
  thread_ = std::thread([this] {
    std::string chunk(65536, 'f');
    std::vector<Fd> conns;
    while (!stop_) {
      pollfd p{listen_fd_.get(), POLLIN, 0};
      if (::poll(&p, 1, 50) == 1) {
        Fd c(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (c) conns.push_back(std::move(c));
      }
      for (auto& c : conns) {
        if (!c) continue;
        for (int i = 0; i < 64; i++) {
          ssize_t n = ::send(c.get(), chunk.data(), chunk.size(), MSG_NOSIGNAL);
          if (n > 0) {
            written_ += static_cast<uint64_t>(n);
            continue;
          }
          if (n < 0 && errno != EAGAIN) c.reset();
          break;
        }
      }
    }
  });
}

Firehose::~Firehose() {
  stop_ = true;
  thread_.join();
}

bool wait_stable(const std::function<uint64_t()>& counter, std::chrono::milliseconds quiet,
                 std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  uint64_t last = counter();
  auto since = Clock::now();
  while (Clock::now() < deadline) {
    std::this_thread::sleep_for(100ms);
    uint64_t now = counter();
    if (now != last) {
      last = now;
      since = Clock::now();
    } else if (Clock::now() - since >= quiet) {
      return true;
    }
  }
  return false;
}

// ---- HTTP and metrics ----

HttpResponse http_request(const std::string& method, const std::string& ip, uint16_t port,
                          const std::string& target) {
  HttpResponse r;
  Fd s = tcp_connect("", ip, port, 2s);
  if (!s) return r;
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: " + ip +
                    "\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
  if (!send_all(s.get(), req.data(), req.size())) return r;
  auto all = recv_to_eof(s.get(), 10s);
  if (!all || all->rfind("HTTP/1.1 ", 0) != 0) return r;
  r.status = std::atoi(all->c_str() + 9);
  auto hdr_end = all->find("\r\n\r\n");
  if (hdr_end != std::string::npos) r.body = all->substr(hdr_end + 4);
  // The admin server may use chunked encoding; undo it when present.
  auto head = all->substr(0, hdr_end);
  for (auto& ch : head) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (head.find("transfer-encoding: chunked") != std::string::npos) {
    std::string body, in = r.body;
    size_t pos = 0;
    for (;;) {
      auto eol = in.find("\r\n", pos);
      if (eol == std::string::npos) break;
      size_t len = std::stoul(in.substr(pos, eol - pos), nullptr, 16);
      if (len == 0) break;
      body += in.substr(eol + 2, len);
      pos = eol + 2 + len + 2;
    }
    r.body = body;
  }
  return r;
}

std::vector<Sample> parse_metrics(const std::string& text) {
  std::vector<Sample> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    Sample s;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') i++;
    s.name = line.substr(0, i);
    if (i < line.size() && line[i] == '{') {
      i++;
      while (i < line.size() && line[i] != '}') {
        size_t eq = line.find('=', i);
        std::string key = line.substr(i, eq - i);
        i = eq + 2;  // skip ="
        std::string val;
        while (i < line.size() && line[i] != '"') {
          if (line[i] == '\\' && i + 1 < line.size()) {
            char e = line[++i];
            val += e == 'n' ? '\n' : e;
          } else {
            val += line[i];
          }
          i++;
        }
        i++;  // closing quote
        if (i < line.size() && line[i] == ',') i++;
        s.labels[key] = val;
      }
      i++;  // '}'
    }
    while (i < line.size() && line[i] == ' ') i++;
    s.value = std::strtod(line.c_str() + i, nullptr);
    out.push_back(std::move(s));
  }
  return out;
}

double metric_sum(const std::vector<Sample>& samples, const std::string& name,
                  const Labels& match) {
  double sum = 0;
  for (auto& s : samples) {
    if (s.name != name) continue;
    bool ok = true;
    for (auto& [k, v] : match) {
      auto it = s.labels.find(k);
      if (it == s.labels.end() || it->second != v) ok = false;
    }
    if (ok) sum += s.value;
  }
  return sum;
}

// ---- dev CA ----

static void must(const CmdResult& r, const std::string& what) {
  if (r.exit_code != 0)
    throw std::runtime_error(what + " failed (" + std::to_string(r.exit_code) + "): " + r.output);
}

void dev_ca_init(const std::string& dir) {
  must(run({bin("/cli/warrenctl"), "dev-ca", "init", "--out", dir}), "dev-ca init");
}

void dev_ca_issue(const std::string& ca, const std::string& ns, const std::string& sa,
                  const std::string& out, const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {bin("/cli/warrenctl"), "dev-ca", "issue", "--ca", ca,
                                   "-n", ns, "-s", sa, "--out", out};
  argv.insert(argv.end(), extra.begin(), extra.end());
  must(run(argv), "dev-ca issue");
}

void dev_ca_issue_config(const std::string& ca, const std::string& config) {
  must(run({bin("/cli/warrenctl"), "dev-ca", "issue-config", "--ca", ca, "--config", config}),
       "dev-ca issue-config");
}

// ---- mesh ----

Mesh::Mesh() : prefix_(pick_loopback_prefix()) { dev_ca_init(ca()); }

Mesh::~Mesh() {
  // A node that crashed, or that a sanitizer complained about, fails the test
  // even when the test's own checks passed (a crash may only show as a
  // refused connection).
  for (auto* p : {a_.get(), b_.get()}) {
    if (!p) continue;
    bool was_alive = p->alive();
    p->stop();
    std::string log = p->log();
    bool crashed = !was_alive && p->exit_code().value_or(0) != 0;
    bool sanitizer = log.find("ERROR: AddressSanitizer") != std::string::npos ||
                     log.find("ERROR: LeakSanitizer") != std::string::npos ||
                     log.find("runtime error:") != std::string::npos;
    if ((crashed || sanitizer) && std::uncaught_exceptions() == 0) {
      std::string tail = log.size() > 6000 ? log.substr(log.size() - 6000) : log;
      FAIL_CHECK("warren-node " << (crashed ? "exited with code " +
                                                  std::to_string(*p->exit_code())
                                            : std::string("reported a sanitizer error"))
                                << "; log tail:\n" << tail);
    }
  }
}

void Mesh::add_workload(WorkloadSpec w) {
  nlohmann::json j = {{"uid", w.uid},         {"name", w.name},     {"namespace", w.ns},
                      {"serviceAccount", w.sa}, {"node", w.node},   {"ips", {w.ip}},
                      {"protocol", w.protocol}, {"labels", w.labels}};
  workloads_.push_back(std::move(j));
}

void Mesh::add_service(const std::string& name, const std::string& vip, uint16_t port,
                       uint16_t target_port, std::vector<std::string> endpoint_uids) {
  services_.push_back({{"name", name},
                       {"namespace", "default"},
                       {"vips", {vip}},
                       {"ports", {{{"port", port}, {"targetPort", target_port}}}},
                       {"endpoints", endpoint_uids}});
}

void Mesh::set_workload_field(const std::string& uid, const std::string& key, nlohmann::json v) {
  for (auto& w : workloads_)
    if (w["uid"] == uid) w[key] = v;
}

void Mesh::set_service_field(const std::string& name, const std::string& key, nlohmann::json v) {
  for (auto& s : services_)
    if (s["name"] == name) s[key] = v;
}

nlohmann::json Mesh::config_for(char n) const {
  std::string ip = node_ip(n);
  nlohmann::json j;
  j["node"] = {{"name", std::string("node-") + n}, {"address", ip}};
  j["listeners"] = {{"socks5", ip + ":15080"},
                    {"admin", ip + ":15000"},
                    {"metrics", ip + ":15020"},
                    {"readiness", ip + ":15021"}};
  j["certificates"] = {{"rootCert", "ca/root-cert.pem"}, {"dir", "ca"}};
  j["workloads"] = workloads_;
  j["services"] = services_;
  j["policies"] = policies_;
  j["peerAuthentications"] = nlohmann::json::array();
  return j;
}

void Mesh::write_configs() {
  for (char n : {'a', 'b'}) write_file_atomic(config_path(n), config_for(n).dump(2));
}

void Mesh::write_raw_config(char n, const std::string& text) {
  write_file_atomic(config_path(n), text);
}

static std::unique_ptr<Process> start_node(const Mesh& m, char n, const NodeOpts& o) {
  std::vector<std::string> argv = {bin("/nodeproxy/warren-node"), "-c", m.config_path(n),
                                   "--access-log", m.access_log(n), "--log-level", o.log_level};
  if (o.connect_timeout_ms)
    argv.insert(argv.end(), {"--connect-timeout-ms", std::to_string(o.connect_timeout_ms)});
  return std::make_unique<Process>(argv, m.dir() / std::string("node-") + n + ".log");
}

void Mesh::start(NodeOpts a, NodeOpts b) {
  write_configs();
  dev_ca_issue_config(ca(), config_path('a'));
  a_ = start_node(*this, 'a', a);
  b_ = start_node(*this, 'b', b);
  for (char n : {'a', 'b'}) {
    bool ready = wait_until(
        [&] { return http_get(node_ip(n), 15021, "/healthz/ready").status == 200 || !node(n).alive(); },
        20s);
    if (!ready || !node(n).alive())
      throw std::runtime_error(std::string("node-") + n + " did not become ready:\n" +
                               node(n).log());
  }
}

long Mesh::config_version(char n) {
  auto r = http_get(node_ip(n), 15000, "/config_dump");
  if (r.status != 200) return -1;
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  if (j.is_discarded() || !j.contains("version")) return -1;
  return j["version"].get<long>();
}

void Mesh::update_configs() {
  long va = config_version('a'), vb = config_version('b');
  write_configs();
  bool ok = wait_until(
      [&] { return config_version('a') > va && config_version('b') > vb; }, 15s, 100ms);
  if (!ok) throw std::runtime_error("config update not applied");
}

std::string Mesh::metrics_text(char n) { return http_get(node_ip(n), 15020, "/metrics").body; }
std::vector<Sample> Mesh::metrics(char n) { return parse_metrics(metrics_text(n)); }

// ---- TLS / HTTP/2 client ----

static std::string ssl_errors() {
  std::string s;
  unsigned long e;
  char buf[256];
  while ((e = ERR_get_error()) != 0) {
    ERR_error_string_n(e, buf, sizeof buf);
    s += std::string(s.empty() ? "" : "; ") + buf;
  }
  return s;
}

TlsClient::TlsClient(const std::string& src_ip, const std::string& ip, uint16_t port,
                     const TlsOpts& o) {
  ctx_ = SSL_CTX_new(TLS_client_method());
  if (o.tls12_only) {
    SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx_, TLS1_2_VERSION);
  } else {
    SSL_CTX_set_min_proto_version(ctx_, TLS1_3_VERSION);
  }
  if (!o.cert.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx_, o.cert.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx_, o.key.c_str(), SSL_FILETYPE_PEM) != 1) {
      err_ = "loading client cert: " + ssl_errors();
      return;
    }
  }
  // The test client does not verify the server: it tests the server's checks.
  SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);
  if (!o.alpn.empty()) {
    std::string wire = std::string(1, static_cast<char>(o.alpn.size())) + o.alpn;
    SSL_CTX_set_alpn_protos(ctx_, reinterpret_cast<const unsigned char*>(wire.data()),
                            static_cast<unsigned>(wire.size()));
  }
  fd_ = tcp_connect(src_ip, ip, port);
  if (!fd_) {
    err_ = "connect failed";
    return;
  }
  set_recv_timeout(fd_.get(), 5s);
  ssl_ = SSL_new(ctx_);
  SSL_set_fd(ssl_, fd_.get());
  int r = SSL_connect(ssl_);
  if (r != 1) {
    err_ = "handshake: " + std::to_string(SSL_get_error(ssl_, r)) + " " + ssl_errors();
    return;
  }
  ok_ = true;
}

TlsClient::~TlsClient() {
  if (ssl_) SSL_free(ssl_);
  if (ctx_) SSL_CTX_free(ctx_);
}

bool TlsClient::write(const std::string& data) {
  if (!ssl_) return false;
  size_t off = 0;
  while (off < data.size()) {
    int n = SSL_write(ssl_, data.data() + off, static_cast<int>(data.size() - off));
    if (n <= 0) {
      ERR_clear_error();
      return false;
    }
    off += static_cast<size_t>(n);
  }
  return true;
}

void TlsClient::reset_connection() {
  if (!fd_) return;
  linger l{1, 0};
  setsockopt(fd_.get(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
  fd_.reset();
}

long TlsClient::peer_not_after() const {
  if (!ssl_) return -1;
  X509* cert = SSL_get1_peer_certificate(ssl_);
  if (!cert) return -1;
  tm t{};
  long out = -1;
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &t) == 1) out = static_cast<long>(timegm(&t));
  X509_free(cert);
  return out;
}

std::optional<std::string> TlsClient::read(std::chrono::milliseconds timeout) {
  if (!ssl_) return std::nullopt;
  set_recv_timeout(fd_.get(), timeout);
  char buf[65536];
  int n = SSL_read(ssl_, buf, sizeof buf);
  if (n <= 0) {
    ERR_clear_error();
    return std::nullopt;
  }
  return std::string(buf, static_cast<size_t>(n));
}

std::string frame(uint8_t type, uint8_t flags, uint32_t sid, const std::string& payload) {
  std::string f(9, '\0');
  size_t len = payload.size();
  f[0] = static_cast<char>((len >> 16) & 0xff);
  f[1] = static_cast<char>((len >> 8) & 0xff);
  f[2] = static_cast<char>(len & 0xff);
  f[3] = static_cast<char>(type);
  f[4] = static_cast<char>(flags);
  f[5] = static_cast<char>((sid >> 24) & 0x7f);
  f[6] = static_cast<char>((sid >> 16) & 0xff);
  f[7] = static_cast<char>((sid >> 8) & 0xff);
  f[8] = static_cast<char>(sid & 0xff);
  return f + payload;
}

H2Client::H2Client(std::unique_ptr<TlsClient> tls) : tls_(std::move(tls)) {
  nghttp2_hd_deflate_new(reinterpret_cast<nghttp2_hd_deflater**>(&deflater_), 4096);
  nghttp2_hd_inflate_new(reinterpret_cast<nghttp2_hd_inflater**>(&inflater_));
}

H2Client::~H2Client() {
  nghttp2_hd_deflate_del(static_cast<nghttp2_hd_deflater*>(deflater_));
  nghttp2_hd_inflate_del(static_cast<nghttp2_hd_inflater*>(inflater_));
}

bool H2Client::handshake() {
  return ok() && send("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(kSettings, 0, 0, ""));
}

std::string H2Client::encode(const std::vector<std::pair<std::string, std::string>>& headers) {
  std::vector<nghttp2_nv> nv;
  for (auto& [k, v] : headers)
    nv.push_back({reinterpret_cast<uint8_t*>(const_cast<char*>(k.data())),
                  reinterpret_cast<uint8_t*>(const_cast<char*>(v.data())), k.size(), v.size(),
                  NGHTTP2_NV_FLAG_NONE});
  auto* d = static_cast<nghttp2_hd_deflater*>(deflater_);
  std::string out(nghttp2_hd_deflate_bound(d, nv.data(), nv.size()), '\0');
  ssize_t n = nghttp2_hd_deflate_hd(d, reinterpret_cast<uint8_t*>(out.data()), out.size(),
                                    nv.data(), nv.size());
  out.resize(n < 0 ? 0 : static_cast<size_t>(n));
  return out;
}

bool H2Client::send_headers(uint32_t sid,
                            const std::vector<std::pair<std::string, std::string>>& h,
                            bool end_stream) {
  return send(frame(kHeaders, kEndHeaders | (end_stream ? kEndStream : 0), sid, encode(h)));
}

std::optional<Frame> H2Client::next(std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    if (buf_.size() >= 9) {
      size_t len = (static_cast<uint8_t>(buf_[0]) << 16) | (static_cast<uint8_t>(buf_[1]) << 8) |
                   static_cast<uint8_t>(buf_[2]);
      if (buf_.size() >= 9 + len) {
        Frame f;
        f.type = static_cast<uint8_t>(buf_[3]);
        f.flags = static_cast<uint8_t>(buf_[4]);
        f.sid = ((static_cast<uint8_t>(buf_[5]) & 0x7f) << 24) |
                (static_cast<uint8_t>(buf_[6]) << 16) | (static_cast<uint8_t>(buf_[7]) << 8) |
                static_cast<uint8_t>(buf_[8]);
        f.payload = buf_.substr(9, len);
        buf_.erase(0, 9 + len);
        if (f.type == kSettings && !(f.flags & kAck)) send(frame(kSettings, kAck, 0, ""));
        if (f.type == kGoaway) goaway_ = true;
        return f;
      }
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return std::nullopt;
    auto data = tls_->read(left);
    if (!data) return std::nullopt;
    buf_ += *data;
  }
}

std::vector<std::pair<std::string, std::string>> H2Client::decode(const std::string& block) {
  std::vector<std::pair<std::string, std::string>> out;
  auto* inf = static_cast<nghttp2_hd_inflater*>(inflater_);
  auto* in = reinterpret_cast<const uint8_t*>(block.data());
  size_t left = block.size();
  for (;;) {
    nghttp2_nv nv;
    int flags = 0;
    ssize_t n = nghttp2_hd_inflate_hd2(inf, &nv, &flags, in, left, 1);
    if (n < 0) break;
    in += n;
    left -= static_cast<size_t>(n);
    if (flags & NGHTTP2_HD_INFLATE_EMIT)
      out.emplace_back(std::string(reinterpret_cast<char*>(nv.name), nv.namelen),
                       std::string(reinterpret_cast<char*>(nv.value), nv.valuelen));
    if (flags & NGHTTP2_HD_INFLATE_FINAL) {
      nghttp2_hd_inflate_end_headers(inf);
      break;
    }
    if (n == 0 && left == 0) break;
  }
  return out;
}

int H2Client::response_status(uint32_t sid, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    auto f = next(left);
    if (!f) return -1;
    if (f->type == kGoaway) return -1;
    if (f->sid != sid) continue;
    if (f->type == kRstStream) {
      uint32_t code = (static_cast<uint8_t>(f->payload[0]) << 24) |
                      (static_cast<uint8_t>(f->payload[1]) << 16) |
                      (static_cast<uint8_t>(f->payload[2]) << 8) |
                      static_cast<uint8_t>(f->payload[3]);
      return -1000 - static_cast<int>(code);
    }
    if (f->type == kHeaders) {
      std::string block = f->payload;
      size_t off = 0, pad = 0;
      if (f->flags & 0x8) {
        pad = static_cast<uint8_t>(block[0]);
        off = 1;
      }
      if (f->flags & 0x20) off += 5;
      block = block.substr(off, block.size() - off - pad);
      for (auto& [k, v] : decode(block))
        if (k == ":status") return std::atoi(v.c_str());
      return 0;
    }
  }
}

std::unique_ptr<H2Client> hbone_client(const Mesh& m, const std::string& src_ip,
                                       const std::string& dst_ip, const std::string& ns,
                                       const std::string& sa) {
  TlsOpts o;
  o.cert = m.ca() + "/" + ns + "/" + sa + "/cert-chain.pem";
  o.key = m.ca() + "/" + ns + "/" + sa + "/key.pem";
  auto c = std::make_unique<H2Client>(std::make_unique<TlsClient>(src_ip, dst_ip, 15008, o));
  return c;
}

}  // namespace warren::e2e
