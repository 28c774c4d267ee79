// Moves bytes between a plain TCP leg (the application side) and one HBONE
// stream, both ways, with half-close and backpressure:
//   TCP -> stream: read, queue on the stream; stop reading past the stream's
//                  high watermark, resume on its drain; TCP EOF -> END_STREAM.
//   stream -> TCP: write; acknowledge to HTTP/2 flow control only once the
//                  bytes left the process; END_STREAM -> shutdown(SHUT_WR).
// A Tunnel owns its TCP leg and deletes itself once both are done.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "h2_conn.h"
#include "warren/tcp.h"

namespace warren::node {

struct TunnelStats {
  uint64_t tcp_to_h2 = 0;  // bytes read from the TCP leg
  uint64_t h2_to_tcp = 0;  // bytes written to the TCP leg
};

class Tunnel : public net::TcpConn::Handler, public StreamHandler {
 public:
  // Called once when the tunnel ends; `error` empty on a clean close.
  using DoneFn = std::function<void(Tunnel*, const TunnelStats&, const std::string& error)>;

  Tunnel(uv_loop_t* loop, H2Conn* h2, int32_t sid, DoneFn done);
  // Attach the TCP leg (may come after the stream: inbound connects upstream
  // after the CONNECT). Bytes received meanwhile are queued. `skip_written`
  // bytes already queued on tcp (e.g. a SOCKS reply) are not HTTP/2 data.
  void attach(net::TcpConn* tcp, size_t skip_written = 0);
  // Tear down both legs now (policy revoked, shutdown): RST the stream, reset TCP.
  void abort(const std::string& why);
  int32_t sid() const { return sid_; }
  H2Conn* h2() const { return h2_; }
  const TunnelStats& stats() const { return stats_; }

  // TcpConn::Handler
  void on_read(net::TcpConn* c, const char* data, size_t len) override;
  void on_eof(net::TcpConn* c) override;
  void on_error(net::TcpConn* c, int uv_err) override;
  void on_written(net::TcpConn* c, size_t bytes) override;
  void on_drain(net::TcpConn* c) override;
  // StreamHandler
  void on_headers(H2Conn* c, int32_t sid, Headers&& h, bool end_stream) override {}
  void on_data(H2Conn* c, int32_t sid, const uint8_t* data, size_t len) override;
  void on_end_stream(H2Conn* c, int32_t sid) override;
  void on_stream_close(H2Conn* c, int32_t sid, uint32_t code) override;
  void on_send_drain(H2Conn* c, int32_t sid) override;
  void on_data_batch_end(H2Conn* c, int32_t sid) override { flush_to_tcp(); }

 private:
  ~Tunnel() override = default;
  void maybe_finish();
  void flush_to_tcp();
  void copy_chunks();
  void finish(const std::string& error);

  uv_loop_t* loop_;
  H2Conn* h2_;
  int32_t sid_;
  DoneFn done_;
  net::TcpConn* tcp_ = nullptr;
  TunnelStats stats_;
  std::string pending_;  // stream data not yet handed to the TCP leg (copied)
  // DATA chunks of the current read, pointing into H2Conn's decrypt buffer:
  // written with one writev at on_data_batch_end, copied only if the socket
  // does not take them all.
  std::vector<uv_buf_t> chunks_;
  bool peer_ended_ = false;  // END_STREAM received
  bool tcp_eof_ = false;     // TCP leg sent FIN
  bool stream_closed_ = false;
  bool finished_ = false;
  size_t skip_written_ = 0;
  uint64_t unacked_ = 0;  // written to TCP, not yet acknowledged to HTTP/2
  std::string error_;
};

}  // namespace warren::node
