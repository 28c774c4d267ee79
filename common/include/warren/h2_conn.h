// One HTTP/2 connection over TLS over TCP, client or server side: the TCP
// socket feeds the TLS transform, the TLS transform feeds nghttp2. Streams
// are driven by StreamHandlers. Flow control is explicit: received DATA is only
// acknowledged (WINDOW_UPDATE) when the handler calls consume(), so a slow
// reader bounds what the peer may send; outgoing DATA sits in a per-stream
// buffer the handler watches (buffered()) to stop reading its own source.
#pragma once

#include <nghttp2/nghttp2.h>
#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "warren/tcp.h"
#include "warren/tls_session.h"

namespace warren::h2 {

using Headers = std::vector<std::pair<std::string, std::string>>;
const std::string* find_header(const Headers& h, std::string_view name);

class H2Conn;

class StreamHandler {
 public:
  virtual ~StreamHandler() = default;
  // Request headers (server) or response headers (client).
  virtual void on_headers(H2Conn* c, int32_t sid, Headers&& h, bool end_stream) = 0;
  virtual void on_data(H2Conn* c, int32_t sid, const uint8_t* data, size_t len) = 0;
  // Trailers: a HEADERS frame after the request or response head (after DATA,
  // or a second HEADERS). on_end_stream follows when it carried END_STREAM.
  // The default drops them (the stream's end is still reported).
  virtual void on_trailers(H2Conn* c, int32_t sid, Headers&& h) {}
  // The peer ended its side (END_STREAM).
  virtual void on_end_stream(H2Conn* c, int32_t sid) = 0;
  // The stream is gone (error_code 0 = both sides ended cleanly). Last call.
  virtual void on_stream_close(H2Conn* c, int32_t sid, uint32_t error_code) = 0;
  // Outgoing buffer fell to the low watermark.
  virtual void on_send_drain(H2Conn* c, int32_t sid) {}
  // The DATA of one read from the socket has all been delivered: a handler
  // that batched on_data may write it out now.
  virtual void on_data_batch_end(H2Conn* c, int32_t sid) {}
};

struct H2Limits {
  uint32_t max_concurrent_streams = 100;  // what we accept from the peer
  uint32_t stream_window = 4 << 20;
  uint32_t conn_window = 16 << 20;
  uint32_t max_frame = 1 << 20;
  size_t max_header_list = 64 << 10;
};

class H2Conn : public net::TcpConn::Handler, private net::WriteBatch::Flusher {
 public:
  class Owner {
   public:
    virtual ~Owner() = default;
    // Server: a peer opened a stream; return its handler (never null).
    virtual StreamHandler* on_new_stream(H2Conn* c, int32_t sid) { return nullptr; }
    // TLS and the HTTP/2 preface are done.
    virtual void on_ready(H2Conn* c) {}
    // The connection ended; every stream got on_stream_close before this. Last call.
    virtual void on_conn_close(H2Conn* c, const std::string& reason) = 0;
    // A stream finished (for pool accounting).
    virtual void on_stream_count(H2Conn* c) {}
  };

  static constexpr size_t kStreamHigh = 256 << 10;
  static constexpr size_t kStreamLow = 64 << 10;

  // Takes ownership of tcp (already connected or accepted). A null ctx runs
  // HTTP/2 in cleartext (h2c, and the fuzz target); a null tcp takes input
  // through receive() and hands output to the Output set by set_output (an
  // H2Conn carried inside another stream), or else keeps it in sink() (tests
  // and fuzzing).
  H2Conn(net::TcpConn* tcp, SSL_CTX* ctx, bool server, Owner* owner, H2Limits limits = {});

  // The transport of an H2Conn without a socket: write() takes output bytes,
  // queued() says how many of them are not yet gone. Past
  // TcpConn::kHighWatermark queued, the connection stops producing output and
  // receive() takes no more input; call output_drained() when it fell.
  class Output {
   public:
    virtual ~Output() = default;
    virtual void write(std::string&& data) = 0;
    virtual size_t queued() const = 0;
  };
  void set_output(Output* out) { output_ = out; }
  void output_drained() { on_drain(nullptr); }
  ~H2Conn() override;

  // Starts TLS (client writes ClientHello).
  void start();
  bool ready() const { return ready_; }
  bool closed() const { return closed_; }
  bool draining() const { return goaway_; }
  tls::Session& tls() { return *tls_; }
  // Bytes from the peer (what on_read does). Returns how many were taken:
  // all of them, except with an Output that is over its high watermark, when
  // none are (the caller keeps them, unacknowledged, and offers them again
  // after output_drained()).
  size_t receive(const char* data, size_t len);
  // Output written while tcp is null.
  std::string& sink() { return sink_; }
  size_t active_streams() const { return streams_.size(); }
  uint32_t peer_max_streams() const;

  // Client: opens a stream with a request; returns the stream id or <0.
  int32_t submit_request(const Headers& h, StreamHandler* handler, bool with_body);
  // Server: answers a request; with_body keeps the stream open for DATA.
  bool submit_response(int32_t sid, int status, bool with_body, const Headers& extra = {});
  // Queue DATA for the stream.
  void send_data(int32_t sid, const char* data, size_t len);
  // Send END_STREAM once the buffer is empty.
  void end_stream(int32_t sid);
  // End the stream with trailers (a HEADERS frame with END_STREAM) once the
  // buffered DATA is out. The stream must have been opened with a body
  // (submit_request/submit_response with_body); empty trailers end it with
  // an empty DATA frame instead.
  void end_stream_with_trailers(int32_t sid, Headers trailers);
  size_t buffered(int32_t sid) const;
  // Acknowledge `n` bytes delivered by on_data (opens the peer's window).
  void consume(int32_t sid, size_t n);
  void reset_stream(int32_t sid, uint32_t error_code);
  // Detach the handler: no more callbacks for this stream.
  void detach(int32_t sid);
  // Hand the stream to another handler.
  void set_stream_handler(int32_t sid, StreamHandler* h);
  void ping();
  // Close now (GOAWAY best effort) and report on_conn_close(reason).
  void close(const std::string& reason);
  void goaway();
  // Writes everything nghttp2 wants to send to the socket: at once, or, with
  // a socket and inside a read callback, once that callback returns
  // (net::WriteBatch).
  void flush();

  // TcpConn::Handler
  void on_read(net::TcpConn* c, const char* data, size_t len) override;
  void on_eof(net::TcpConn* c) override;
  void on_error(net::TcpConn* c, int uv_err) override;
  void on_drain(net::TcpConn* c) override;

  net::TcpConn* tcp() { return tcp_; }

  // OpenSSL's record buffers (about 34 KB a connection) are released after
  // every TLS read and write by default (SSL_MODE_RELEASE_BUFFERS, set in
  // tls_context.cpp for processes holding many idle tunnels), which costs a
  // 16 KB malloc and free per record on a busy connection. After this call
  // (once, on the loop's thread: warren-node's and warren-waypoint's mains)
  // TLS connections made on this thread keep them while busy, and a sweep
  // every kTlsSweepMs releases those of connections without traffic since
  // the previous sweep. The timer is unreferenced: it keeps no loop alive.
  static void keep_tls_buffers_while_busy(uv_loop_t* loop);
  static constexpr uint64_t kTlsSweepMs = 2000;

  uint64_t last_activity_ms = 0;
  bool ping_outstanding = false;

 private:
  // Outgoing DATA payload. The first kFrameHeadroom bytes before out_off are
  // always free, so a DATA frame header is written in front of its payload and
  // header + payload go to TLS as one record without a copy.
  static constexpr size_t kFrameHeadroom = 9;
  struct Stream {
    Stream() : out(kFrameHeadroom, '\0') {}
    StreamHandler* handler = nullptr;
    std::string out;
    size_t out_off = kFrameHeadroom;
    bool out_eof = false;
    bool eof_sent = false;
    bool deferred = false;
    bool has_provider = false;
    bool paused_reader = false;
    size_t unconsumed = 0;  // received, not yet consumed by the handler
    size_t header_bytes = 0;
    Headers headers;
    Headers trailers;  // sent after the buffered DATA (end_stream_with_trailers)
  };
  Stream* stream(int32_t sid);
  void init_session();
  void process_input();
  void resume(int32_t sid, Stream* s);
  void fail(const std::string& reason);

  static ssize_t send_cb(nghttp2_session*, const uint8_t* data, size_t len, int, void* ud);
  static int send_data_cb(nghttp2_session*, nghttp2_frame* frame, const uint8_t* framehd,
                          size_t length, nghttp2_data_source* src, void* ud);
  static ssize_t read_length_cb(nghttp2_session*, uint8_t type, int32_t sid, int32_t conn_window,
                                int32_t stream_window, uint32_t max_frame, void* ud);
  void deliver_batch();
  void flush_now();
  void flush_batched() override;
  void submit_trailers_at_eof(int32_t sid, Stream* s, uint32_t* flags);
  void write_tls_out(bool force);
  static ssize_t read_cb(nghttp2_session*, int32_t sid, uint8_t* buf, size_t len,
                         uint32_t* flags, nghttp2_data_source* src, void* ud);
  static int on_begin_headers(nghttp2_session*, const nghttp2_frame* f, void* ud);
  static int on_header(nghttp2_session*, const nghttp2_frame* f, const uint8_t* name,
                       size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                       void* ud);
  static int on_frame_recv(nghttp2_session*, const nghttp2_frame* f, void* ud);
  static int on_data_chunk(nghttp2_session*, uint8_t flags, int32_t sid, const uint8_t* data,
                           size_t len, void* ud);
  static int on_stream_close_cb(nghttp2_session*, int32_t sid, uint32_t code, void* ud);

  net::TcpConn* tcp_;
  std::unique_ptr<tls::Session> tls_;
  std::string in_plain_;  // cleartext mode input
  std::string sink_;
  Output* output_ = nullptr;
  void write_out(std::string&& data);
  size_t out_queued() const { return tcp_ ? tcp_->queued() : output_ ? output_->queued() : 0; }
  bool server_;
  Owner* owner_;
  H2Limits limits_;
  nghttp2_session* session_ = nullptr;
  std::unordered_map<int32_t, Stream> streams_;
  std::string plain_;  // staged plaintext frames before encryption
  std::vector<int32_t> batch_;  // streams that got DATA in the current read
  bool ready_ = false;
  bool closed_ = false;
  bool goaway_ = false;
  bool in_flush_ = false;
  bool in_recv_ = false;
  bool write_blocked_ = false;
  bool batched_ = false;  // registered with the current net::WriteBatch
  bool tls_swept_ = false;   // in the thread's idle-buffer sweep (keep_tls_buffers_while_busy)
  bool tls_active_ = false;  // TLS traffic since the last sweep
  static void sweep_tls_buffers();
};

}  // namespace warren::h2
