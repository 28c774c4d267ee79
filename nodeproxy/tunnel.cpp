#include "tunnel.h"

#include "warren/buffer_pool.h"
#include "warren/defer.h"

namespace warren::node {

Tunnel::Tunnel(uv_loop_t* loop, H2Conn* h2, int32_t sid, DoneFn done)
    : loop_(loop), h2_(h2), sid_(sid), done_(std::move(done)) {}

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
  if (finished_) return;
  stats_.tcp_to_h2 += len;
  h2_->send_data(sid_, data, len);
  if (tcp_ && h2_->buffered(sid_) >= H2Conn::kStreamHigh) tcp_->stop_read();
}

void Tunnel::on_send_drain(H2Conn*, int32_t) {
  if (tcp_ && !tcp_eof_ && !finished_) tcp_->start_read();
}

void Tunnel::on_eof(net::TcpConn*) {
  if (finished_) return;
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
  if (tcp_ && pending_.empty() && tcp_->queued() == 0) {
    chunks_.push_back(uv_buf_init(reinterpret_cast<char*>(const_cast<uint8_t*>(data)),
                                  static_cast<unsigned>(len)));
    return;
  }
  copy_chunks();
  if (pending_.capacity() == 0) pending_ = take_buffer();
  pending_.append(reinterpret_cast<const char*>(data), len);
}

void Tunnel::copy_chunks() {
  if (chunks_.empty()) return;
  if (pending_.capacity() == 0) pending_ = take_buffer();
  for (auto& b : chunks_) pending_.append(b.base, b.len);
  chunks_.clear();
}

void Tunnel::flush_to_tcp() {
  if (!tcp_) return copy_chunks();
  if (!chunks_.empty()) {
    // Straight from the decrypt buffer to the socket; what it does not take
    // now is copied and queued.
    size_t total = 0;
    for (auto& b : chunks_) total += b.len;
    size_t wrote = tcp_->try_write(chunks_.data(), static_cast<unsigned>(chunks_.size()));
    stats_.h2_to_tcp += wrote;
    size_t skip = wrote;
    for (auto& b : chunks_) {
      if (skip >= b.len) {
        skip -= b.len;
        continue;
      }
      if (pending_.capacity() == 0) pending_ = take_buffer(total - wrote);
      pending_.append(b.base + skip, b.len - skip);
      skip = 0;
    }
    chunks_.clear();
    if (wrote && !stream_closed_) h2_->consume(sid_, wrote);
  }
  if (pending_.empty()) return;
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
  chunks_.clear();  // they point into a buffer that is not ours
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
  // Any call into h2_ may end here (a flush that closes the stream or the
  // connection), so the caller's frame may still use `this`: free it on the
  // next loop turn. Every path checks finished_ or tcp_ first.
  auto* self = this;
  defer(loop_, [self] { delete self; });
}

}  // namespace warren::node
