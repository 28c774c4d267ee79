#include "ext_authz_client.h"

#include "http1.h"
#include "warren/defer.h"
#include "warren/tcp.h"

namespace warren::waypoint {

struct ExtAuthzCall::Impl : net::TcpConn::Handler, Http1Handler, std::enable_shared_from_this<ExtAuthzCall::Impl> {
  uv_loop_t* loop;
  net::TcpConn* tcp = nullptr;
  Timer timer;
  Done done;
  std::string request;
  Http1Parser parser{Http1Parser::Kind::kResponse, *this};
  int status = 0;
  Headers headers;
  std::string body;
  bool finished = false;
  static constexpr size_t kMaxBody = 64 << 10;

  Impl(uv_loop_t* l, Done d, std::string req) : loop(l), timer(l), done(std::move(d)), request(std::move(req)) {}

  void finish(const std::string& err) {
    if (finished) return;
    finished = true;
    timer.stop();
    if (tcp) {
      tcp->set_handler(nullptr);
      tcp->close(true);
      tcp = nullptr;
    }
    Done d = std::move(done);
    done = nullptr;
    auto keep = shared_from_this();  // the callback may drop the call
    if (d) d(status, std::move(headers), std::move(body), err);
  }
  void cancel() {
    done = nullptr;
    finish("cancelled");
  }

  void on_connect(net::TcpConn* t, int st) override {
    if (st != 0) return finish(std::string("connect: ") + uv_strerror(st));
    parser.set_request_method("GET");
    t->start_read();
    t->write(request.data(), request.size());
  }
  void on_read(net::TcpConn*, const char* data, size_t len) override {
    auto r = parser.feed(std::string_view(data, len));
    if (!r.ok()) return finish("invalid response: " + r.error().message);
  }
  void on_eof(net::TcpConn*) override {
    if (!finished) {
      auto r = parser.finish();
      finish(r.ok() && status ? "" : "connection closed before a response");
    }
  }
  void on_error(net::TcpConn*, int err) override { finish(std::string("connection: ") + uv_strerror(err)); }
  void on_head(MessageHead h) override {
    status = h.status;
    headers = std::move(h.headers);
  }
  void on_body(std::string_view d) override {
    if (body.size() < kMaxBody) body.append(d.substr(0, kMaxBody - body.size()));
  }
  void on_complete() override { finish(""); }
};

std::unique_ptr<ExtAuthzCall> ExtAuthzCall::start(uv_loop_t* loop, const SockAddr& addr, std::string request,
                                                  std::chrono::milliseconds timeout, Done done) {
  auto impl = std::make_shared<Impl>(loop, std::move(done), std::move(request));
  auto call = std::unique_ptr<ExtAuthzCall>(new ExtAuthzCall(impl));
  auto fail_later = [&](std::string why) {
    std::weak_ptr<Impl> w = impl;
    defer(loop, [w, why] {
      if (auto i = w.lock()) i->finish(why);
    });
    return std::move(call);
  };
  auto tcp = net::TcpConn::create_for(loop, addr, 0, std::nullopt);
  if (!tcp.ok()) return fail_later(tcp.error().message);
  impl->tcp = *tcp;
  impl->tcp->set_handler(impl.get());
  if (int r = impl->tcp->connect(addr); r != 0) return fail_later(std::string("connect: ") + uv_strerror(r));
  Impl* raw = impl.get();
  impl->timer.start(static_cast<uint64_t>(timeout.count()), 0, [raw] { raw->finish("timed out"); });
  return call;
}

ExtAuthzCall::~ExtAuthzCall() {
  if (impl_ && !impl_->finished) impl_->cancel();
}

}  // namespace warren::waypoint
