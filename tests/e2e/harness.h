// End-to-end harness for warren-node on loopback (no root): temp dirs, the dev
// CA, config files, child processes, a SOCKS5 client, an echo server, HTTP/1.1
// GETs, a Prometheus text scraper and a raw HBONE (TLS 1.3 + HTTP/2) client.
// Everything is RAII: processes are killed and directories removed even when
// an assertion fails half way.
#pragma once

#include <nlohmann/json.hpp>
#include <openssl/ssl.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace warren::e2e {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::string bin(const std::string& rel);  // WARREN_BIN_DIR + rel

// Polls `pred` every `step` until it holds or `timeout` passes.
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
                std::chrono::milliseconds step = 50ms);

// ---- files and processes ----

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

std::string read_file(const std::string& path);
void write_file_atomic(const std::string& path, const std::string& data);

struct CmdResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};
// Runs argv to completion (stdin from `input` when given).
CmdResult run(const std::vector<std::string>& argv, const std::string& input = "");

// A child process with stdout+stderr in a log file; SIGTERM then SIGKILL on
// destruction.
class Process {
 public:
  Process(std::vector<std::string> argv, std::string log_path);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  pid_t pid() const { return pid_; }
  bool alive();                // not exited yet (reaps if it has)
  std::optional<int> exit_code() const { return exit_code_; }
  bool wait_exit(std::chrono::milliseconds timeout);
  void stop();                 // SIGTERM, wait, SIGKILL
  void signal(int sig);
  std::string log() const;
  long rss_kb() const;         // VmRSS from /proc/<pid>/status, -1 if gone

 private:
  pid_t pid_ = -1;
  std::string log_path_;
  std::optional<int> exit_code_;
};

// ---- sockets ----

// A unique 127.A.B.0/24 for this test (A in 20..250), probed so that no other
// process holds its node ports.
std::string pick_loopback_prefix();

// RAII fd.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.release();
    }
    return *this;
  }
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// Blocking TCP connect from `src_ip` (empty: any) to ip:port; invalid Fd on error.
Fd tcp_connect(const std::string& src_ip, const std::string& ip, uint16_t port,
               std::chrono::milliseconds timeout = 5s);
Fd tcp_listen(const std::string& ip, uint16_t port, int backlog = 1024);
void set_recv_timeout(int fd, std::chrono::milliseconds t);
bool send_all(int fd, const void* data, size_t len);
// Reads exactly len bytes (false on EOF/timeout/error).
bool recv_exact(int fd, void* data, size_t len);
// Reads until EOF; nullopt on timeout/error.
std::optional<std::string> recv_to_eof(int fd, std::chrono::milliseconds timeout = 10s);
// True once the peer closed (EOF or reset) within `timeout`; data read is discarded.
bool wait_closed(int fd, std::chrono::milliseconds timeout);

// SOCKS5 CONNECT (no auth) to dst_ip:dst_port through proxy, from src_ip.
struct SocksResult {
  Fd fd;
  int reply = -1;  // SOCKS REP field; -1: connection closed before a reply
};
SocksResult socks_connect(const std::string& src_ip, const std::string& proxy_ip,
                          uint16_t proxy_port, const std::string& dst_ip, uint16_t dst_port);

// Echo server on its own thread (epoll): echoes everything, answers EOF with
// SHUT_WR once the echo is flushed. With a banner, sends it first on accept.
class EchoServer {
 public:
  EchoServer(const std::string& ip, uint16_t port, std::string banner = "");
  ~EchoServer();
  EchoServer(const EchoServer&) = delete;
  EchoServer& operator=(const EchoServer&) = delete;
  uint64_t accepted() const { return accepted_.load(); }
  size_t open_connections() const { return open_.load(); }

 private:
  void loop();
  Fd listen_fd_;
  int wake_[2] = {-1, -1};
  std::string banner_;
  std::atomic<uint64_t> accepted_{0};
  std::atomic<size_t> open_{0};
  std::thread thread_;
};

// Accepts connections and writes to each as fast as it can until the peer
// goes away; counts what the kernel took. For backpressure tests.
class Firehose {
 public:
  Firehose(const std::string& ip, uint16_t port);
  ~Firehose();
  uint64_t written() const { return written_.load(); }

 private:
  Fd listen_fd_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> written_{0};
  std::thread thread_;
};

// Waits until `counter()` stops changing for `quiet`; false if it still moves at `timeout`.
bool wait_stable(const std::function<uint64_t()>& counter, std::chrono::milliseconds quiet,
                 std::chrono::milliseconds timeout);

// ---- HTTP and metrics ----

struct HttpResponse {
  int status = 0;  // 0: no answer
  std::string body;
};
HttpResponse http_request(const std::string& method, const std::string& ip, uint16_t port,
                          const std::string& target);
inline HttpResponse http_get(const std::string& ip, uint16_t port, const std::string& target) {
  return http_request("GET", ip, port, target);
}

using Labels = std::map<std::string, std::string>;
struct Sample {
  std::string name;
  Labels labels;
  double value = 0;
};
std::vector<Sample> parse_metrics(const std::string& text);
// Sum over samples named `name` whose labels include every pair in `match`.
double metric_sum(const std::vector<Sample>& s, const std::string& name, const Labels& match = {});

// ---- dev CA ----

void dev_ca_init(const std::string& dir);
// Extra args appended to `warrenctl dev-ca issue --ca DIR -n NS -s SA --out OUT`.
void dev_ca_issue(const std::string& ca, const std::string& ns, const std::string& sa,
                  const std::string& out, const std::vector<std::string>& extra = {});
void dev_ca_issue_config(const std::string& ca, const std::string& config);

// ---- a two-node mesh ----

struct WorkloadSpec {
  std::string uid, name, ns = "default", sa, node;  // node: "node-a" or "node-b"
  std::string ip;
  std::string protocol = "HBONE";
  Labels labels;
};

struct NodeOpts {
  uint32_t connect_timeout_ms = 0;  // 0: default
  std::string log_level = "debug";
};

// Two warren-node processes (node-a at <prefix>.2, node-b at <prefix>.3) with
// one shared dev CA. Workload and service IPs are chosen by the test inside
// the prefix (ip(n) = <prefix>.n).
class Mesh {
 public:
  Mesh();
  ~Mesh();
  std::string ip(int last) const { return prefix_ + "." + std::to_string(last); }
  std::string node_ip(char n) const { return ip(n == 'a' ? 2 : 3); }
  const TempDir& dir() const { return dir_; }
  std::string ca() const { return dir_ / "ca"; }

  void add_workload(WorkloadSpec w);
  void add_service(const std::string& name, const std::string& vip, uint16_t port,
                   uint16_t target_port, std::vector<std::string> endpoint_uids);
  void add_policy(nlohmann::json policy) { policies_.push_back(std::move(policy)); }
  // Sets one field of a workload (by uid) or a service (by name).
  void set_workload_field(const std::string& uid, const std::string& key, nlohmann::json v);
  void set_service_field(const std::string& name, const std::string& key, nlohmann::json v);
  void clear_policies() { policies_.clear(); }
  nlohmann::json config_for(char n) const;
  std::string config_path(char n) const { return dir_ / std::string("node-") + n + ".json"; }
  std::string access_log(char n) const { return dir_ / std::string("access-") + n + ".log"; }
  // Writes both config files (atomic rename).
  void write_configs();
  void write_raw_config(char n, const std::string& text);
  // Writes configs, issues certificates, starts both nodes and waits until ready.
  void start(NodeOpts a = {}, NodeOpts b = {});
  Process& node(char n) { return n == 'a' ? *a_ : *b_; }
  // Applied config version from /config_dump (-1 when unreachable).
  long config_version(char n);
  // Rewrites configs and waits until both nodes applied the new version.
  void update_configs();
  std::vector<Sample> metrics(char n);
  std::string metrics_text(char n);
  SocksResult socks(const std::string& src_ip, const std::string& dst_ip, uint16_t port,
                    char via = 'a') {
    return socks_connect(src_ip, node_ip(via), 15080, dst_ip, port);
  }

 private:
  std::string prefix_;
  TempDir dir_;
  std::vector<nlohmann::json> workloads_, services_, policies_;
  std::unique_ptr<Process> a_, b_;
};

// ---- raw HBONE client (TLS 1.3 + HTTP/2 frames, HPACK via nghttp2) ----

struct TlsOpts {
  std::string cert, key, root;  // PEM files; empty cert: no client certificate
  bool tls12_only = false;
  std::string alpn = "h2";
};

class TlsClient {
 public:
  // Connects from src_ip to ip:port and handshakes. ok() is false on failure
  // (error() says why).
  TlsClient(const std::string& src_ip, const std::string& ip, uint16_t port, const TlsOpts& o);
  ~TlsClient();
  bool ok() const { return ok_; }
  const std::string& error() const { return err_; }
  bool write(const std::string& data);
  // Closes the socket with a TCP RST (SO_LINGER 0), without TLS close_notify.
  void reset_connection();
  // The server certificate's notAfter (unix seconds), -1 if none.
  long peer_not_after() const;
  // One read (up to 64 KiB) with timeout; empty optional on EOF/error/timeout.
  std::optional<std::string> read(std::chrono::milliseconds timeout);

 private:
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  Fd fd_;
  bool ok_ = false;
  std::string err_;
};

struct Frame {
  uint8_t type = 0, flags = 0;
  uint32_t sid = 0;
  std::string payload;
};
enum : uint8_t {
  kData = 0, kHeaders = 1, kRstStream = 3, kSettings = 4, kPing = 6, kGoaway = 7,
  kWindowUpdate = 8, kContinuation = 9
};
enum : uint8_t { kEndStream = 1, kAck = 1, kEndHeaders = 4 };

std::string frame(uint8_t type, uint8_t flags, uint32_t sid, const std::string& payload);

class H2Client {
 public:
  explicit H2Client(std::unique_ptr<TlsClient> tls);
  ~H2Client();
  bool ok() const { return tls_ && tls_->ok(); }
  TlsClient& tls() { return *tls_; }
  // Sends the preface and an empty SETTINGS.
  bool handshake();
  std::string encode(const std::vector<std::pair<std::string, std::string>>& headers);
  bool send(const std::string& bytes) { return tls_->write(bytes); }
  bool send_headers(uint32_t sid, const std::vector<std::pair<std::string, std::string>>& h,
                    bool end_stream = false);
  // Next frame (SETTINGS are acked automatically); nullopt on close/timeout.
  std::optional<Frame> next(std::chrono::milliseconds timeout = 5s);
  std::vector<std::pair<std::string, std::string>> decode(const std::string& block);
  // Waits for the response to `sid`: its :status, or -(RST code)-1000 when reset,
  // or -1 on GOAWAY/connection close/timeout.
  int response_status(uint32_t sid, std::chrono::milliseconds timeout = 5s);
  bool saw_goaway() const { return goaway_; }

 private:
  std::unique_ptr<TlsClient> tls_;
  std::string buf_;
  void* deflater_ = nullptr;
  void* inflater_ = nullptr;
  bool goaway_ = false;
};

// HBONE client for workload `sa` in `ns` (from the mesh's CA), from src_ip to dst_ip:15008.
std::unique_ptr<H2Client> hbone_client(const Mesh& m, const std::string& src_ip,
                                       const std::string& dst_ip, const std::string& ns,
                                       const std::string& sa);

}  // namespace warren::e2e
