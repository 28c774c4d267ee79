// Relays between two plain TCP connections with half-close and backpressure
// (passthrough to destinations outside the mesh). Deletes itself when done.
#pragma once

#include <functional>
#include <string>

#include "warren/tcp.h"

namespace warren::node {

class PlainRelay {
 public:
  using DoneFn = std::function<void(uint64_t a_to_b, uint64_t b_to_a, const std::string& err)>;
  // `a` is the client side, `b` the upstream; both connected.
  static void start(net::TcpConn* a, net::TcpConn* b, DoneFn done);

 private:
  struct Leg : net::TcpConn::Handler {
    PlainRelay* r;
    net::TcpConn* self;
    net::TcpConn* other;
    uint64_t bytes = 0;
    bool eof = false;
    void on_read(net::TcpConn*, const char* d, size_t n) override;
    void on_eof(net::TcpConn*) override;
    void on_error(net::TcpConn*, int e) override;
    void on_drain(net::TcpConn*) override;
  };
  void finish(const std::string& err);
  Leg a_, b_;
  DoneFn done_;
  bool finished_ = false;
};

}  // namespace warren::node
