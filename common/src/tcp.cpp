#include "warren/tcp.h"

#include "warren/netns.h"

#include "warren/buffer_pool.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace warren::net {

namespace {
constexpr size_t kReadBuf = 256 * 1024;
thread_local char g_read_buf[kReadBuf];
}  // namespace

thread_local int WriteBatch::depth_ = 0;
thread_local std::vector<WriteBatch::Flusher*> WriteBatch::pending_;

void WriteBatch::remove(Flusher* f) {
  for (auto& p : pending_)
    if (p == f) p = nullptr;
}

void WriteBatch::run() {
  // A flush may register more (a drain callback writing elsewhere): the
  // scope stays open until nothing is left.
  ++depth_;
  for (size_t i = 0; i < pending_.size(); ++i)
    if (Flusher* f = pending_[i]) {
      pending_[i] = nullptr;
      f->flush_batched();
    }
  pending_.clear();
  --depth_;
}

void WriteBatch::per_iteration(uv_loop_t* loop) {
  // Never freed: they live as long as the loop, which lives as long as the process.
  auto* prepare = new uv_prepare_t;
  auto* check = new uv_check_t;
  uv_prepare_init(loop, prepare);
  uv_check_init(loop, check);
  uv_prepare_start(prepare, [](uv_prepare_t*) { ++depth_; });
  uv_check_start(check, [](uv_check_t*) {
    if (depth_ > 0 && --depth_ == 0 && !pending_.empty()) run();
  });
  uv_unref(reinterpret_cast<uv_handle_t*>(prepare));
  uv_unref(reinterpret_cast<uv_handle_t*>(check));
}

struct TcpConn::WriteReq {
  uv_write_t req;
  std::string data;
  size_t offset = 0;  // written before the request was queued
  TcpConn* conn;
};

TcpConn::TcpConn(uv_loop_t* loop) {
  uv_tcp_init(loop, &tcp_);
  tcp_.data = this;
}

TcpConn* TcpConn::create(uv_loop_t* loop) { return new TcpConn(loop); }

Result<TcpConn*> TcpConn::create_for(uv_loop_t* loop, const SockAddr& dst, uint32_t mark,
                                     const std::optional<IpAddr>& bind_src) {
  DialOptions o;
  o.mark = mark;
  o.bind_src = bind_src;
  return create_for(loop, dst, o);
}

Result<TcpConn*> TcpConn::create_for(uv_loop_t* loop, const SockAddr& dst, const DialOptions& o) {
  int family = dst.ip.is_v4() ? AF_INET : AF_INET6;
  int fd = -1;
  if (o.netns_fd >= 0) {
    auto s = netns::socket_in(o.netns_fd, family, SOCK_STREAM);
    if (!s) return s.error();
    fd = *s;
  } else {
    fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return Error::sys("socket");
  }
  auto fail = [fd](const std::string& what) {
    auto e = Error::sys(what);
    ::close(fd);
    return e;
  };
  if (o.mark != 0 && setsockopt(fd, SOL_SOCKET, SO_MARK, &o.mark, sizeof o.mark) != 0)
    return fail("setsockopt(SO_MARK)");
  if (o.transparent) {
    int one = 1;
    if (setsockopt(fd, family == AF_INET ? SOL_IP : SOL_IPV6,
                   family == AF_INET ? IP_TRANSPARENT : IPV6_TRANSPARENT, &one, sizeof one) != 0)
      return fail("setsockopt(IP_TRANSPARENT)");
  }
  if (o.bind_src) {
    int one = 1;
    if (!o.transparent) setsockopt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    sockaddr_storage ss;
    socklen_t len = SockAddr{*o.bind_src, 0}.to_sockaddr(&ss);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0)
      return fail("bind " + o.bind_src->to_string());
  }
  auto* c = new TcpConn(loop);
  int r = uv_tcp_open(&c->tcp_, fd);
  if (r != 0) {
    ::close(fd);
    c->close();
    return make_error(Errc::kSystem, std::string("uv_tcp_open: ") + uv_strerror(r));
  }
  return c;
}

int TcpConn::accept_from(uv_stream_t* server) {
  return uv_accept(server, reinterpret_cast<uv_stream_t*>(&tcp_));
}

int TcpConn::connect(const SockAddr& dst) {
  auto* req = new uv_connect_t;
  req->data = this;
  sockaddr_storage ss;
  dst.to_sockaddr(&ss);
  int r = uv_tcp_connect(req, &tcp_, reinterpret_cast<sockaddr*>(&ss), [](uv_connect_t* req,
                                                                          int status) {
    auto* self = static_cast<TcpConn*>(req->data);
    delete req;
    if (status == UV_ECANCELED || self->closing_) return;
    if (self->handler_) self->handler_->on_connect(self, status);
  });
  if (r != 0) delete req;
  return r;
}

void TcpConn::alloc_cb(uv_handle_t*, size_t, uv_buf_t* buf) {
  buf->base = g_read_buf;
  buf->len = kReadBuf;
}

void TcpConn::read_cb(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  auto* self = static_cast<TcpConn*>(s->data);
  if (self->closing_ || !self->handler_) return;
  if (n > 0) {
    self->handler_->on_read(self, buf->base, static_cast<size_t>(n));
  } else if (n == UV_EOF) {
    self->stop_read();
    self->handler_->on_eof(self);
  } else if (n < 0) {
    self->stop_read();
    self->handler_->on_error(self, static_cast<int>(n));
  }
}

void TcpConn::start_read() {
  if (reading_ || closing_) return;
  if (uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), alloc_cb, read_cb) == 0)
    reading_ = true;
}

void TcpConn::stop_read() {
  if (!reading_) return;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  reading_ = false;
}

void TcpConn::write_cb(uv_write_t* req, int status) {
  auto* w = static_cast<WriteReq*>(req->data);
  TcpConn* self = w->conn;
  size_t n = w->data.size() - w->offset;  // the part written at once was reported then
  give_buffer(std::move(w->data));
  self->queued_ -= n;
  delete w;
  if (self->closing_ || !self->handler_) return;
  if (status < 0) {
    if (status != UV_ECANCELED) self->handler_->on_error(self, status);
    return;
  }
  self->handler_->on_written(self, n);
  if (self->closing_) return;
  if (self->was_above_ && self->queued_ <= kLowWatermark) {
    self->was_above_ = false;
    self->handler_->on_drain(self);
  }
}

void TcpConn::write(std::string&& data) {
  if (closing_ || data.empty()) return;
  // With nothing queued, offer the bytes to the socket at once: what it takes
  // is done now. uv_write alone would also write at once, but its completion
  // comes a loop turn later and re-arms the fd in epoll (one epoll_ctl per
  // write).
  uv_buf_t first = uv_buf_init(data.data(), static_cast<unsigned>(data.size()));
  size_t done = try_write(&first, 1);
  if (done == data.size()) {
    give_buffer(std::move(data));
    if (handler_) handler_->on_written(this, done);
    return;
  }
  auto* w = new WriteReq;
  w->data = std::move(data);
  w->conn = this;
  w->req.data = w;
  w->offset = done;
  uv_buf_t b = uv_buf_init(w->data.data() + done, static_cast<unsigned>(w->data.size() - done));
  queued_ += w->data.size() - done;
  if (queued_ >= kHighWatermark) was_above_ = true;
  int r = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&tcp_), &b, 1, write_cb);
  if (r != 0) {
    queued_ -= w->data.size() - done;
    delete w;
    if (handler_) handler_->on_error(this, r);
    return;
  }
  if (done && handler_) handler_->on_written(this, done);
}

size_t TcpConn::try_write(const uv_buf_t* bufs, unsigned n) {
  if (closing_ || queued_ != 0 || shutdown_sent_) return 0;
  int r = uv_try_write(reinterpret_cast<uv_stream_t*>(&tcp_), bufs, n);
  return r > 0 ? static_cast<size_t>(r) : 0;
}

void TcpConn::shutdown() {
  if (closing_ || shutdown_sent_) return;
  shutdown_sent_ = true;
  auto* req = new uv_shutdown_t;
  req->data = this;
  if (uv_shutdown(req, reinterpret_cast<uv_stream_t*>(&tcp_), [](uv_shutdown_t* r, int status) {
        auto* self = static_cast<TcpConn*>(r->data);
        delete r;
        if (status == UV_ECANCELED) return;
        self->shutdown_done_ = true;
        if (self->close_on_shutdown_) self->close();
      }) != 0) {
    delete req;
    shutdown_done_ = true;
  }
}

void TcpConn::graceful_close() {
  if (closing_) return;
  handler_ = nullptr;
  stop_read();
  close_on_shutdown_ = true;
  if (!shutdown_sent_) shutdown();
  if (shutdown_done_) close();
}

void TcpConn::close(bool reset) {
  if (closing_) return;
  closing_ = true;
  handler_ = nullptr;
  auto done = [](uv_handle_t* h) { delete static_cast<TcpConn*>(h->data); };
  if (reset && uv_tcp_close_reset(&tcp_, done) == 0) return;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), done);
}

SockAddr TcpConn::local() const {
  sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getsockname(&tcp_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
  return SockAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
}

SockAddr TcpConn::peer() const {
  sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getpeername(&tcp_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
  return SockAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
}

Result<TcpListener*> TcpListener::listen(uv_loop_t* loop, const SockAddr& addr, AcceptFn fn,
                                         void* ctx, int backlog) {
  return start(loop, -1, addr, fn, ctx, backlog, "");
}

Result<TcpListener*> TcpListener::listen_in(uv_loop_t* loop, int netns_fd, const SockAddr& addr,
                                            AcceptFn fn, void* ctx, int backlog) {
  if (netns_fd < 0) return listen(loop, addr, fn, ctx, backlog);
  auto s = netns::socket_in(netns_fd, addr.ip.is_v4() ? AF_INET : AF_INET6, SOCK_STREAM);
  if (!s) return s.error();
  int fd = *s, one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_storage ss;
  socklen_t len = addr.to_sockaddr(&ss);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    auto e = Error::sys("listen on " + addr.to_string() + " (pod netns): bind");
    ::close(fd);
    return e;
  }
  return start(loop, fd, addr, fn, ctx, backlog, " (pod netns)");
}

Result<TcpListener*> TcpListener::start(uv_loop_t* loop, int fd, const SockAddr& addr, AcceptFn fn,
                                        void* ctx, int backlog, const char* where) {
  auto* l = new TcpListener;
  uv_tcp_init(loop, &l->tcp_);
  l->tcp_.data = l;
  l->fn_ = fn;
  l->ctx_ = ctx;
  int r;
  if (fd >= 0) {  // a socket bound already (in another netns)
    r = uv_tcp_open(&l->tcp_, fd);
    if (r != 0) ::close(fd);
  } else {
    sockaddr_storage ss;
    addr.to_sockaddr(&ss);
    r = uv_tcp_bind(&l->tcp_, reinterpret_cast<sockaddr*>(&ss), 0);
  }
  if (r == 0)
    r = uv_listen(reinterpret_cast<uv_stream_t*>(&l->tcp_), backlog, [](uv_stream_t* s, int st) {
      auto* self = static_cast<TcpListener*>(s->data);
      if (st == 0) self->fn_(self->ctx_, s);
    });
  if (r != 0) {
    l->close();
    return make_error(Errc::kSystem,
                      "listen on " + addr.to_string() + where + ": " + std::string(uv_strerror(r)));
  }
  return l;
}

int TcpListener::fd() const {
  uv_os_fd_t fd = -1;
  uv_fileno(reinterpret_cast<const uv_handle_t*>(&tcp_), &fd);
  return fd;
}

void TcpListener::close() {
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_),
           [](uv_handle_t* h) { delete static_cast<TcpListener*>(h->data); });
}

SockAddr TcpListener::local() const {
  sockaddr_storage ss;
  int len = sizeof ss;
  uv_tcp_getsockname(&tcp_, reinterpret_cast<sockaddr*>(&ss), &len);
  return SockAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
}

}  // namespace warren::net
