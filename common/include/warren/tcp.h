// A TCP connection on a libuv loop. Heap-allocated and self-deleting: after
// close() the owner must drop its pointer; callbacks stop at once.
#pragma once

#include <uv.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "warren/ip.h"
#include "warren/result.h"

namespace warren::net {

// How an outgoing socket is made (in-pod mode: inside the pod's netns, with
// the mesh mark, or transparent from the original client's address).
struct DialOptions {
  uint32_t mark = 0;
  std::optional<IpAddr> bind_src;  // source address, port chosen by the kernel
  bool transparent = false;        // IP_TRANSPARENT: bind_src need not be local
  int netns_fd = -1;               // create the socket in this netns
};

class TcpConn {
 public:
  class Handler {
   public:
    virtual ~Handler() = default;
    // Data is only valid during the call (a shared per-thread buffer).
    virtual void on_read(TcpConn* c, const char* data, size_t len) = 0;
    virtual void on_eof(TcpConn* c) = 0;
    virtual void on_error(TcpConn* c, int uv_err) = 0;
    // `bytes` of an earlier write() left the process. May be called from
    // inside write() when the socket took everything at once.
    virtual void on_written(TcpConn* c, size_t bytes) {}
    // Queued bytes fell below the low watermark after having been above the high one.
    virtual void on_drain(TcpConn* c) {}
    virtual void on_connect(TcpConn* c, int status) {}
  };

  static constexpr size_t kHighWatermark = 1 << 20;
  static constexpr size_t kLowWatermark = 256 << 10;

  static TcpConn* create(uv_loop_t* loop);
  // Creates a socket of the right family first so options can be set before connect.
  static Result<TcpConn*> create_for(uv_loop_t* loop, const SockAddr& dst, uint32_t mark,
                                     const std::optional<IpAddr>& bind_src);
  static Result<TcpConn*> create_for(uv_loop_t* loop, const SockAddr& dst, const DialOptions& o);

  int accept_from(uv_stream_t* server);
  int connect(const SockAddr& dst);
  void set_handler(Handler* h) { handler_ = h; }
  void start_read();
  void stop_read();
  bool reading() const { return reading_; }
  void write(std::string&& data);
  void write(const char* data, size_t len) { write(std::string(data, len)); }
  // Writes what the socket takes now, without queuing (only when nothing is
  // queued, to keep order); returns the bytes written (0 if it would block).
  size_t try_write(const uv_buf_t* bufs, unsigned n);
  size_t queued() const { return queued_; }
  bool above_high_watermark() const { return queued_ >= kHighWatermark; }
  // Half-close after queued writes finish.
  void shutdown();
  // Releases the connection; `reset` sends RST instead of FIN. Queued writes
  // are dropped: use graceful_close() to deliver them first.
  void close(bool reset = false);
  // Detach the handler, deliver queued writes, send FIN, then close.
  void graceful_close();
  bool closing() const { return closing_; }
  SockAddr local() const;
  SockAddr peer() const;
  uv_tcp_t* handle() { return &tcp_; }
  void set_nodelay(bool on) { uv_tcp_nodelay(&tcp_, on ? 1 : 0); }

 private:
  explicit TcpConn(uv_loop_t* loop);
  ~TcpConn() = default;
  struct WriteReq;
  static void alloc_cb(uv_handle_t*, size_t, uv_buf_t* buf);
  static void read_cb(uv_stream_t*, ssize_t n, const uv_buf_t* buf);
  static void write_cb(uv_write_t* req, int status);

  uv_tcp_t tcp_;
  Handler* handler_ = nullptr;
  size_t queued_ = 0;
  bool reading_ = false;
  bool closing_ = false;
  bool was_above_ = false;
  bool shutdown_sent_ = false;
  bool shutdown_done_ = false;
  bool close_on_shutdown_ = false;
};

// Writes caused by one read are coalesced. While a scope is open (an HTTP/2
// connection's read callback, h2::H2Conn::on_read; nestable), a connection
// that would write registers a Flusher instead and writes once when the
// outermost scope ends: N responses decoded from one read of an upstream
// become one write to the downstream, not N. Outside a scope (timers,
// connects, plaintext sockets) nothing is deferred.
//
// per_iteration(loop) widens the scope to the I/O phase of every iteration
// of that loop: a scope opens just before libuv polls (uv_prepare) and ends
// right after the poll's callbacks have run (uv_check), so the reads of many
// plaintext sockets in one iteration (a node's application connections, one
// HTTP/1.1 request each) leave as one write per HTTP/2 connection, not one
// TLS record and syscall each. Timers and deferred jobs run outside it and
// write at once, as before; nothing waits past the iteration.
class WriteBatch {
 public:
  class Flusher {
   public:
    virtual ~Flusher() = default;
    virtual void flush_batched() = 0;
  };
  WriteBatch() { ++depth_; }
  ~WriteBatch() {
    if (--depth_ == 0 && !pending_.empty()) run();
  }
  WriteBatch(const WriteBatch&) = delete;
  WriteBatch& operator=(const WriteBatch&) = delete;
  static bool active() { return depth_ > 0; }
  // Registers f once (the caller keeps a flag); f runs when the scope ends.
  static void add(Flusher* f) { pending_.push_back(f); }
  // f is going away before the scope ends.
  static void remove(Flusher* f);
  // Once per loop, on the loop's thread (warren-node and warren-waypoint's
  // main loops). The handles are unreferenced: they keep no loop alive.
  static void per_iteration(uv_loop_t* loop);

 private:
  static void run();
  static thread_local int depth_;
  static thread_local std::vector<Flusher*> pending_;
};

// A listening socket; calls on_accept for each new connection.
class TcpListener {
 public:
  using AcceptFn = void (*)(void* ctx, uv_stream_t* server);
  static Result<TcpListener*> listen(uv_loop_t* loop, const SockAddr& addr, AcceptFn fn,
                                     void* ctx, int backlog = 1024);
  // Same, with the socket created inside a network namespace (-1: current).
  static Result<TcpListener*> listen_in(uv_loop_t* loop, int netns_fd, const SockAddr& addr,
                                        AcceptFn fn, void* ctx, int backlog = 1024);
  void close();
  SockAddr local() const;
  int fd() const;

 private:
  TcpListener() = default;
  // Listens on `fd` (bound already; -1: bind `addr` here).
  static Result<TcpListener*> start(uv_loop_t* loop, int fd, const SockAddr& addr, AcceptFn fn,
                                    void* ctx, int backlog, const char* where);
  uv_tcp_t tcp_;
  AcceptFn fn_ = nullptr;
  void* ctx_ = nullptr;
};

}  // namespace warren::net
