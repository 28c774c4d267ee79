#include "warren/hbone_pool.h"

#include <spdlog/spdlog.h>

#include "warren/tls_context.h"

namespace warren::hbone {

Pool::Pool(PoolEnv& env, PoolMetrics m) : env_(env), m_(m), tick_(env.loop()) {
  tick_.start(1000, 1000, [this] { tick(); });
}

Pool::~Pool() { close_all(); }

Pool::Entry* Pool::find_slot(const PoolKey& key) {
  auto [b, e] = by_key_.equal_range(key);
  for (auto it = b; it != e; ++it) {
    Entry& en = conns_.at(it->second);
    H2Conn* c = en.conn.get();
    if (c->closed() || c->draining()) continue;
    uint32_t limit = kMaxStreams;
    if (c->ready()) limit = std::min(limit, c->peer_max_streams());
    if (c->active_streams() + en.waiters.size() < limit) return &en;
  }
  return nullptr;
}

uint64_t Pool::open(const PoolKey& key, Headers headers, StreamHandler* handler, OpenFn opened,
                    FailFn failed) {
  uint64_t ticket = next_ticket_++;
  Entry* en = find_slot(key);
  if (en && en->conn->ready()) {
    if (m_.reuses) m_.reuses->inc();
    int32_t sid = en->conn->submit_request(headers, handler, true);
    if (sid < 0) {
      failed("HTTP/2 submit failed: " + std::string(nghttp2_strerror(sid)));
      return 0;
    }
    en->idle_since = 0;
    update_gauges();
    opened(en->conn.get(), sid);
    return 0;
  }
  if (en) {
    if (m_.reuses) m_.reuses->inc();
    en->waiters.push_back({ticket, std::move(headers), handler, std::move(opened), std::move(failed)});
    return ticket;
  }
  // Dial a new connection from the source workload's address.
  auto ctx = env_.client_ctx(key.src_identity);
  if (!ctx.ok()) {
    failed("no certificate for " + key.src_identity + ": " + ctx.error().message);
    return 0;
  }
  net::DialOptions dial = env_.dial_options(key.src_ip);
  auto tcp = net::TcpConn::create_for(env_.loop(), key.dst, dial);
  if (!tcp.ok() && dial.netns_fd < 0) {
    // The source address may not be local (e.g. a test on a shared loopback): dial unbound.
    tcp = net::TcpConn::create_for(env_.loop(), key.dst, 0, std::nullopt);
  }
  if (!tcp.ok()) {
    failed(tcp.error().message);
    return 0;
  }
  auto conn = std::make_unique<H2Conn>(*tcp, *ctx, false, this);
  H2Conn* c = conn.get();
  Entry& e = conns_[c];
  e.key = key;
  e.conn = std::move(conn);
  e.waiters.push_back({ticket, std::move(headers), handler, std::move(opened), std::move(failed)});
  by_key_.emplace(key, c);
  if (m_.connects) m_.connects->inc();
  update_gauges();
  // The TCP connect completes asynchronously; H2Conn starts TLS once connected.
  struct ConnectWatch : net::TcpConn::Handler {
    Pool* pool;
    H2Conn* c;
    Timer timer;
    ConnectWatch(Pool* p, H2Conn* c, uv_loop_t* l) : pool(p), c(c), timer(l) {}
    void on_read(net::TcpConn*, const char*, size_t) override {}
    void on_eof(net::TcpConn*) override {}
    void on_error(net::TcpConn*, int) override {}
    void on_connect(net::TcpConn* t, int status) override {
      timer.stop();
      t->set_handler(c);
      if (status != 0)
        c->close(std::string("connect to ") + pool->conns_.at(c).key.dst.to_string() + ": " +
                 uv_strerror(status));
      else
        c->start();
      auto* self = this;
      defer(pool->env_.loop(), [self] { delete self; });
    }
  };
  auto* watch = new ConnectWatch(this, c, env_.loop());
  (*tcp)->set_handler(watch);
  int r = (*tcp)->connect(key.dst);
  if (r != 0) {
    (*tcp)->set_handler(c);
    delete watch;
    c->close(std::string("connect to ") + key.dst.to_string() + ": " + uv_strerror(r));
    return 0;
  }
  watch->timer.start(env_.connect_timeout_ms(), 0, [watch, c] {
    watch->c->tcp()->set_handler(c);
    c->close("connect timed out");
    auto* w = watch;
    defer(w->pool->env_.loop(), [w] { delete w; });
  });
  return ticket;
}

void Pool::cancel(uint64_t ticket) {
  if (!ticket) return;
  for (auto& [c, e] : conns_)
    for (auto it = e.waiters.begin(); it != e.waiters.end(); ++it)
      if (it->ticket == ticket) {
        e.waiters.erase(it);
        return;
      }
}

void Pool::on_ready(H2Conn* c) {
  Entry& e = conns_.at(c);
  // The server must prove the identity we expect for the destination.
  if (!tls::check_peer_identity(c->tls().ssl(), e.key.dst_identity)) {
    auto got = tls::peer_spiffe_id(c->tls().ssl());
    c->close("server identity mismatch: expected " + e.key.dst_identity + ", got " +
             (got.ok() ? *got : got.error().message));
    return;
  }
  auto waiters = std::move(e.waiters);
  e.waiters.clear();
  for (auto& w : waiters) {
    int32_t sid = c->submit_request(w.headers, w.handler, true);
    if (sid < 0)
      w.failed("HTTP/2 submit failed: " + std::string(nghttp2_strerror(sid)));
    else
      w.opened(c, sid);
    if (c->closed()) return;
  }
  update_gauges();
}

void Pool::on_conn_close(H2Conn* c, const std::string& reason) {
  auto it = conns_.find(c);
  if (it == conns_.end()) return;
  auto waiters = std::move(it->second.waiters);
  auto [b, e] = by_key_.equal_range(it->second.key);
  for (auto k = b; k != e; ++k)
    if (k->second == c) {
      by_key_.erase(k);
      break;
    }
  spdlog::debug("hbone pool: connection to {} closed: {}", it->second.key.dst.to_string(), reason);
  // The H2Conn may still be on the stack: destroy it on the next loop turn.
  auto owned = std::make_shared<std::unique_ptr<H2Conn>>(std::move(it->second.conn));
  conns_.erase(it);
  defer(env_.loop(), [owned] { owned->reset(); });
  for (auto& w : waiters) w.failed(reason);
  update_gauges();
}

void Pool::on_stream_count(H2Conn* c) {
  auto it = conns_.find(c);
  if (it == conns_.end()) return;
  if (c->active_streams() == 0 && it->second.waiters.empty())
    it->second.idle_since = uv_now(env_.loop());
  update_gauges();
}

void Pool::tick() {
  uint64_t now = uv_now(env_.loop());
  std::vector<std::pair<H2Conn*, std::string>> to_close;
  for (auto& [c, e] : conns_) {
    if (!c->ready()) continue;
    if (c->active_streams() == 0 && e.waiters.empty()) {
      if (e.idle_since && now - e.idle_since >= kIdleMs) to_close.push_back({c, "idle"});
      continue;
    }
    if (c->ping_outstanding) {
      if (now - e.ping_sent >= kPingTimeoutMs) to_close.push_back({c, "keepalive ping timed out"});
    } else if (now - c->last_activity_ms >= kPingEveryMs) {
      e.ping_sent = now;
      c->ping();
    }
  }
  for (auto& [c, why] : to_close) {
    c->goaway();
    c->close(why);
  }
}

void Pool::update_gauges() {
  size_t streams = 0;
  for (auto& [c, e] : conns_) streams += c->active_streams();
  if (m_.connections) m_.connections->set(static_cast<int64_t>(conns_.size()));
  if (m_.streams) m_.streams->set(static_cast<int64_t>(streams));
}

void Pool::close_all() {
  std::vector<H2Conn*> all;
  for (auto& [c, e] : conns_) all.push_back(c);
  for (auto* c : all) c->close("shutting down");
}

}  // namespace warren::hbone
