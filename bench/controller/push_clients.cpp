// warren-push-bench: N push clients in one process, on one libuv loop, each
// authenticating as a different node (node-<first>..node-<first+N-1>), for
// the controller scale benchmark (bench/controller/run.py, issue 4).
//
// Modes:
//   node  warren::push::ControllerClient, the client warren-node runs: it
//         parses every message into nlohmann::json and hands the resources to
//         a callback. The callback here only stores them (--store json: the
//         bodies as received; --store ids: the ids, the bodies dropped) and
//         the client acks at once. These clients do NOT build warren-node's
//         config::Snapshot: their ack means "received, parsed and stored".
//         Built against a ControllerClient with set_update_fn() (delta mode)
//         it uses that; otherwise the ApplyFn interface, in which the client
//         itself keeps (and, per delta, copies) the accepted map.
//   lite  the same transport (TCP, TLS 1.3, HTTP/2, length-framed messages)
//         without JSON: each message's version is read from its first bytes
//         and acked when the message is complete. Isolates the controller's
//         fan-out from the clients' parsing.
//
// Every client timestamps, per message, when its last byte arrived and when
// its ack was handed to HTTP/2 (CLOCK_REALTIME, µs). Output, one JSON object
// per line on stdout:
//   {"ev":"version","v":V,"type":"snapshot|delta","n":N,"bytes":B,
//    "recv_first":T,"recv_last":T,"ack_first":T,"ack_last":T}
//        once all N clients acked version V
//   {"ev":"synced","n":N,"t":T,"first_ack_last":T,...}
//        once every client acked its first message
//   {"ev":"status",...}   every --status-ms (connected, synced, disconnects)
//   {"ev":"partial",...}  at exit, for versions not every client acked
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <malloc.h>
#include <sys/resource.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "warren/controller_client.h"
#include "warren/certs.h"
#include "warren/defer.h"
#include "warren/h2_conn.h"
#include "warren/log.h"
#include "warren/push_proto.h"
#include "warren/tcp.h"
#include "warren/tls_context.h"

namespace {

using warren::SockAddr;
namespace h2 = warren::h2;
namespace push = warren::push;
using nlohmann::json;

int64_t now_us() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

long status_kb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  size_t n = strlen(key);
  while (std::getline(f, line))
    if (line.compare(0, n, key) == 0 && line.size() > n && line[n] == ':')
      return std::atol(line.c_str() + n + 1);
  return -1;
}

// Message boundaries in the stream (4-byte big-endian length + JSON), with
// the first bytes of each message kept to read its type and version. Never
// buffers a body.
class FrameTracker {
 public:
  struct Msg {
    uint64_t version = 0;
    bool snapshot = false;
    size_t bytes = 0;
  };
  void feed(const uint8_t* d, size_t n, std::vector<Msg>* out) {
    while (n) {
      if (hdr_ < 4) {
        len_ = len_ << 8 | *d++;
        --n;
        if (++hdr_ == 4) {
          left_ = len_;
          prefix_.clear();
          if (!left_) done(out);
        }
        continue;
      }
      size_t take = std::min(n, left_);
      if (prefix_.size() < kPrefix)
        prefix_.append(reinterpret_cast<const char*>(d), std::min(take, kPrefix - prefix_.size()));
      d += take;
      n -= take;
      left_ -= take;
      if (!left_) done(out);
    }
  }

 private:
  static constexpr size_t kPrefix = 192;
  void done(std::vector<Msg>* out) {
    Msg m;
    m.bytes = len_;
    m.snapshot = prefix_.find(R"("type":"snapshot")") != std::string::npos;
    auto p = prefix_.find(R"("version":)");
    if (p != std::string::npos) m.version = std::strtoull(prefix_.c_str() + p + 10, nullptr, 10);
    out->push_back(m);
    hdr_ = 0;
    len_ = 0;
  }
  uint32_t hdr_ = 0;
  uint32_t len_ = 0;
  size_t left_ = 0;
  std::string prefix_;
};

struct Bench;

// What every client reports, whatever its kind.
struct Probe {
  Bench* bench = nullptr;
  int index = 0;
  bool synced = false;  // acked its first message
  FrameTracker tracker;
  std::vector<FrameTracker::Msg> msgs;
  void before_data(const uint8_t* d, size_t n) {
    msgs.clear();
    tracker.feed(d, n, &msgs);
    t_recv = now_us();
  }
  void after_data();  // the acks for `msgs` were handed to HTTP/2
  int64_t t_recv = 0;
};

struct Agg {
  bool snapshot = false;
  size_t bytes = 0;
  int n = 0;
  int64_t recv_first = INT64_MAX, recv_last = 0, ack_first = INT64_MAX, ack_last = 0;
};

struct Options {
  std::string controller, token_file, ca_file, mode = "node", store = "json";
  int clients = 100, first = 0, wave = 0, status_ms = 5000;
  long max_rss_mb = 0;  // no new wave once RSS would pass this (0: no limit)
  uint32_t connect_timeout_ms = 120000;
};

struct Bench {
  uv_loop_t* loop = nullptr;
  Options o;
  std::vector<std::unique_ptr<struct ClientBase>> clients;
  std::vector<std::unique_ptr<Probe>> probes;
  std::map<uint64_t, Agg> agg;
  int started = 0, synced = 0, disconnects = 0, connected = 0;
  int target = 0;       // clients that will run: o.clients, or fewer once capped
  bool capped = false;
  int64_t t_start = 0, first_ack_min = INT64_MAX, first_ack_max = 0;
  bool synced_printed = false;
  void start_wave();
  void on_ack(Probe& p, const FrameTracker::Msg& m, int64_t recv, int64_t ack);
  void status();
  void partials();
};

struct ClientBase {
  virtual ~ClientBase() = default;
  virtual void start() = 0;
  virtual void stop() = 0;
};

void Probe::after_data() {
  if (msgs.empty()) return;
  int64_t t = now_us();
  for (const auto& m : msgs) bench->on_ack(*this, m, t_recv, t);
}

void Bench::on_ack(Probe& p, const FrameTracker::Msg& m, int64_t recv, int64_t ack) {
  auto& a = agg[m.version];
  a.snapshot = a.snapshot || m.snapshot;
  a.bytes = std::max(a.bytes, m.bytes);
  a.n++;
  a.recv_first = std::min(a.recv_first, recv);
  a.recv_last = std::max(a.recv_last, recv);
  a.ack_first = std::min(a.ack_first, ack);
  a.ack_last = std::max(a.ack_last, ack);
  if (a.n == target) {
    std::printf(R"({"ev":"version","v":%llu,"type":"%s","n":%d,"bytes":%zu,"recv_first":%lld,)"
                R"("recv_last":%lld,"ack_first":%lld,"ack_last":%lld,"rss_kb":%ld})"
                "\n",
                (unsigned long long)m.version, a.snapshot ? "snapshot" : "delta", a.n, a.bytes,
                (long long)a.recv_first, (long long)a.recv_last, (long long)a.ack_first,
                (long long)a.ack_last, status_kb("VmRSS"));
    std::fflush(stdout);
    agg.erase(m.version);
  }
  if (!p.synced) {
    p.synced = true;
    ++synced;
    first_ack_min = std::min(first_ack_min, ack);
    first_ack_max = std::max(first_ack_max, ack);
    if (synced == started) start_wave();
    if (synced == target && !synced_printed) {
      synced_printed = true;
      malloc_trim(0);
      std::printf(R"({"ev":"synced","n":%d,"t_start":%lld,"first_ack_first":%lld,"first_ack_last":%lld,)"
                  R"("rss_kb":%ld,"hwm_kb":%ld,"disconnects":%d,"capped":%s})"
                  "\n",
                  synced, (long long)t_start, (long long)first_ack_min, (long long)first_ack_max,
                  status_kb("VmRSS"), status_kb("VmHWM"), disconnects, capped ? "true" : "false");
      std::fflush(stdout);
    }
  }
}

void Bench::status() {
  std::printf(R"({"ev":"status","t":%lld,"started":%d,"connected":%d,"synced":%d,"disconnects":%d,)"
              R"("rss_kb":%ld,"hwm_kb":%ld})"
              "\n",
              (long long)now_us(), started, connected, synced, disconnects, status_kb("VmRSS"),
              status_kb("VmHWM"));
  std::fflush(stdout);
}

void Bench::partials() {
  for (const auto& [v, a] : agg)
    std::printf(R"({"ev":"partial","v":%llu,"type":"%s","n":%d,"recv_first":%lld,"recv_last":%lld,)"
                R"("ack_first":%lld,"ack_last":%lld})"
                "\n",
                (unsigned long long)v, a.snapshot ? "snapshot" : "delta", a.n,
                (long long)a.recv_first, (long long)a.recv_last, (long long)a.ack_first,
                (long long)a.ack_last);
  std::fflush(stdout);
}

// ---- node mode: warren::push::ControllerClient --------------------------------------------

class NodeClient : public push::ControllerClient, public ClientBase {
 public:
  NodeClient(uv_loop_t* loop, push::ControllerClientOptions o, Probe* p, bool keep_bodies)
      : push::ControllerClient(loop, std::move(o),
                               [this](push::ResourceMap& c, const std::vector<std::string>& ch) {
                                 return apply(c, ch);
                               }),
        probe_(p),
        keep_(keep_bodies) {
    install(*this);
    on_connection = [this](bool up) {
      probe_->bench->connected += up ? 1 : -1;
      if (!up) probe_->bench->disconnects++;
    };
  }
  void start() override { push::ControllerClient::start(); }
  void stop() override { push::ControllerClient::stop(); }

  void on_data(h2::H2Conn* c, int32_t sid, const uint8_t* d, size_t n) override {
    probe_->before_data(d, n);
    push::ControllerClient::on_data(c, sid, d, n);  // parses, calls back, acks
    probe_->after_data();
  }

 private:
  // ApplyFn interface: the client keeps `candidate` as what it accepted.
  std::map<std::string, std::string> apply(push::ResourceMap& candidate,
                                           const std::vector<std::string>& changed) {
    if (!keep_)
      for (const auto& id : changed)
        if (auto it = candidate.find(id); it != candidate.end()) it->second = json();
    return {};
  }

  // Delta interface (when the client has one): we keep what we are given.
  template <class C>
  void install(C& c) {
    if constexpr (requires { typename C::UpdateFn; }) {
      c.set_update_fn([this](auto&& u) {
        ++msgs_;
        if (u.snapshot) {
          bodies_.clear();
          ids_.clear();
        }
        for (const auto& id : u.removes) {
          bodies_.erase(id);
          ids_.erase(id);
        }
        for (auto& [id, body] : u.upserts) {
          if (keep_)
            bodies_[id] = std::move(body);
          else
            ids_[id] = msgs_;
        }
        return std::map<std::string, std::string>{};
      });
    }
  }

  Probe* probe_;
  bool keep_;
  uint64_t msgs_ = 0;
  std::map<std::string, json> bodies_;
  std::map<std::string, uint64_t> ids_;
};

// ---- lite mode: transport only ------------------------------------------------------------

class LiteClient : public h2::H2Conn::Owner, public h2::StreamHandler, public ClientBase {
 public:
  LiteClient(uv_loop_t* loop, SockAddr addr, std::string node, std::string token, SSL_CTX* ctx,
             Probe* p)
      : loop_(loop), addr_(addr), node_(std::move(node)), token_(std::move(token)), ctx_(ctx),
        probe_(p), retry_(loop) {}
  ~LiteClient() override { stop(); }

  void start() override {
    stopped_ = false;
    connect();
  }
  void stop() override {
    stopped_ = true;
    retry_.stop();
    if (conn_) conn_->close("stopping");
  }

  struct Watch : warren::net::TcpConn::Handler {
    LiteClient* lc;
    void on_read(warren::net::TcpConn*, const char*, size_t) override {}
    void on_eof(warren::net::TcpConn*) override {}
    void on_error(warren::net::TcpConn*, int) override {}
    void on_connect(warren::net::TcpConn* t, int status) override {
      h2::H2Conn* c = lc->conn_.get();
      t->set_handler(c);
      if (status != 0)
        c->close(std::string("connect: ") + uv_strerror(status));
      else
        c->start();
    }
  };

  void connect() {
    if (stopped_ || conn_) return;
    auto tcp = warren::net::TcpConn::create_for(loop_, addr_, 0, std::nullopt);
    if (!tcp) return reconnect(tcp.error().message);
    (*tcp)->set_nodelay(true);
    conn_ = std::make_unique<h2::H2Conn>(*tcp, ctx_, false, this);
    watch_.lc = this;
    (*tcp)->set_handler(&watch_);
    if (int r = (*tcp)->connect(addr_); r != 0) {
      (*tcp)->set_handler(conn_.get());
      conn_->close(std::string("connect: ") + uv_strerror(r));
    }
  }
  void reconnect(const std::string& why) {
    if (stopped_) return;
    spdlog::warn("{}: {}; reconnecting in 1 s", node_, why);
    retry_.start(1000, 0, [this] { connect(); });
  }

  void on_ready(h2::H2Conn* c) override {
    h2::Headers h = {{":method", "POST"},
                     {":scheme", "https"},
                     {":authority", addr_.to_string()},
                     {":path", warren::push::kStreamPath},
                     {"authorization", "Bearer " + token_},
                     {"x-warren-node", node_},
                     {"content-type", "application/x-warren-push"}};
    if (!epoch_.empty()) {
      h.push_back({"x-warren-epoch", epoch_});
      h.push_back({"x-warren-version", std::to_string(version_)});
    }
    probe_->tracker = FrameTracker();
    sid_ = c->submit_request(h, this, true);
    if (sid_ < 0) c->close("submit failed");
  }
  void on_conn_close(h2::H2Conn*, const std::string& reason) override {
    if (open_) {
      probe_->bench->connected--;
      probe_->bench->disconnects++;
    }
    open_ = false;
    sid_ = -1;
    auto owned = std::make_shared<std::unique_ptr<h2::H2Conn>>(std::move(conn_));
    warren::defer(loop_, [owned] { owned->reset(); });
    reconnect(reason.empty() ? "closed" : reason);
  }
  void on_headers(h2::H2Conn*, int32_t, h2::Headers&& h, bool) override {
    if (const auto* s = h2::find_header(h, ":status"); s && *s == "200") {
      open_ = true;
      probe_->bench->connected++;
    }
  }
  void on_data(h2::H2Conn* c, int32_t sid, const uint8_t* d, size_t n) override {
    c->consume(sid, n);
    if (!open_) return;
    probe_->before_data(d, n);
    for (const auto& m : probe_->msgs) {
      if (m.snapshot || m.version > version_) version_ = m.version;
      std::string s;
      warren::push::append_frame(&s, R"({"type":"ack","version":)" + std::to_string(m.version) + "}");
      c->send_data(sid_, s.data(), s.size());
    }
    probe_->after_data();
  }
  void on_end_stream(h2::H2Conn* c, int32_t) override { c->close("controller ended the stream"); }
  void on_stream_close(h2::H2Conn* c, int32_t, uint32_t code) override {
    if (!c->closed()) c->close("stream closed " + std::to_string(code));
  }

 private:
  uv_loop_t* loop_;
  SockAddr addr_;
  std::string node_, token_, epoch_;
  SSL_CTX* ctx_;
  Probe* probe_;
  warren::Timer retry_;
  std::unique_ptr<h2::H2Conn> conn_;
  Watch watch_;
  int32_t sid_ = -1;
  bool open_ = false, stopped_ = false;
  uint64_t version_ = 0;
};

warren::tls::SslCtxPtr g_lite_ctx;
std::string g_token;

void Bench::start_wave() {
  int n = o.wave > 0 ? std::min(o.wave, o.clients - started) : o.clients - started;
  if (n > 0 && started > 0 && o.max_rss_mb > 0) {
    // What a client holds once synced, from those so far (after returning
    // the parser's garbage), and what a wave in flight adds on top.
    malloc_trim(0);
    double rss = status_kb("VmRSS") / 1024.0, hwm = status_kb("VmHWM") / 1024.0;
    double per = rss / started, transient = std::max(0.0, hwm - rss);
    int fit = int((o.max_rss_mb - rss - transient) / std::max(per, 0.01));
    if (fit < n) {
      n = std::max(0, fit);
      capped = true;
      target = started + n;
      std::printf(R"({"ev":"capped","started":%d,"adding":%d,"rss_mb":%.0f,"per_client_mb":%.2f,)"
                  R"("transient_mb":%.0f,"max_rss_mb":%ld})"
                  "\n",
                  started, n, rss, per, transient, o.max_rss_mb);
      std::fflush(stdout);
    }
  }
  for (int i = 0; i < n; ++i) clients[started + i]->start();
  started += n;
}

Bench* g_bench;
uv_signal_t g_term, g_int;
warren::Timer* g_status;

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"warren-push-bench: N warren push clients in one process (bench/controller)"};
  Options o;
  app.add_option("--controller", o.controller, "Push server IP:port")->required();
  app.add_option("--token-file", o.token_file, "Bootstrap token (one valid for any node)")->required();
  app.add_option("--ca", o.ca_file, "The controller's root-cert.pem")->required();
  app.add_option("--clients", o.clients)->capture_default_str();
  app.add_option("--first", o.first, "Index of the first node name (node-<first>)")->capture_default_str();
  app.add_option("--mode", o.mode, "node (ControllerClient) or lite (transport only)")
      ->check(CLI::IsMember({"node", "lite"}))
      ->capture_default_str();
  app.add_option("--store", o.store, "node mode: keep the bodies (json) or only the ids (ids)")
      ->check(CLI::IsMember({"json", "ids"}))
      ->capture_default_str();
  app.add_option("--wave", o.wave,
                 "Start clients in waves of this many, the next once the last acked its first "
                 "message (0: all at once)")
      ->capture_default_str();
  app.add_option("--status-ms", o.status_ms)->capture_default_str();
  app.add_option("--max-rss-mb", o.max_rss_mb,
                 "Start no further wave once this process would pass this RSS (estimated from the "
                 "clients so far); the run then goes on with the clients it has (0: no limit)")
      ->capture_default_str();
  std::string level = "warn";
  app.add_option("--log-level", level)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  warren::log::init(level);
  std::signal(SIGPIPE, SIG_IGN);
  auto addr = SockAddr::parse(o.controller);
  if (!addr) {
    std::fprintf(stderr, "--controller takes IP:port\n");
    return 2;
  }
  {
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  uv_loop_t* loop = uv_default_loop();
  Bench b;
  b.loop = loop;
  b.o = o;
  g_bench = &b;
  if (o.mode == "lite") {
    auto roots = warren::certs::read_certs_file(o.ca_file);
    if (!roots) {
      std::fprintf(stderr, "%s: %s\n", o.ca_file.c_str(), roots.error().message.c_str());
      return 1;
    }
    std::vector<X509*> ptrs;
    for (auto& r : *roots) ptrs.push_back(r.get());
    auto ctx = warren::tls::make_push_client_ctx(ptrs);
    if (!ctx) return 1;
    g_lite_ctx = std::move(*ctx);
    std::ifstream f(o.token_file);
    std::getline(f, g_token);
    while (!g_token.empty() && (g_token.back() == ' ' || g_token.back() == '\r')) g_token.pop_back();
  }
  for (int i = 0; i < o.clients; ++i) {
    auto p = std::make_unique<Probe>();
    p->bench = &b;
    p->index = i;
    std::string name = "node-" + std::to_string(o.first + i);
    if (o.mode == "lite") {
      b.clients.push_back(
          std::make_unique<LiteClient>(loop, *addr, name, g_token, g_lite_ctx.get(), p.get()));
    } else {
      push::ControllerClientOptions co;
      co.address = *addr;
      co.node = name;
      co.token_file = o.token_file;
      co.ca_file = o.ca_file;
      co.connect_timeout_ms = o.connect_timeout_ms;
      co.backoff_min_ms = 500;
      b.clients.push_back(std::make_unique<NodeClient>(loop, co, p.get(), o.store == "json"));
    }
    b.probes.push_back(std::move(p));
  }
  b.target = o.clients;
  b.t_start = now_us();
  b.start_wave();
  warren::Timer status(loop);
  g_status = &status;
  status.start(o.status_ms, o.status_ms, [&b] { b.status(); });
  for (auto* s : {&g_term, &g_int}) {
    uv_signal_init(loop, s);
    uv_signal_start(
        s,
        [](uv_signal_t*, int) {
          g_bench->status();
          g_bench->partials();
          g_status->stop();
          for (auto& c : g_bench->clients) c->stop();
          for (auto* h : {&g_term, &g_int})
            if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(h)))
              uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
          uv_stop(g_bench->loop);
        },
        s == &g_term ? SIGTERM : SIGINT);
  }
  uv_run(loop, UV_RUN_DEFAULT);
  std::fflush(stdout);
  // Skip the destructors of a few hundred MB of JSON per client.
  std::_Exit(0);
}
