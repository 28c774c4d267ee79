#include "plain_relay.h"

namespace warren::node {

void PlainRelay::start(net::TcpConn* a, net::TcpConn* b, DoneFn done) {
  auto* r = new PlainRelay;
  r->done_ = std::move(done);
  r->a_.r = r;
  r->a_.self = a;
  r->a_.other = b;
  r->b_.r = r;
  r->b_.self = b;
  r->b_.other = a;
  a->set_handler(&r->a_);
  b->set_handler(&r->b_);
  a->set_nodelay(true);
  b->set_nodelay(true);
  a->start_read();
  b->start_read();
}

void PlainRelay::Leg::on_read(net::TcpConn*, const char* d, size_t n) {
  bytes += n;
  other->write(d, n);
  if (other->above_high_watermark()) self->stop_read();
}

void PlainRelay::Leg::on_drain(net::TcpConn*) {
  // `self` drained: the other side may read again.
  Leg& peer = (this == &r->a_) ? r->b_ : r->a_;
  if (!peer.eof) other->start_read();
}

void PlainRelay::Leg::on_eof(net::TcpConn*) {
  eof = true;
  other->shutdown();
  if (r->a_.eof && r->b_.eof) r->finish("");
}

void PlainRelay::Leg::on_error(net::TcpConn*, int e) {
  r->finish(std::string("socket: ") + uv_strerror(e));
}

void PlainRelay::finish(const std::string& err) {
  if (finished_) return;
  finished_ = true;
  if (err.empty()) {
    a_.self->graceful_close();
    b_.self->graceful_close();
  } else {
    a_.self->close(true);
    b_.self->close(true);
  }
  if (done_) done_(a_.bytes, b_.bytes, err);
  delete this;
}

}  // namespace warren::node
