// H2Conn without sockets: a client and a server connection joined by two
// in-memory pipes (the Output transport an H2Conn inside another stream
// uses). Trailers both ways, the default for handlers that do not take
// trailers, and input/output backpressure through the Output.
#include "warren/h2_conn.h"

#include <catch2/catch.hpp>
#include <map>
#include <string>

using namespace warren::h2;

namespace {

struct Pipe : H2Conn::Output {
  std::string bytes;
  size_t pretend_queued = 0;  // > 0: the carrier is "full"
  void write(std::string&& data) override { bytes += data; }
  size_t queued() const override { return pretend_queued + bytes.size(); }
};

struct Events {
  Headers head;
  Headers trailers;
  std::string body;
  bool ended = false;
  bool closed = false;
  uint32_t close_code = 0;
  int trailer_calls = 0;
};

// Records everything; acknowledges DATA at once unless told to hold it.
struct Recorder : StreamHandler {
  std::map<int32_t, Events> ev;
  bool hold = false;
  void on_headers(H2Conn*, int32_t sid, Headers&& h, bool end) override {
    ev[sid].head = std::move(h);
    if (end) ev[sid].ended = true;
  }
  void on_data(H2Conn* c, int32_t sid, const uint8_t* d, size_t n) override {
    ev[sid].body.append(reinterpret_cast<const char*>(d), n);
    if (!hold) c->consume(sid, n);
  }
  void on_trailers(H2Conn*, int32_t sid, Headers&& h) override {
    ev[sid].trailers = std::move(h);
    ev[sid].trailer_calls++;
  }
  void on_end_stream(H2Conn*, int32_t sid) override { ev[sid].ended = true; }
  void on_stream_close(H2Conn*, int32_t sid, uint32_t code) override {
    ev[sid].closed = true;
    ev[sid].close_code = code;
  }
};

// A handler written before trailers existed: it must still see the end.
struct OldHandler : StreamHandler {
  bool headers = false, ended = false;
  void on_headers(H2Conn*, int32_t, Headers&&, bool end) override {
    headers = true;
    ended |= end;
  }
  void on_data(H2Conn* c, int32_t sid, const uint8_t*, size_t n) override { c->consume(sid, n); }
  void on_end_stream(H2Conn*, int32_t) override { ended = true; }
  void on_stream_close(H2Conn*, int32_t, uint32_t) override {}
};

struct ServerOwner : H2Conn::Owner {
  StreamHandler* handler = nullptr;
  std::string closed;
  StreamHandler* on_new_stream(H2Conn*, int32_t) override { return handler; }
  void on_conn_close(H2Conn*, const std::string& reason) override { closed = reason; }
};
struct ClientOwner : H2Conn::Owner {
  bool ready = false;
  std::string closed;
  void on_ready(H2Conn*) override { ready = true; }
  void on_conn_close(H2Conn*, const std::string& reason) override { closed = reason; }
};

struct Pair {
  Pipe to_server, to_client;
  ServerOwner so;
  ClientOwner co;
  H2Conn server{nullptr, nullptr, true, &so};
  H2Conn client{nullptr, nullptr, false, &co};
  explicit Pair(StreamHandler* h) {
    so.handler = h;
    server.set_output(&to_client);
    client.set_output(&to_server);
    server.start();
    client.start();
  }
  // Moves bytes until both pipes are empty (or a side holds them back).
  void run() {
    for (int i = 0; i < 100; ++i) {
      bool moved = false;
      if (!to_server.bytes.empty()) {
        size_t n = server.receive(to_server.bytes.data(), to_server.bytes.size());
        to_server.bytes.erase(0, n);
        moved |= n > 0;
      }
      if (!to_client.bytes.empty()) {
        size_t n = client.receive(to_client.bytes.data(), to_client.bytes.size());
        to_client.bytes.erase(0, n);
        moved |= n > 0;
      }
      if (!moved) return;
    }
  }
};

const Headers kReq = {
    {":method", "POST"}, {":scheme", "http"}, {":authority", "a"}, {":path", "/x"}};

}  // namespace

TEST_CASE("h2_conn: trailers go both ways after the buffered DATA", "[h2_conn]") {
  Recorder srv, cli;
  Pair p(&srv);
  p.run();
  REQUIRE(p.co.ready);
  int32_t sid = p.client.submit_request(kReq, &cli, true);
  REQUIRE(sid > 0);
  p.client.send_data(sid, "hello ", 6);
  p.client.send_data(sid, "world", 5);
  p.client.end_stream_with_trailers(sid, {{"x-sum", "42"}, {"grpc-status", "0"}});
  p.run();
  auto& s = srv.ev[sid];
  CHECK(s.body == "hello world");
  CHECK(s.trailers == Headers{{"x-sum", "42"}, {"grpc-status", "0"}});
  CHECK(s.trailer_calls == 1);
  CHECK(s.ended);
  CHECK(*find_header(s.head, ":path") == "/x");

  REQUIRE(p.server.submit_response(sid, 200, true, {{"content-type", "application/grpc"}}));
  p.server.send_data(sid, "reply", 5);
  p.server.end_stream_with_trailers(sid, {{"grpc-status", "5"}, {"grpc-message", "not found"}});
  p.run();
  auto& c = cli.ev[sid];
  CHECK(*find_header(c.head, ":status") == "200");
  CHECK(c.body == "reply");
  CHECK(c.trailers == Headers{{"grpc-status", "5"}, {"grpc-message", "not found"}});
  CHECK(c.ended);
  CHECK(c.closed);
  CHECK(c.close_code == 0);
  CHECK(srv.ev[sid].closed);
}

TEST_CASE("h2_conn: trailers without DATA and an empty trailer list", "[h2_conn]") {
  Recorder srv, cli;
  Pair p(&srv);
  p.run();
  int32_t a = p.client.submit_request(kReq, &cli, true);
  p.client.end_stream_with_trailers(a, {{"x-only", "t"}});
  int32_t b = p.client.submit_request(kReq, &cli, true);
  p.client.send_data(b, "x", 1);
  p.client.end_stream_with_trailers(b, {});  // plain END_STREAM
  p.run();
  CHECK(srv.ev[a].body.empty());
  CHECK(srv.ev[a].trailers == Headers{{"x-only", "t"}});
  CHECK(srv.ev[a].ended);
  CHECK(srv.ev[b].body == "x");
  CHECK(srv.ev[b].trailer_calls == 0);
  CHECK(srv.ev[b].ended);
}

TEST_CASE("h2_conn: a handler without on_trailers still sees the end of the stream", "[h2_conn]") {
  OldHandler srv;
  Recorder cli;
  Pair p(&srv);
  p.run();
  int32_t sid = p.client.submit_request(kReq, &cli, true);
  p.client.send_data(sid, "abc", 3);
  p.client.end_stream_with_trailers(sid, {{"x-t", "1"}});
  p.run();
  CHECK(srv.headers);
  CHECK(srv.ended);
}

TEST_CASE("h2_conn: a full Output stops output and input until it drains", "[h2_conn]") {
  Recorder srv, cli;
  Pair p(&srv);
  p.run();
  int32_t sid = p.client.submit_request(kReq, &cli, true);
  p.run();
  REQUIRE(p.server.submit_response(sid, 200, true));
  p.run();
  // The server's carrier is full: what the server sends stays in the stream
  // buffer, and the client's bytes are not taken (they stay unacknowledged
  // with the carrier).
  p.to_client.pretend_queued = warren::net::TcpConn::kHighWatermark;
  std::string chunk(100000, 'r');
  p.server.send_data(sid, chunk.data(), chunk.size());
  CHECK(p.to_client.bytes.empty());
  CHECK(p.server.buffered(sid) == chunk.size());
  p.client.send_data(sid, "ping", 4);
  REQUIRE(!p.to_server.bytes.empty());
  CHECK(p.server.receive(p.to_server.bytes.data(), p.to_server.bytes.size()) == 0);
  CHECK(srv.ev[sid].body.empty());
  // Drained: both directions move again.
  p.to_client.pretend_queued = 0;
  p.server.output_drained();
  p.run();
  CHECK(srv.ev[sid].body == "ping");
  CHECK(cli.ev[sid].body == chunk);
}

TEST_CASE("h2_conn: unconsumed DATA closes the peer's window", "[h2_conn]") {
  Recorder srv, cli;
  srv.hold = true;  // never acknowledge
  warren::h2::H2Limits small;
  small.stream_window = 65535;
  Pipe to_server, to_client;
  ServerOwner so;
  so.handler = &srv;
  ClientOwner co;
  H2Conn server(nullptr, nullptr, true, &so, small);
  H2Conn client(nullptr, nullptr, false, &co);
  server.set_output(&to_client);
  client.set_output(&to_server);
  server.start();
  client.start();
  auto run = [&] {
    for (int i = 0; i < 100 && (!to_server.bytes.empty() || !to_client.bytes.empty()); ++i) {
      to_server.bytes.erase(0, server.receive(to_server.bytes.data(), to_server.bytes.size()));
      to_client.bytes.erase(0, client.receive(to_client.bytes.data(), to_client.bytes.size()));
    }
  };
  run();
  int32_t sid = client.submit_request(kReq, &cli, true);
  std::string big(200000, 'b');
  client.send_data(sid, big.data(), big.size());
  run();
  CHECK(srv.ev[sid].body.size() == 65535);  // the stream window, no more
  CHECK(client.buffered(sid) == big.size() - 65535);
  server.consume(sid, srv.ev[sid].body.size());
  run();
  CHECK(srv.ev[sid].body.size() == 2 * 65535);
}
