#include "upstream_h2.h"

#include <spdlog/spdlog.h>

#include "h2_message.h"
#include "proxy.h"
#include "resilience.h"
#include "warren/defer.h"

namespace warren::waypoint {
namespace {
// The inner connection's windows: a stream may have this much response in
// flight before the waypoint acknowledges it.
h2::H2Limits inner_limits() {
  h2::H2Limits l;
  l.stream_window = 1 << 20;
  l.conn_window = 8 << 20;
  l.max_frame = 16384;
  return l;
}
constexpr uint32_t kMaxStreamsPerConn = 100;
constexpr uint64_t kExtraIdleMs = 1000;
}  // namespace

// ---- one request ----

H2UpstreamStream::H2UpstreamStream(Proxy& p, Session* owner, h2::Headers head, bool with_body)
    : p_(p), owner_(owner), head_(std::move(head)), with_body_(with_body) {}

void H2UpstreamStream::attach(h2::H2Conn* inner) {
  if (dying_) return;
  int32_t sid = inner->submit_request(head_, this, with_body_);
  if (sid < 0) return fail(UpFailure::kRefused, "upstream connection refused a new stream");
  inner_ = inner;
  sid_ = sid;
  head_.clear();
  if (!pending_.empty()) {
    std::string d = std::move(pending_);
    pending_.clear();
    inner_->send_data(sid_, d.data(), d.size());
  }
  if (end_pending_) {
    end_pending_ = false;
    ended_ = true;
    if (trailers_.empty())
      inner_->end_stream(sid_);
    else
      inner_->end_stream_with_trailers(sid_, std::move(trailers_));
  }
}

void H2UpstreamStream::send(std::string_view data) {
  if (data.empty() || dying_ || ended_ || end_pending_ || !with_body_) return;
  if (!inner_) {
    pending_.append(data);
    return;
  }
  inner_->send_data(sid_, data.data(), data.size());
}

void H2UpstreamStream::end() {
  end_with_trailers({});
}

void H2UpstreamStream::end_with_trailers(const Headers& trailers) {
  if (dying_ || ended_ || end_pending_ || !with_body_) return;
  trailers_ = h2_fields(trailers);
  if (!inner_) {
    end_pending_ = true;
    return;
  }
  ended_ = true;
  if (trailers_.empty())
    inner_->end_stream(sid_);
  else
    inner_->end_stream_with_trailers(sid_, std::move(trailers_));
}

size_t H2UpstreamStream::buffered() const {
  return pending_.size() + (inner_ && !dying_ ? inner_->buffered(sid_) : 0);
}

void H2UpstreamStream::resume() {
  if (inner_ && !dying_ && unacked_ && (!owner_ || !owner_->downstream_full())) {
    size_t n = unacked_;
    unacked_ = 0;
    inner_->consume(sid_, n);
  }
}

void H2UpstreamStream::abandon() {
  owner_ = nullptr;
  if (dying_) return;
  if (inner_) {
    // Detached first: the reset may close the stream at once, and no callback
    // must come back. A finished exchange needs no reset.
    h2::H2Conn* in = inner_;
    inner_ = nullptr;
    in->detach(sid_);
    if (!(complete_ && (ended_ || !with_body_))) in->reset_stream(sid_, NGHTTP2_CANCEL);
  }
  die();
}

void H2UpstreamStream::conn_failed(UpFailure f, const std::string& why) {
  conn_ = nullptr;  // the connection is going; do not call back into it
  fail(f, why);
}

void H2UpstreamStream::fail(UpFailure f, const std::string& why) {
  if (dying_) return;
  if (inner_) {
    h2::H2Conn* in = inner_;
    inner_ = nullptr;
    in->detach(sid_);
    in->reset_stream(sid_, NGHTTP2_CANCEL);
  }
  Session* o = owner_;
  owner_ = nullptr;
  die();
  if (o) o->up_failed(this, f, why);
}

void H2UpstreamStream::die() {
  if (dying_) return;
  dying_ = true;
  if (waiting_) p_.h2_upstreams().unwait(this);
  owner_ = nullptr;
  inner_ = nullptr;
  if (conn_) conn_->remove(this);
  conn_ = nullptr;
  H2UpstreamStream* self = this;
  defer(p_.loop(), [self] { delete self; });
}

void H2UpstreamStream::on_headers(h2::H2Conn*, int32_t, h2::Headers&& h, bool end_stream) {
  if (dying_) return;
  auto head = response_head_from_h2(h, end_stream);
  if (!head.ok()) return fail(UpFailure::kReset, "invalid response: " + head.error().message);
  if (head->status < 200) return;  // interim (100 Continue, 103 Early Hints)
  if (owner_) owner_->up_response_head(this, *head);
}

void H2UpstreamStream::on_data(h2::H2Conn* c, int32_t sid, const uint8_t* data, size_t len) {
  if (dying_) return;
  if (owner_)
    owner_->up_response_body(this, std::string_view(reinterpret_cast<const char*>(data), len));
  if (dying_) return;
  if (owner_ && owner_->downstream_full())
    unacked_ += len;
  else
    c->consume(sid, len);
}

void H2UpstreamStream::on_trailers(h2::H2Conn*, int32_t, h2::Headers&& h) {
  if (dying_) return;
  auto t = trailers_from_h2(h);
  if (!t.ok()) return fail(UpFailure::kReset, "invalid trailers: " + t.error().message);
  if (owner_) owner_->up_response_trailers(this, *t);
}

void H2UpstreamStream::on_end_stream(h2::H2Conn*, int32_t) {
  if (dying_) return;
  complete_ = true;
  if (owner_) owner_->up_response_complete(this);
}

void H2UpstreamStream::on_stream_close(h2::H2Conn*, int32_t, uint32_t code) {
  if (dying_) return;
  inner_ = nullptr;  // the stream is gone: nothing to reset or detach
  Session* o = complete_ ? nullptr : owner_;
  owner_ = nullptr;
  die();
  if (o)
    o->up_failed(this, code == NGHTTP2_REFUSED_STREAM ? UpFailure::kRefused : UpFailure::kReset,
                 "upstream stream reset (code " + std::to_string(code) + ")");
}

void H2UpstreamStream::on_send_drain(h2::H2Conn*, int32_t) {
  if (owner_) owner_->up_drained(this);
}

// ---- one connection ----

H2UpstreamConn::H2UpstreamConn(Proxy& p, H2UpstreamPool& pool, hbone::PoolKey key,
                               std::string authority, std::string forwarded_for,
                               std::shared_ptr<CircuitBreaker> cb)
    : p_(p),
      pool_(pool),
      key_(std::move(key)),
      authority_(std::move(authority)),
      forwarded_(std::move(forwarded_for)),
      cb_(std::move(cb)),
      idle_timer_(p.loop()) {
  pool_key_ = authority_ + "|" + key_.dst_identity;
}

H2UpstreamConn::~H2UpstreamConn() {
  if (cb_) cb_->release_connection();
}

void H2UpstreamConn::open() {
  h2::Headers h = {{":method", "CONNECT"}, {":authority", authority_}};
  if (!forwarded_.empty()) h.push_back({"forwarded", "for=\"" + forwarded_ + "\""});
  H2UpstreamConn* self = this;
  uint64_t t = p_.pool().open(
      key_, std::move(h), this,
      [self](h2::H2Conn* c, int32_t sid) {
        self->ticket_ = 0;
        self->hbone_ = c;
        self->hsid_ = sid;
        self->state_ = State::kConnecting;
      },
      [self](const std::string& why) {
        self->ticket_ = 0;  // may come from inside open(): report on the next turn
        defer(self->p_.loop(), [self, why] { self->close("connect: " + why); });
      });
  if (state_ == State::kOpening) ticket_ = t;
}

bool H2UpstreamConn::accepts() const {
  if (dead_ || state_ == State::kDone) return false;
  if (inner_ && (inner_->closed() || inner_->draining())) return false;
  uint32_t limit = kMaxStreamsPerConn;
  if (inner_ && inner_->ready()) limit = std::min(limit, inner_->peer_max_streams());
  if (streams_.size() >= limit || requests_ >= kDefaultMaxRequestsPerConnection) return false;
  return !cb_ || cb_->connection_reusable(requests_);
}

void H2UpstreamConn::add(H2UpstreamStream* s) {
  idle_timer_.stop();
  streams_.insert(s);
  ++requests_;
  s->conn_ = this;
  if (state_ == State::kOpen && inner_ && inner_->ready()) s->attach(inner_.get());
}

void H2UpstreamConn::remove(H2UpstreamStream* s) {
  streams_.erase(s);
  pool_.wake();  // room for a waiting request, perhaps
  if (streams_.empty() && !dead_) {
    H2UpstreamConn* self = this;
    // Not from inside the stream's callbacks: the pool may close us. (Deferred
    // jobs run in order, so a delete queued by close() comes after this.)
    defer(p_.loop(), [self] {
      if (self->streams_.empty() && !self->dead_) self->pool_.idle(self);
    });
  }
}

void H2UpstreamConn::on_headers(h2::H2Conn*, int32_t, h2::Headers&& h, bool end_stream) {
  if (state_ != State::kConnecting) return;
  const std::string* st = h2::find_header(h, ":status");
  if (!st || *st != "200" || end_stream) {
    fail_all(UpFailure::kRefused,
             "CONNECT to " + authority_ + " answered " + (st ? *st : std::string("?")));
    return close("CONNECT refused");
  }
  state_ = State::kOpen;
  inner_ = std::make_unique<h2::H2Conn>(nullptr, nullptr, /*server=*/false, this, inner_limits());
  inner_->set_output(this);
  inner_->start();  // cleartext: on_ready comes at once
}

void H2UpstreamConn::on_ready(h2::H2Conn* c) {
  std::vector<H2UpstreamStream*> waiting(streams_.begin(), streams_.end());
  for (auto* s : waiting)
    if (!dead_ && streams_.count(s) && !s->inner_) s->attach(c);
}

void H2UpstreamConn::on_data(h2::H2Conn*, int32_t, const uint8_t* data, size_t len) {
  if (state_ != State::kOpen || !inner_) {
    if (hbone_) hbone_->consume(hsid_, len);
    return;
  }
  held_.append(reinterpret_cast<const char*>(data), len);
  feed();
}

void H2UpstreamConn::feed() {
  while (!held_.empty() && inner_ && !inner_->closed() && !dead_) {
    size_t n = inner_->receive(held_.data(), held_.size());
    if (n == 0) break;
    held_.erase(0, n);
    if (hbone_ && !dead_) hbone_->consume(hsid_, n);
  }
}

void H2UpstreamConn::on_end_stream(h2::H2Conn*, int32_t) {
  close("upstream ended the tunnel");
}

void H2UpstreamConn::on_stream_close(h2::H2Conn*, int32_t, uint32_t code) {
  hbone_ = nullptr;  // the HBONE stream is gone
  close("tunnel closed (code " + std::to_string(code) + ")");
}

void H2UpstreamConn::on_send_drain(h2::H2Conn*, int32_t) {
  if (inner_ && !dead_) inner_->output_drained();
  feed();
}

void H2UpstreamConn::write(std::string&& data) {
  if (hbone_ && !dead_) hbone_->send_data(hsid_, data.data(), data.size());
}

size_t H2UpstreamConn::queued() const {
  return hbone_ ? hbone_->buffered(hsid_) : 0;
}

void H2UpstreamConn::on_stream_count(h2::H2Conn*) {}

void H2UpstreamConn::on_conn_close(h2::H2Conn*, const std::string& reason) {
  // Every submitted stream got on_stream_close already; the rest never started.
  fail_all(UpFailure::kConnect, "upstream HTTP/2 connection closed: " + reason);
  close(reason);
}

void H2UpstreamConn::fail_all(UpFailure f, const std::string& why) {
  auto streams = std::move(streams_);
  streams_.clear();
  for (auto* s : streams) s->conn_failed(s->inner_ ? UpFailure::kReset : f, why);
}

void H2UpstreamConn::close(const std::string& why) {
  if (dead_) return;
  dead_ = true;
  spdlog::debug("waypoint: HTTP/2 upstream {} closed: {}", authority_, why);
  if (ticket_) {
    p_.pool().cancel(ticket_);
    ticket_ = 0;
  }
  if (inner_ && !inner_->closed()) inner_->close(why);  // streams get on_stream_close
  fail_all(UpFailure::kConnect, why);
  if (hbone_) {
    h2::H2Conn* h = hbone_;
    hbone_ = nullptr;
    h->detach(hsid_);  // before the reset, which may close the stream at once
    h->reset_stream(hsid_, NGHTTP2_CANCEL);
  }
  state_ = State::kDone;
  idle_timer_.stop();
  if (cb_) cb_->release_connection();  // the slot frees now
  cb_.reset();
  pool_.wake();
  pool_.gone(this);
}

// ---- the pool ----

H2UpstreamPool::H2UpstreamPool(Proxy& p) : p_(p), wake_timer_(p.loop()) {}

H2UpstreamPool::~H2UpstreamPool() {
  close_all();
}

bool H2UpstreamPool::assign(H2UpstreamStream* s, const hbone::PoolKey& key,
                            const std::string& authority, const std::string& forwarded_for,
                            const std::shared_ptr<CircuitBreaker>& cb) {
  if (place(s, key, authority, forwarded_for, cb)) return true;
  if (!cb || !cb->admit_pending()) return false;
  s->waiting_ = true;
  waiting_.push_back(Waiter{s, key, authority, forwarded_for, cb});
  return true;
}

void H2UpstreamPool::wake() {
  if (waiting_.empty() || wake_armed_) return;
  wake_armed_ = true;
  // Not from inside a stream's or connection's callbacks: the next turn.
  wake_timer_.start(0, 0, [this] {
    wake_armed_ = false;
    try_waiting();
  });
}

void H2UpstreamPool::try_waiting() {
  // In order; one that still finds no room keeps its place. A placed stream
  // may fail at once and its session retry into the queue: that one goes
  // behind the ones not yet tried.
  std::deque<Waiter> q;
  q.swap(waiting_);
  while (!q.empty()) {
    Waiter w = std::move(q.front());
    q.pop_front();
    if (!w.s->waiting_) {  // abandoned while this loop ran (unwait found it here, not queued)
      w.cb->release_pending();
      continue;
    }
    w.s->waiting_ = false;
    if (place(w.s, w.key, w.authority, w.forwarded, w.cb)) {
      w.cb->release_pending();
    } else {
      w.s->waiting_ = true;
      waiting_.push_back(std::move(w));
    }
  }
}

void H2UpstreamPool::unwait(H2UpstreamStream* s) {
  if (!s->waiting_) return;
  s->waiting_ = false;
  for (auto it = waiting_.begin(); it != waiting_.end(); ++it)
    if (it->s == s) {
      it->cb->release_pending();
      waiting_.erase(it);
      return;
    }
  // Not queued: try_waiting holds it and releases its slot.
}

bool H2UpstreamPool::place(H2UpstreamStream* s, const hbone::PoolKey& key,
                           const std::string& authority, const std::string& forwarded_for,
                           const std::shared_ptr<CircuitBreaker>& cb) {
  auto& v = conns_[authority + "|" + key.dst_identity];
  // The least loaded connection with room (new streams spread, few connections).
  H2UpstreamConn* best = nullptr;
  for (auto* c : v)
    if (c->accepts() && (!best || c->load() < best->load())) best = c;
  if (!best) {
    if (cb && !cb->admit_connection()) {
      // At the limit: an idle connection of this cluster elsewhere makes room.
      H2UpstreamConn* idle = nullptr;
      for (auto& [k, cs] : conns_)
        for (auto* c : cs)
          if (c->breaker() == cb.get() && c->load() == 0) idle = c;
      if (!idle) return false;
      idle->close("evicted for a request to another endpoint");
      if (!cb->admit_connection()) return false;
    }
    best = new H2UpstreamConn(p_, *this, key, authority, forwarded_for, cb);
    conns_[authority + "|" + key.dst_identity].push_back(best);
    best->open();
  }
  best->add(s);
  return true;
}

void H2UpstreamPool::idle(H2UpstreamConn* c) {
  auto it = conns_.find(c->pool_key());
  if (it == conns_.end()) return;
  size_t idle = 0;
  for (auto* o : it->second)
    if (o->load() == 0 && o->accepts()) ++idle;
  if (!c->accepts()) return c->close("idle");
  // One idle connection stays for kIdleMs; extra ones a burst opened linger
  // a second, so the next burst reuses them instead of opening new tunnels.
  c->idle_timer_.start(idle > 1 ? kExtraIdleMs : H2UpstreamConn::kIdleMs, 0, [c] {
    if (c->streams_.empty()) c->close("idle timeout");
  });
}

void H2UpstreamPool::gone(H2UpstreamConn* c) {
  auto it = conns_.find(c->pool_key());
  if (it != conns_.end()) {
    auto& v = it->second;
    v.erase(std::remove(v.begin(), v.end(), c), v.end());
    if (v.empty()) conns_.erase(it);
  }
  defer(p_.loop(), [c] { delete c; });
}

void H2UpstreamPool::close_all() {
  std::deque<Waiter> q;
  q.swap(waiting_);
  for (auto& w : q) {
    w.cb->release_pending();
    w.s->waiting_ = false;
    w.s->conn_failed(UpFailure::kConnect, "waypoint stopping");
  }
  std::vector<H2UpstreamConn*> all;
  for (auto& [k, v] : conns_) all.insert(all.end(), v.begin(), v.end());
  for (auto* c : all) c->close("waypoint stopping");
}

size_t H2UpstreamPool::connections() const {
  size_t n = 0;
  for (auto& [k, v] : conns_) n += v.size();
  return n;
}

}  // namespace warren::waypoint
