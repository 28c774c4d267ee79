#include "warren/h2_conn.h"

#include <spdlog/spdlog.h>

#include <openssl/ssl.h>

#include <cstring>
#include <vector>

#include "warren/buffer_pool.h"

namespace warren::h2 {

const std::string* find_header(const Headers& h, std::string_view name) {
  for (auto& [k, v] : h)
    if (k == name) return &v;
  return nullptr;
}

namespace {
// keep_tls_buffers_while_busy: this thread's TLS connections, swept for idle buffers.
thread_local bool tls_sweep_on = false;
thread_local std::vector<H2Conn*> tls_swept;
}  // namespace

void H2Conn::keep_tls_buffers_while_busy(uv_loop_t* loop) {
  if (tls_sweep_on) return;
  tls_sweep_on = true;
  auto* t = new uv_timer_t;  // lives as long as the loop (the process)
  uv_timer_init(loop, t);
  uv_timer_start(t, [](uv_timer_t*) { sweep_tls_buffers(); }, kTlsSweepMs, kTlsSweepMs);
  uv_unref(reinterpret_cast<uv_handle_t*>(t));
}

void H2Conn::sweep_tls_buffers() {
  for (H2Conn* c : tls_swept) {
    // SSL_free_buffers leaves buffers that still hold data; they go next time.
    if (!c->tls_active_ && c->tls_) SSL_free_buffers(c->tls_->ssl());
    c->tls_active_ = false;
  }
}

H2Conn::H2Conn(net::TcpConn* tcp, SSL_CTX* ctx, bool server, Owner* owner, H2Limits limits)
    : tcp_(tcp), server_(server), owner_(owner), limits_(limits) {
  if (ctx) tls_ = std::make_unique<tls::Session>(ctx, server);
  if (tls_ && tls_sweep_on) {
    SSL_clear_mode(tls_->ssl(), SSL_MODE_RELEASE_BUFFERS);
    tls_swept.push_back(this);
    tls_swept_ = true;
  }
  if (tcp_) {
    tcp_->set_handler(this);
    tcp_->set_nodelay(true);
  }
}

void H2Conn::write_out(std::string&& data) {
  if (data.empty()) return;
  if (tcp_)
    tcp_->write(std::move(data));
  else if (output_)
    output_->write(std::move(data));
  else
    sink_.append(data);
}

H2Conn::~H2Conn() {
  if (batched_) net::WriteBatch::remove(this);
  if (tls_swept_) std::erase(tls_swept, this);
  if (session_) nghttp2_session_del(session_);
  if (tcp_) tcp_->close();
}

void H2Conn::start() {
  if (tcp_) tcp_->start_read();
  if (!tls_) {
    // Cleartext: the session starts at once.
    init_session();
    ready_ = true;
    owner_->on_ready(this);
    flush();
    return;
  }
  if (!server_) {
    tls_->handshake();
    flush();
  }
}

H2Conn::Stream* H2Conn::stream(int32_t sid) {
  auto it = streams_.find(sid);
  return it == streams_.end() ? nullptr : &it->second;
}

uint32_t H2Conn::peer_max_streams() const {
  if (!session_) return 100;
  return nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

void H2Conn::init_session() {
  nghttp2_session_callbacks* cbs;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_send_callback(cbs, send_cb);
  nghttp2_session_callbacks_set_send_data_callback(cbs, send_data_cb);
  nghttp2_session_callbacks_set_data_source_read_length_callback(cbs, read_length_cb);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close_cb);
  nghttp2_option* opt;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_auto_window_update(opt, 1);
  nghttp2_option_set_peer_max_concurrent_streams(opt, 100);
  nghttp2_option_set_max_send_header_block_length(opt, limits_.max_header_list);
  nghttp2_option_set_stream_reset_rate_limit(opt, 1000, 100);  // rapid reset (CVE-2023-44487)
  nghttp2_option_set_max_continuations(opt, 8);                // CONTINUATION flood
  nghttp2_option_set_max_settings(opt, 32);
  nghttp2_option_set_max_outbound_ack(opt, 1000);
  if (server_)
    nghttp2_session_server_new2(&session_, cbs, this, opt);
  else
    nghttp2_session_client_new2(&session_, cbs, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, limits_.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, limits_.stream_window},
      {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, limits_.max_frame},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<uint32_t>(limits_.max_header_list)},
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, server_ ? 4 : 5);
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, limits_.conn_window);
}

// ---- input ----

void H2Conn::on_read(net::TcpConn*, const char* data, size_t len) {
  // What the streams of this read write to other HTTP/2 connections (a
  // waypoint's upstreams, or its downstream for responses) leaves in one
  // write per connection when the read is done.
  net::WriteBatch batch;
  receive(data, len);
}

size_t H2Conn::receive(const char* data, size_t len) {
  if (closed_) return len;
  if (tls_) {
    tls_->lend_input(data, len);
    process_input();
    if (tls_) tls_->stash_input();
    return len;
  }
  if (!session_) return len;
  // Inside another stream: while what we wrote is not gone, read nothing
  // (the carrier keeps the bytes unacknowledged: its peer's window closes).
  if (output_ && out_queued() >= net::TcpConn::kHighWatermark) return 0;
  if (tcp_) last_activity_ms = uv_now(tcp_->handle()->loop);
  in_recv_ = true;
  ssize_t rv = nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(data), len);
  in_recv_ = false;
  if (closed_) return len;
  if (rv < 0) {
    fail(std::string("HTTP/2 protocol error: ") + nghttp2_strerror(rv));
    return len;
  }
  deliver_batch();
  if (closed_) return len;
  flush();
  return len;
}

void H2Conn::deliver_batch() {
  auto batch = std::move(batch_);
  batch_.clear();
  for (int32_t sid : batch) {
    if (closed_) return;
    Stream* s = stream(sid);
    if (s && s->handler) s->handler->on_data_batch_end(this, sid);
  }
}

void H2Conn::process_input() {
  if (closed_) return;
  if (!tls_->handshake_done()) {
    auto st = tls_->handshake();
    if (st == tls::Status::kError) {
      // Let the alert reach the peer before closing.
      write_out(std::move(tls_->output()));
      tls_->output().clear();
      return fail("TLS handshake failed: " + tls_->last_error());
    }
    if (st == tls::Status::kWantRead) return flush();
    const unsigned char* alpn = nullptr;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(tls_->ssl(), &alpn, &alpn_len);
    if (alpn_len != 2 || std::memcmp(alpn, "h2", 2) != 0)
      return fail("TLS handshake: peer did not negotiate ALPN h2");
    init_session();
    ready_ = true;
    owner_->on_ready(this);
    if (closed_) return;
  }
  // Decrypt all that is available into one buffer and hand it to nghttp2 at
  // once: DATA chunks then point into this buffer, and handlers may write
  // them straight to their sockets at on_data_batch_end (before it is reused).
  static thread_local char buf[256 * 1024];
  tls_active_ = true;
  for (;;) {
    size_t have = 0;
    tls::Status st = tls::Status::kOk;
    while (have < sizeof buf) {
      size_t n = 0;
      st = tls_->read(buf + have, sizeof buf - have, &n);
      if (st != tls::Status::kOk) break;
      have += n;
    }
    if (have) {
      if (tcp_) last_activity_ms = uv_now(tcp_->handle()->loop);
      in_recv_ = true;
      ssize_t rv = nghttp2_session_mem_recv(session_, reinterpret_cast<uint8_t*>(buf), have);
      in_recv_ = false;
      if (closed_) return;
      if (rv < 0) return fail(std::string("HTTP/2 protocol error: ") + nghttp2_strerror(rv));
      deliver_batch();
      if (closed_) return;
    }
    if (st == tls::Status::kOk) continue;  // buffer was full
    if (st == tls::Status::kWantRead) break;
    if (st == tls::Status::kClosed) return close("peer sent TLS close_notify");
    return fail("TLS error: " + tls_->last_error());
  }
  deliver_batch();
  if (closed_) return;
  flush();
}

void H2Conn::on_eof(net::TcpConn*) { close("peer closed the connection"); }
// The socket is broken: no GOAWAY can go out. fail() would flush, and a write
// failing synchronously would call on_error again, recursing without end.
void H2Conn::on_error(net::TcpConn*, int e) { close(std::string("socket: ") + uv_strerror(e)); }
void H2Conn::on_drain(net::TcpConn*) {
  write_blocked_ = false;
  flush();
}

// ---- output ----

void H2Conn::flush() {
  if (closed_ || in_recv_ || in_flush_) return;
  // Connections on a socket, and connections carried inside another stream
  // (a waypoint's inner HTTP/2 server and clients), hold their frames until
  // the read that caused them is done: one write per connection per read.
  if ((tcp_ || output_) && net::WriteBatch::active()) {
    if (!batched_) {
      batched_ = true;
      net::WriteBatch::add(this);
    }
    return;
  }
  flush_now();
}

void H2Conn::flush_batched() {
  batched_ = false;
  flush_now();
}

void H2Conn::flush_now() {
  if (closed_ || in_recv_ || in_flush_) return;
  in_flush_ = true;
  if (session_) {
    int rv = nghttp2_session_send(session_);
    if (rv != 0 && rv != NGHTTP2_ERR_WOULDBLOCK) {
      in_flush_ = false;
      return fail(std::string("HTTP/2 send: ") + nghttp2_strerror(rv));
    }
  }
  if (!plain_.empty()) {
    if (!tls_) {
      std::string out;
      out.swap(plain_);
      write_out(std::move(out));
    } else if (!tls_->write(plain_.data(), plain_.size())) {
      in_flush_ = false;
      return fail("TLS write: " + tls_->last_error());
    }
    plain_.clear();
  }
  if (tls_ && !tls_->output().empty()) tls_active_ = true;
  write_tls_out(true);
  in_flush_ = false;
  if (closed_) return;
  if (session_ && !nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_))
    close("HTTP/2 session finished");
}

ssize_t H2Conn::send_cb(nghttp2_session*, const uint8_t* data, size_t len, int, void* ud) {
  auto* self = static_cast<H2Conn*>(ud);
  if (self->out_queued() + self->plain_.size() >= net::TcpConn::kHighWatermark) {
    self->write_blocked_ = true;
    return NGHTTP2_ERR_WOULDBLOCK;
  }
  self->plain_.append(reinterpret_cast<const char*>(data), len);
  return static_cast<ssize_t>(len);
}

void H2Conn::write_tls_out(bool force) {
  if (!tls_) return;
  // One socket write per flush, or per 256 KiB of records under bulk load.
  if (tls_->output().empty() || (!force && tls_->output().size() < (256u << 10))) return;
  write_out(tls_->take_output());
}

ssize_t H2Conn::read_length_cb(nghttp2_session*, uint8_t, int32_t, int32_t conn_window,
                               int32_t stream_window, uint32_t max_frame, void*) {
  // 9-byte header + payload = one full 16 KiB TLS record.
  int64_t n = 16384 - 9;
  n = std::min<int64_t>(n, conn_window);
  n = std::min<int64_t>(n, stream_window);
  n = std::min<int64_t>(n, max_frame);
  return static_cast<ssize_t>(std::max<int64_t>(n, 1));
}

int H2Conn::send_data_cb(nghttp2_session*, nghttp2_frame* frame, const uint8_t* framehd,
                         size_t length, nghttp2_data_source*, void* ud) {
  auto* self = static_cast<H2Conn*>(ud);
  if (self->out_queued() + self->plain_.size() + (self->tls_ ? self->tls_->output().size() : 0) >=
      net::TcpConn::kHighWatermark) {
    self->write_blocked_ = true;
    return NGHTTP2_ERR_WOULDBLOCK;
  }
  Stream* s = self->stream(frame->hd.stream_id);
  if (!s) return NGHTTP2_ERR_CALLBACK_FAILURE;
  size_t before = s->out.size() - s->out_off;
  if (self->tls_) {
    // Control frames queued before this DATA frame go first.
    if (!self->plain_.empty()) {
      if (!self->tls_->write(self->plain_.data(), self->plain_.size()))
        return NGHTTP2_ERR_CALLBACK_FAILURE;
      self->plain_.clear();
    }
    char* hd = s->out.data() + s->out_off - kFrameHeadroom;
    std::memcpy(hd, framehd, kFrameHeadroom);
    if (!self->tls_->write(hd, kFrameHeadroom + length)) return NGHTTP2_ERR_CALLBACK_FAILURE;
    self->write_tls_out(false);
  } else {
    self->plain_.append(reinterpret_cast<const char*>(framehd), 9);
    self->plain_.append(s->out.data() + s->out_off, length);
  }
  s->out_off += length;
  if (s->out_off == s->out.size()) {
    s->out.resize(kFrameHeadroom);
    s->out_off = kFrameHeadroom;
    if (s->out.capacity() > 256 * 1024) {
      std::string fresh(kFrameHeadroom, '\0');
      s->out.swap(fresh);
    }
  } else if (s->out_off >= 256 * 1024) {
    s->out.erase(kFrameHeadroom, s->out_off - kFrameHeadroom);
    s->out_off = kFrameHeadroom;
  }
  size_t after = s->out.size() - s->out_off;
  if (before > kStreamLow && after <= kStreamLow && s->handler)
    s->handler->on_send_drain(self, frame->hd.stream_id);
  return 0;
}

ssize_t H2Conn::read_cb(nghttp2_session*, int32_t sid, uint8_t*, size_t len, uint32_t* flags,
                        nghttp2_data_source*, void* ud) {
  auto* self = static_cast<H2Conn*>(ud);
  Stream* s = self->stream(sid);
  if (!s) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  size_t avail = s->out.size() - s->out_off;
  if (avail == 0) {
    if (s->out_eof) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      s->eof_sent = true;
      self->submit_trailers_at_eof(sid, s, flags);
      return 0;
    }
    s->deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  size_t n = std::min(avail, len);
  *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  if (n == avail && s->out_eof) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    s->eof_sent = true;
    self->submit_trailers_at_eof(sid, s, flags);
  }
  return static_cast<ssize_t>(n);
}

// The last DATA frame goes without END_STREAM: the trailers' HEADERS ends the
// stream (nghttp2 allows submitting them from inside the read callback).
void H2Conn::submit_trailers_at_eof(int32_t sid, Stream* s, uint32_t* flags) {
  if (s->trailers.empty()) return;
  std::vector<nghttp2_nv> nva;
  nva.reserve(s->trailers.size());
  for (auto& [k, v] : s->trailers)
    nva.push_back({(uint8_t*)k.data(), (uint8_t*)v.data(), k.size(), v.size(), NGHTTP2_NV_FLAG_NONE});
  if (nghttp2_submit_trailer(session_, sid, nva.data(), nva.size()) == 0)
    *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
  s->trailers.clear();
}

// ---- frames ----

int H2Conn::on_begin_headers(nghttp2_session*, const nghttp2_frame* f, void* ud) {
  auto* self = static_cast<H2Conn*>(ud);
  if (f->hd.type != NGHTTP2_HEADERS) return 0;
  int32_t sid = f->hd.stream_id;
  if (self->server_ && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
    Stream& s = self->streams_[sid];
    s.handler = self->owner_->on_new_stream(self, sid);
  }
  if (Stream* s = self->stream(sid)) {
    s->headers.clear();
    s->header_bytes = 0;
  }
  return 0;
}

int H2Conn::on_header(nghttp2_session*, const nghttp2_frame* f, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t,
                      void* ud) {
  auto* self = static_cast<H2Conn*>(ud);
  Stream* s = self->stream(f->hd.stream_id);
  if (!s) return 0;
  s->header_bytes += namelen + valuelen + 32;
  if (s->header_bytes > self->limits_.max_header_list) {
    // Oversized header list: refuse the stream, keep memory bounded.
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  s->headers.emplace_back(std::string(reinterpret_cast<const char*>(name), namelen),
                          std::string(reinterpret_cast<const char*>(value), valuelen));
  return 0;
}

int H2Conn::on_frame_recv(nghttp2_session*, const nghttp2_frame* f, void* ud) {
  auto* self = static_cast<H2Conn*>(ud);
  int32_t sid = f->hd.stream_id;
  switch (f->hd.type) {
    case NGHTTP2_HEADERS: {
      Stream* s = self->stream(sid);
      if (!s || !s->handler) return 0;
      bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
      Headers h;
      h.swap(s->headers);
      // A later HEADERS is the final response after a 1xx (it has :status;
      // nghttp2 checked the pseudo-headers) or else trailers.
      bool head = f->headers.cat == NGHTTP2_HCAT_REQUEST || f->headers.cat == NGHTTP2_HCAT_RESPONSE ||
                  (!h.empty() && !h.front().first.empty() && h.front().first[0] == ':');
      if (head)
        s->handler->on_headers(self, sid, std::move(h), end);
      else
        s->handler->on_trailers(self, sid, std::move(h));
      if (end)
        if (Stream* s2 = self->stream(sid); s2 && s2->handler) s2->handler->on_end_stream(self, sid);
      break;
    }
    case NGHTTP2_DATA:
      if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
        if (Stream* s = self->stream(sid); s && s->handler) s->handler->on_end_stream(self, sid);
      break;
    case NGHTTP2_GOAWAY:
      self->goaway_ = true;
      break;
    case NGHTTP2_PING:
      if (f->hd.flags & NGHTTP2_FLAG_ACK) self->ping_outstanding = false;
      break;
    default:
      break;
  }
  return 0;
}

int H2Conn::on_data_chunk(nghttp2_session* session, uint8_t, int32_t sid, const uint8_t* data,
                          size_t len, void* ud) {
  auto* self = static_cast<H2Conn*>(ud);
  Stream* s = self->stream(sid);
  if (!s || !s->handler) {
    nghttp2_session_consume(session, sid, len);
    return 0;
  }
  s->unconsumed += len;
  if (self->batch_.empty() || self->batch_.back() != sid) self->batch_.push_back(sid);
  s->handler->on_data(self, sid, data, len);
  return 0;
}

int H2Conn::on_stream_close_cb(nghttp2_session* session, int32_t sid, uint32_t code, void* ud) {
  auto* self = static_cast<H2Conn*>(ud);
  auto it = self->streams_.find(sid);
  if (it == self->streams_.end()) return 0;
  StreamHandler* h = it->second.handler;
  if (it->second.unconsumed) nghttp2_session_consume_connection(session, it->second.unconsumed);
  self->streams_.erase(it);
  if (h) h->on_stream_close(self, sid, code);
  if (!self->closed_) self->owner_->on_stream_count(self);
  return 0;
}

// ---- API ----

int32_t H2Conn::submit_request(const Headers& h, StreamHandler* handler, bool with_body) {
  if (closed_ || !session_ || goaway_) return -1;
  std::vector<nghttp2_nv> nva;
  nva.reserve(h.size());
  for (auto& [k, v] : h)
    nva.push_back({(uint8_t*)k.data(), (uint8_t*)v.data(), k.size(), v.size(),
                   NGHTTP2_NV_FLAG_NONE});
  nghttp2_data_provider prd{};
  prd.read_callback = read_cb;
  int32_t sid = nghttp2_submit_request(session_, nullptr, nva.data(), nva.size(),
                                       with_body ? &prd : nullptr, nullptr);
  if (sid < 0) return sid;
  Stream& s = streams_[sid];
  s.handler = handler;
  s.has_provider = with_body;
  flush();
  return sid;
}

bool H2Conn::submit_response(int32_t sid, int status, bool with_body, const Headers& extra) {
  Stream* s = stream(sid);
  if (closed_ || !s) return false;
  std::string st = std::to_string(status);
  std::vector<nghttp2_nv> nva;
  nva.push_back({(uint8_t*)":status", (uint8_t*)st.data(), 7, st.size(), NGHTTP2_NV_FLAG_NONE});
  for (auto& [k, v] : extra)
    nva.push_back({(uint8_t*)k.data(), (uint8_t*)v.data(), k.size(), v.size(),
                   NGHTTP2_NV_FLAG_NONE});
  nghttp2_data_provider prd{};
  prd.read_callback = read_cb;
  s->has_provider = with_body;
  int rv = nghttp2_submit_response(session_, sid, nva.data(), nva.size(),
                                   with_body ? &prd : nullptr);
  flush();
  return rv == 0;
}

void H2Conn::resume(int32_t sid, Stream* s) {
  if (s->deferred) {
    s->deferred = false;
    nghttp2_session_resume_data(session_, sid);
  }
}

void H2Conn::send_data(int32_t sid, const char* data, size_t len) {
  Stream* s = stream(sid);
  if (closed_ || !s || s->out_eof) return;
  s->out.append(data, len);
  resume(sid, s);
  flush();
}

void H2Conn::end_stream(int32_t sid) {
  Stream* s = stream(sid);
  if (closed_ || !s || s->out_eof) return;
  s->out_eof = true;
  resume(sid, s);
  flush();
}

void H2Conn::end_stream_with_trailers(int32_t sid, Headers trailers) {
  Stream* s = stream(sid);
  if (closed_ || !s || s->out_eof) return;
  s->trailers = std::move(trailers);
  end_stream(sid);
}

size_t H2Conn::buffered(int32_t sid) const {
  auto it = streams_.find(sid);
  return it == streams_.end() ? 0 : it->second.out.size() - it->second.out_off;
}

void H2Conn::consume(int32_t sid, size_t n) {
  Stream* s = stream(sid);
  if (closed_ || !s || n == 0) return;
  n = std::min(n, s->unconsumed);
  s->unconsumed -= n;
  nghttp2_session_consume(session_, sid, n);
  flush();
}

void H2Conn::reset_stream(int32_t sid, uint32_t code) {
  if (closed_ || !stream(sid)) return;
  // Frames held for a batched write go first: nghttp2 would drop a response
  // HEADERS still queued for a stream it is resetting (a 503 then the reset).
  if (batched_) flush_now();
  if (closed_ || !stream(sid)) return;
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, sid, code);
  flush();
}

void H2Conn::detach(int32_t sid) {
  Stream* s = stream(sid);
  if (!s) return;
  s->handler = nullptr;
  if (s->unconsumed && session_ && !closed_) {
    nghttp2_session_consume(session_, sid, s->unconsumed);
    s->unconsumed = 0;
  }
}

void H2Conn::set_stream_handler(int32_t sid, StreamHandler* h) {
  if (Stream* s = stream(sid)) s->handler = h;
}

void H2Conn::ping() {
  if (closed_ || !session_) return;
  ping_outstanding = true;
  nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, nullptr);
  flush();
}

void H2Conn::goaway() {
  if (closed_ || !session_ || goaway_) return;
  goaway_ = true;
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_), NGHTTP2_NO_ERROR,
                        nullptr, 0);
  flush();
}

void H2Conn::fail(const std::string& reason) {
  if (closed_) return;
  if (session_ && !in_recv_) {
    goaway_ = true;
    nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(session_),
                          NGHTTP2_PROTOCOL_ERROR, nullptr, 0);
    in_flush_ = false;
    flush_now();
  }
  close(reason);
}

void H2Conn::close(const std::string& reason) {
  if (closed_) return;
  // Frames a batched flush still holds (a last response, RST_STREAM,
  // GOAWAY) go out before the socket closes.
  if (batched_ && !in_recv_ && !in_flush_) {
    batched_ = false;
    net::WriteBatch::remove(this);
    flush_now();
    if (closed_) return;
  }
  closed_ = true;
  ready_ = false;
  if (tls_ && !tls_->output().empty()) write_out(std::move(tls_->output()));
  if (tcp_) tcp_->close();
  tcp_ = nullptr;
  auto streams = std::move(streams_);
  streams_.clear();
  for (auto& [sid, s] : streams)
    if (s.handler) s.handler->on_stream_close(this, sid, NGHTTP2_CANCEL);
  owner_->on_conn_close(this, reason);
}

}  // namespace warren::h2
