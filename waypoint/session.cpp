// The downstream CONNECT stream: protocol detection, the HTTP/1 request loop,
// flow control, and the end of the session.
#include "ext_authz_client.h"
#include "session_impl.h"

namespace warren::waypoint {

using namespace session_detail;

void Session::attempt_done(const Outcome& o, bool record) {
  if (!ex_ || !ex_->attempt_open) return;
  auto& e = *ex_;
  e.attempt_open = false;
  if (!e.cluster) return;
  if (auto a = e.cluster->active.find(e.uid); a != e.cluster->active.end() && a->second > 0) a->second--;
  if (record && e.cluster->outlier.record(e.uid, o, std::chrono::steady_clock::now()))
    spdlog::info("waypoint: endpoint {} ejected (outlier detection)", e.uid);
}

Session::Session(Proxy& p, h2::H2Conn* c, int32_t sid)
    : p_(p), conn_(c), sid_(sid), timeout_(p.loop()), retry_timer_(p.loop()), delay_timer_(p.loop()),
      head_timer_(p.loop()), duration_timer_(p.loop()) {}

Session::Session(Session& parent, h2::H2Conn* inner, int32_t sid)
    : p_(parent.p_), conn_(inner), sid_(sid), state_(parent.state_), mode_(Mode::kH2Stream),
      authority_(parent.authority_), target_(parent.target_), src_identity_(parent.src_identity_),
      src_addr_(parent.src_addr_), src_(parent.src_), timeout_(p_.loop()), retry_timer_(p_.loop()),
      delay_timer_(p_.loop()), head_timer_(p_.loop()), duration_timer_(p_.loop()),
      src_ip_text_(parent.src_ip_text_), dst_ip_text_(parent.dst_ip_text_) {
  parent_ = &parent;
  // The stream's header block must end within requestHeadersTimeout (Envoy's
  // request_headers_timeout, per stream from its first HEADERS frame).
  if (state_->request_headers_timeout.count() > 0) {
    Session* self = this;
    head_timer_.start(state_->request_headers_timeout.count(), 0, [self] { self->h2_head_timeout(); });
  }
}

Session::~Session() { leave_pending(); }

// ---- downstream stream ----

void Session::on_headers(h2::H2Conn* c, int32_t sid, h2::Headers&& h, bool end_stream) {
  if (mode_ == Mode::kH2Stream) return h2_request(std::move(h), end_stream);
  if (mode_ != Mode::kConnect) return;
  const auto* peer = p_.peer(c);
  state_ = p_.state();
  const std::string* method = h2::find_header(h, ":method");
  const std::string* auth = h2::find_header(h, ":authority");
  if (!method || *method != "CONNECT") return refuse(400, "method is not CONNECT");
  if (h2::find_header(h, ":path") || h2::find_header(h, ":scheme") || h2::find_header(h, ":protocol"))
    return refuse(400, "CONNECT must not carry :path, :scheme or :protocol");
  auto a = auth ? SockAddr::parse(*auth) : std::nullopt;
  if (!a || a->port == 0) return refuse(400, "malformed :authority (want ip:port)");
  std::string why;
  auto t = state_->target(*a, &why);
  if (!t) return refuse(400, why);
  if (end_stream) return refuse(400, "CONNECT stream ended before the tunnel opened");
  authority_ = *a;
  target_ = *t;
  src_identity_ = peer ? peer->identity : "";
  src_addr_ = peer ? peer->peer : SockAddr{};
  if (auto f = forwarded_for(h)) src_addr_ = *f;
  src_ = state_->mesh->workload_by_ip(src_addr_.ip);
  src_ip_text_ = src_addr_.ip.to_string();
  dst_ip_text_ = authority_.ip.to_string();
  mode_ = Mode::kDetect;
  conn_->submit_response(sid_, 200, true);
}

void Session::refuse(int status, const std::string& why) {
  spdlog::info("waypoint: refused CONNECT ({}): {}", status, why);
  mode_ = Mode::kDone;
  conn_->submit_response(sid_, status, false);
}

void Session::on_data(h2::H2Conn*, int32_t, const uint8_t* data, size_t len) {
  if (mode_ == Mode::kDone || mode_ == Mode::kConnect) {
    conn_->consume(sid_, len);
    return;
  }
  in_.append(reinterpret_cast<const char*>(data), len);
  unconsumed_ += len;
  process();
}

void Session::on_trailers(h2::H2Conn*, int32_t, h2::Headers&& h) {
  // Only an inner HTTP/2 stream has request trailers (the CONNECT stream's are ignored).
  if (mode_ != Mode::kH2Stream || !ex_ || ex_->local) return;
  ex_->trailers.clear();
  for (auto& [k, v] : h) ex_->trailers.push_back({std::move(k), std::move(v)});
}

void Session::on_end_stream(h2::H2Conn*, int32_t) {
  down_eof_ = true;
  process();
}

void Session::on_stream_close(h2::H2Conn*, int32_t, uint32_t) {
  bool child = mode_ == Mode::kH2Stream;
  closed_ = true;
  mode_ = Mode::kDone;
  // An HTTP/2 session's inner streams go with it (each gets on_stream_close).
  if (h2_) h2_closed("downstream stream closed");
  if (leg_) leg_->abandon();
  leg_ = nullptr;
  timeout_.stop();
  retry_timer_.stop();
  delay_timer_.stop();
  head_timer_.stop();
  duration_timer_.stop();
  ext_authz_.reset();
  leave_pending();
  attempt_done(Outcome::reset(), false);
  if (ex_ && !ex_->local) {
    ex_->rec.response_flags = "DC";
    ex_->rec.response_code = ex_->response_started ? ex_->rec.response_code : 0;
  }
  if (ex_ && child) {  // an HTTP/2 request the client cancelled: still one request in the metrics
    ex_->rec.duration =
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - ex_->t0);
    ex_->rec.attempts = ex_->attempts;
    p_.request_metrics().record(ex_->rec);
    p_.write_access_log(ex_->rec);
  }
  ex_.reset();
  if (!child) return p_.session_gone(this);
  Session* parent = parent_;
  parent_ = nullptr;
  if (parent) parent->h2_stream_gone();
  Session* self = this;
  defer(p_.loop(), [self] { delete self; });
}

void Session::on_send_drain(h2::H2Conn*, int32_t) {
  if (mode_ == Mode::kH2 && h2_) return process();  // the inner server may write (and read) again
  if (leg_) leg_->resume();
}

bool Session::downstream_full() const { return closed_ || conn_->buffered(sid_) > kHigh; }

void Session::send_down(std::string_view d) {
  if (closed_ || down_ended_ || d.empty()) return;
  conn_->send_data(sid_, d.data(), d.size());
}

void Session::end_down() {
  if (closed_ || down_ended_) return;
  down_ended_ = true;
  conn_->end_stream(sid_);
}

void Session::shutdown(const std::string& why) {
  if (closed_) return;
  spdlog::debug("waypoint: session to {} reset: {}", authority_.to_string(), why);
  mode_ = Mode::kDone;
  if (leg_) leg_->abandon();
  leg_ = nullptr;
  conn_->reset_stream(sid_, NGHTTP2_CANCEL);
}

void Session::process() {
  if (in_process_) {
    again_ = true;  // called from inside a parser callback: run again after it
    return;
  }
  in_process_ = true;
  do {
    again_ = false;
    process_once();
  } while (again_ && !closed_);
  in_process_ = false;
}

void Session::process_once() {
  if (closed_) return;
  if (mode_ == Mode::kDetect && !in_.empty()) {
    const size_t plen = sizeof(kH2Preface) - 1;
    size_t n = std::min(in_.size(), plen);
    if (in_.compare(0, n, kH2Preface, n) == 0) {
      if (n < plen) return;  // could still be the HTTP/2 preface
      start_h2();
    } else {
      Sniff k = sniff_http1(in_);
      if (k == Sniff::kMore) return;
      if (k == Sniff::kHttp1) {
        mode_ = Mode::kHttp1;
        parser_ = std::make_unique<Http1Parser>(Http1Parser::Kind::kRequest, *this);
        parser_->set_one_message_per_feed(true);
      } else {
        start_opaque();
      }
    }
  }
  if (mode_ == Mode::kDetect && down_eof_ && in_.empty()) return end_down();
  if (mode_ == Mode::kHttp1) {
    if (!ex_ && !in_.empty() && !head_timing_ && state_->request_headers_timeout.count() > 0) {
      // Slowloris: a request head must arrive whole within the timeout.
      head_timing_ = true;
      Session* self = this;
      head_timer_.start(state_->request_headers_timeout.count(), 0, [self] {
        if (self->closed_ || self->ex_) return;
        self->in_.clear();
        self->ex_ = std::make_unique<Exchange>();
        self->ex_->down_keep_alive = false;
        self->local_reply(408, "request header timeout\n", "-", "request_header_timeout");
      });
    }
    while (!in_.empty() && !closed_ && mode_ == Mode::kHttp1) {
      if (ex_ && ex_->request_complete) break;  // one request at a time
      if (ex_ && !ex_->local && !leg_) break;    // delayed or between attempts
      if (leg_ && leg_->buffered() > kHigh) break;
      auto r = parser_->feed(in_);
      if (!r.ok()) {
        const auto& f = parser_->failure();
        in_.clear();
        if (!ex_) ex_ = std::make_unique<Exchange>();
        ex_->down_keep_alive = false;
        local_reply(f.status ? f.status : 400, "bad request: " + f.detail + "\n", "-",
                    std::string("http1.") + http1_reason_name(f.reason));
        break;
      }
      in_.erase(0, *r);
      if (*r == 0 || parser_->upgraded() || parser_->closed()) break;
    }
    if (mode_ == Mode::kHttp1 && down_eof_ && !ex_ && (in_.empty() || parser_->closed())) end_down();
  }
  if (mode_ == Mode::kH2) process_h2();
  if (mode_ == Mode::kH2Stream) return process_h2_stream();
  if (mode_ == Mode::kOpaque && leg_ && !in_.empty() && leg_->buffered() < kHigh) {
    leg_->send(in_);
    in_.clear();
  }
  if (mode_ == Mode::kOpaque && down_eof_ && in_.empty() && leg_) leg_->end();
  if (!closed_ && unconsumed_ && in_.size() < kHigh) {
    conn_->consume(sid_, unconsumed_);
    unconsumed_ = 0;
  }
}

// ---- choosing an endpoint ----

}  // namespace warren::waypoint
