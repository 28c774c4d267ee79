// HTTP/2 inside a CONNECT stream: an inner cleartext HTTP/2 server runs over
// the tunnelled bytes (its output goes back into the CONNECT stream, its
// input is taken only while that output drains), and each of its streams is
// a Session in Mode::kH2Stream whose request takes the same path as an
// HTTP/1 one (session_route.cpp, session_response.cpp). Only how the
// request arrives, how the response is written and which upstream carries
// it differ; those are here.
#include "grpc.h"
#include "h2_message.h"
#include "session_impl.h"

namespace warren::waypoint {

using namespace session_detail;

// ---- the CONNECT stream ----

void Session::start_h2() {
  mode_ = Mode::kH2;
  h2_ = std::make_unique<H2Downstream>(*this);
  h2_->conn().start();  // cleartext: our SETTINGS go out now; the client's preface is in in_
}

void Session::process_h2() {
  h2::H2Conn& c = h2_->conn();
  if (!in_.empty() && !c.closed()) {
    size_t n = c.receive(in_.data(), in_.size());
    in_.erase(0, std::min(n, in_.size()));
  }
  if (mode_ != Mode::kH2) {  // the inner connection ended while reading
    in_.clear();
    return;
  }
  // The client closed its side: once every stream is answered, end ours.
  if (down_eof_ && in_.empty() && c.active_streams() == 0 && !c.closed())
    c.close("client closed the connection");
}

void Session::h2_output(std::string&& data) {
  send_down(data);
}

size_t Session::h2_output_queued() const {
  return closed_ ? 0 : conn_->buffered(sid_);
}

void Session::h2_stream_gone() {
  if (mode_ == Mode::kH2 && down_eof_) process();
}

void Session::h2_closed(const std::string& reason) {
  if (!h2_) return;
  if (!h2_->conn().closed()) {
    h2_->conn().close(reason);  // every inner stream gets on_stream_close; we come back here
    return;
  }
  if (mode_ != Mode::kH2) return;
  spdlog::debug("waypoint: HTTP/2 session from {} ended: {}", src_addr_.to_string(), reason);
  mode_ = Mode::kDone;
  if (closed_) return;
  if (unconsumed_) {
    conn_->consume(sid_, unconsumed_);
    unconsumed_ = 0;
  }
  end_down();  // after the GOAWAY the inner connection wrote
}

// ---- one inner stream: the request ----

void Session::h2_request(h2::Headers&& h, bool end_stream) {
  head_timer_.stop();
  if (ex_ || closed_) return;
  auto head = request_head_from_h2(h, end_stream);
  if (!head.ok()) {
    MessageHead bad;
    for (auto& [k, v] : h)
      if (k == ":method")
        bad.method = v;
      else if (k == ":path")
        bad.target = v;
      else if (k == ":authority")
        bad.headers.push_back({"host", v});
      else if (k == "content-type")
        bad.headers.push_back({k, v});
    begin_exchange(std::move(bad), "HTTP/2");
    ex_->request_complete = end_stream;
    return local_reply(400, "bad request: " + head.error().message + "\n", "-",
                       "http2_invalid_request");
  }
  begin_exchange(std::move(*head), "HTTP/2");
  ex_->request_complete = end_stream;
  dispatch();
  process();
}

void Session::h2_head_timeout() {
  if (closed_ || ex_) return;
  begin_exchange(MessageHead{}, "HTTP/2");
  ex_->request_complete = true;
  local_reply(408, "request header timeout\n", "-", "request_header_timeout");
}

void Session::process_h2_stream() {
  if (closed_) return;
  if (!ex_) {
    in_.clear();  // answered already: the rest of the body is not wanted
  } else if (leg_ && !in_.empty() && leg_->buffered() < kHigh) {
    std::string d;
    d.swap(in_);
    on_body(d);
  }
  if (ex_ && !ex_->local && leg_ && down_eof_ && in_.empty() && !ex_->request_complete)
    on_complete();
  // Acknowledge to the client only what went on (or was dropped).
  if (!closed_ && unconsumed_ && in_.empty()) {
    conn_->consume(sid_, unconsumed_);
    unconsumed_ = 0;
  }
}

void Session::start_h2_attempt(const config::Workload& ep, const SockAddr& addr) {
  auto& e = *ex_;
  hbone::PoolKey key{state_->self.identity, ep.identity, SockAddr{addr.ip, 15008},
                     state_->self.address};
  bool with_body = !e.request_complete || !e.body.empty();
  auto* st = new H2UpstreamStream(p_, this, h2_request_headers(e.fwd), with_body);
  if (!p_.h2_upstreams().assign(st, key, addr.to_string(), src_addr_.to_string(), e.cb)) {
    st->abandon();
    attempt_done(Outcome::connect_failure(), false);
    return local_reply(
        503, "upstream connect error or disconnect/reset before headers. reset reason: overflow",
        "UO", "upstream_reset_before_response_started{overflow}");
  }
  leg_ = st;
  if (!e.body.empty()) st->send(e.body);  // a retry: the body kept from the first attempt
  if (e.request_complete) st->end_with_trailers(e.trailers);
  process();  // the request body may go on now
}

void Session::mirror_h2(const MessageHead& h, const config::Workload& ep, const SockAddr& addr) {
  auto& e = *ex_;
  hbone::PoolKey key{state_->self.identity, ep.identity, SockAddr{addr.ip, 15008},
                     state_->self.address};
  auto* st = new H2UpstreamStream(p_, nullptr, h2_request_headers(h), !e.body.empty());
  if (!p_.h2_upstreams().assign(st, key, addr.to_string(), src_addr_.to_string(), nullptr)) {
    st->abandon();
    return;
  }
  if (!e.body.empty()) {
    st->send(e.body);
    st->end();
  }
}

// ---- the response ----

void Session::h2_response_head(MessageHead& h) {
  auto& e = *ex_;
  bool end = h.framing == BodyFraming::kNone || e.head.method == "HEAD";
  h2::Headers fields = h2_fields(h.headers);
  size_t bytes = 0;
  for (auto& [k, v] : fields) bytes += k.size() + v.size();
  e.rec.response_header_bytes = bytes;
  e.h2_resp_body = !end;
  if (end) down_ended_ = true;
  if (!conn_->submit_response(sid_, h.status, !end, fields))
    return shutdown("response not accepted");
}

void Session::h2_response_end() {
  auto& e = *ex_;
  if (!e.h2_resp_body) return;  // HEADERS carried END_STREAM (trailers-only)
  if (e.resp_trailers.empty()) return end_down();
  if (closed_ || down_ended_) return;
  down_ended_ = true;
  conn_->end_stream_with_trailers(sid_, h2_fields(e.resp_trailers));
}

void Session::h2_local_reply(int status, const std::string& body, const std::string& details,
                             const Headers& extra) {
  auto& e = *ex_;
  h2::Headers hs;
  auto add_extra = [&](std::initializer_list<std::string_view> skip) {
    for (const auto& f : extra) {
      bool skipped = false;
      for (auto s : skip) skipped |= iequals(f.name, s);
      if (!skipped) hs.emplace_back(to_lower(f.name), f.value);
    }
  };
  if (e.rec.grpc) {
    // gRPC "trailers-only": HTTP 200, the status in the one HEADERS frame.
    int gs = grpc_status_of(extra).value_or(grpc_status_for_http(status));
    std::string msg = body.empty() ? details : body;
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == '\r')) msg.pop_back();
    hs = {{"content-type", "application/grpc"}, {"grpc-status", std::to_string(gs)}};
    if (!msg.empty()) hs.emplace_back("grpc-message", grpc_message_encode(msg));
    add_extra({"content-type", "grpc-status", "grpc-message", "content-length"});
    hs.emplace_back("server", "warren-waypoint");
    e.rec.response_code = 200;
    e.rec.grpc_status = gs;
    e.rec.response_body_bytes = 0;
    down_ended_ = true;
    conn_->submit_response(sid_, 200, false, hs);
    return finish_exchange();
  }
  add_extra({"content-length"});
  bool has_ct = false;
  for (const auto& [k, v] : hs) has_ct |= k == "content-type";
  if (!body.empty() && !has_ct) hs.emplace_back("content-type", "text/plain");
  hs.emplace_back("server", "warren-waypoint");
  bool with_body = !body.empty() && e.head.method != "HEAD";
  hs.emplace_back("content-length", std::to_string(body.size()));
  e.rec.response_body_bytes = with_body ? body.size() : 0;
  if (!with_body) down_ended_ = true;
  conn_->submit_response(sid_, status, with_body, hs);
  if (with_body) {
    send_down(body);
    end_down();
  }
  finish_exchange();
}

}  // namespace warren::waypoint
