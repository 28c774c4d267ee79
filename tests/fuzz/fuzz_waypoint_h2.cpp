// The waypoint's inner HTTP/2 server path: raw bytes from a client inside a
// CONNECT stream go to a cleartext server H2Conn whose output goes to an
// Output (the CONNECT stream) that fills up and drains as the input says;
// each stream's request is decoded as the waypoint decodes it
// (request_head_from_h2, trailers_from_h2), turned into the head an upstream
// would get (h2_request_headers), and answered as the waypoint answers: a
// gRPC trailers-only reply, or a body with trailers.
//
// Input: byte 0 bit 0 prepends the client preface, bits 1-7 choose when the
// Output pretends to be full; byte 1 chooses the read size; the rest is the
// client's bytes.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "grpc.h"
#include "h2_message.h"
#include "warren/h2_conn.h"
#include "warren/tcp.h"

using namespace warren;
using namespace warren::waypoint;

namespace {

struct Carrier : h2::H2Conn::Output {
  std::string bytes;
  bool full = false;
  void write(std::string&& d) override {
    bytes += d;
    if (bytes.size() > (1u << 20)) bytes.erase(0, bytes.size() - 1024);  // the client reads
  }
  size_t queued() const override { return full ? net::TcpConn::kHighWatermark : 0; }
};

struct Stream : h2::StreamHandler {
  bool grpc = false;
  bool answered = false;
  void on_headers(h2::H2Conn* c, int32_t sid, h2::Headers&& h, bool end) override {
    auto head = request_head_from_h2(h, end);
    if (!head.ok()) {
      c->reset_stream(sid, NGHTTP2_PROTOCOL_ERROR);
      return;
    }
    grpc = is_grpc_request(head->headers);
    h2::Headers up = h2_request_headers(*head);
    if (up.size() < 4 || up[0].first != ":method") abort();
    for (const auto& [k, v] : up) {
      if (k == "connection" || k == "transfer-encoding" || k == "upgrade" || k == "keep-alive")
        abort();
      if (k.rfind("x-warren-", 0) == 0) abort();
    }
    if (grpc) {
      int gs = grpc_status_for_http(403);
      c->submit_response(sid, 200, false,
                         {{"content-type", "application/grpc"},
                          {"grpc-status", std::to_string(gs)},
                          {"grpc-message", grpc_message_encode(head->target)}});
      answered = true;
    } else {
      c->submit_response(sid, 200, true, {{"content-type", "text/plain"}});
    }
  }
  void on_data(h2::H2Conn* c, int32_t sid, const uint8_t* d, size_t n) override {
    if (!grpc) c->send_data(sid, reinterpret_cast<const char*>(d), n);
    c->consume(sid, n);
  }
  void on_trailers(h2::H2Conn*, int32_t, h2::Headers&& h) override { (void)trailers_from_h2(h); }
  void on_end_stream(h2::H2Conn* c, int32_t sid) override {
    if (!grpc) c->end_stream_with_trailers(sid, {{"grpc-status", "0"}});
  }
  void on_stream_close(h2::H2Conn*, int32_t, uint32_t) override { delete this; }
};

struct Owner : h2::H2Conn::Owner {
  h2::StreamHandler* on_new_stream(h2::H2Conn*, int32_t) override { return new Stream; }
  void on_conn_close(h2::H2Conn*, const std::string&) override {}
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  Owner owner;
  Carrier carrier;
  h2::H2Limits limits;
  limits.stream_window = 1 << 20;
  limits.conn_window = 4 << 20;
  limits.max_frame = 16384;
  h2::H2Conn conn(nullptr, nullptr, /*server=*/true, &owner, limits);
  conn.set_output(&carrier);
  conn.start();
  std::string in;
  if (data[0] & 1) in.assign(NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN);
  in.append(reinterpret_cast<const char*>(data + 2), size - 2);
  uint8_t pattern = data[0] >> 1;
  size_t chunk = (data[1] % 64) + 1;
  size_t off = 0;
  for (int round = 0; off < in.size() && !conn.closed() && round < 100000; ++round) {
    // The carrier is full on some rounds: the connection takes nothing then.
    bool full = (pattern >> (round % 7)) & 1;
    carrier.full = full;
    size_t n = conn.receive(in.data() + off, std::min(chunk, in.size() - off));
    if (full && n != 0) abort();  // input must wait while output cannot go
    if (full) {
      carrier.full = false;
      conn.output_drained();
      continue;
    }
    off += n;
  }
  conn.close("done");
  return 0;
}
