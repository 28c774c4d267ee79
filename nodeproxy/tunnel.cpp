#include "tunnel.h"

#include "warren/buffer_pool.h"
#include "warren/defer.h"

namespace warren::node {

Tunnel::Tunnel(H2Conn* h2, int32_t sid, DoneFn done) : h2_(h2), sid_(sid), done_(std::move(done)) {}

void Tunnel::attach(net::TcpConn* tcp, size_t skip_written) {
  tcp_ = tcp;
  skip_written_ = skip_written;
  tcp_->set_handler(this);
  tcp_->set_nodelay(true);
  if (stream_closed_) return finish(error_.empty() ? "stream closed before connect" : error_);
  flush_to_tcp();
  if (peer_ended_) tcp_->shutdown();
  tcp_->start_read();
}

void Tunnel::on_read(net::TcpConn*, const char* data, size_t len) {
  stats_.tcp_to_h2 += len;
  h2_->send_data(sid_, data, len);
  if (tcp_ && h2_->buffered(sid_) >= H2Conn::kStreamHigh) tcp_->stop_read();
}

void Tunnel::on_send_drain(H2Conn*, int32_t) {
  if (tcp_ && !tcp_eof_ && !finished_) tcp_->start_read();
}

void Tunnel::on_eof(net::TcpConn*) {
  tcp_eof_ = true;
  h2_->end_stream(sid_);
  maybe_finish();
}

void Tunnel::on_error(net::TcpConn*, int uv_err) {
  error_ = std::string("application connection: ") + uv_strerror(uv_err);
  if (!stream_closed_) h2_->reset_stream(sid_, NGHTTP2_CANCEL);
  finish(error_);
}

void Tunnel::on_data(H2Conn*, int32_t, const uint8_t* data, size_t len) {
  // Batched: one socket write per read from the HBONE connection.
  if (pending_.capacity() == 0) pending_ = take_buffer();
  pending_.append(reinterpret_cast<const char*>(data), len);
}

void Tunnel::flush_to_tcp() {
  if (!tcp_ || pending_.empty()) return;
  unacked_ += pending_.size();
  stats_.h2_to_tcp += pending_.size();
  tcp_->write(std::move(pending_));
  pending_ = std::string();
}

void Tunnel::on_written(net::TcpConn*, size_t bytes) {
  if (skip_written_) {
    size_t s = std::min(skip_written_, bytes);
    skip_written_ -= s;
    bytes -= s;
  }
  size_t n = std::min<uint64_t>(bytes, unacked_);
  unacked_ -= n;
  if (n && !stream_closed_) h2_->consume(sid_, n);
}

void Tunnel::on_drain(net::TcpConn*) {}

void Tunnel::on_end_stream(H2Conn*, int32_t) {
  peer_ended_ = true;
  flush_to_tcp();
  if (tcp_) tcp_->shutdown();
  maybe_finish();
}

void Tunnel::on_stream_close(H2Conn*, int32_t, uint32_t code) {
  stream_closed_ = true;
  if (code != 0 && error_.empty())
    error_ = std::string("stream reset: ") + nghttp2_http2_strerror(code);
  if (code != 0 || !tcp_) return finish(error_);
  flush_to_tcp();
  // Clean close: both sides sent END_STREAM. Our TCP leg already saw EOF and
  // got its shutdown; let queued writes drain, then close.
  finish("");
}

void Tunnel::maybe_finish() {
  // Both directions ended: nghttp2 will close the stream once END_STREAM is
  // sent; on_stream_close finishes.
}

void Tunnel::abort(const std::string& why) {
  if (finished_) return;
  error_ = why;
  if (!stream_closed_) {
    h2_->detach(sid_);
    h2_->reset_stream(sid_, NGHTTP2_REFUSED_STREAM);
  }
  finish(why);
}

void Tunnel::finish(const std::string& error) {
  if (finished_) return;
  finished_ = true;
  if (!stream_closed_) h2_->detach(sid_);
  if (tcp_) {
    // A clean end keeps FIN ordering (shutdown already queued); errors reset.
    if (error.empty())
      tcp_->graceful_close();
    else
      tcp_->close(true);
    tcp_ = nullptr;
  }
  if (done_) done_(this, stats_, error);
  auto* self = this;
  delete self;
}

}  // namespace warren::node
