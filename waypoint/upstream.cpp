#include "upstream.h"

#include <spdlog/spdlog.h>

#include "proxy.h"
#include "resilience.h"
#include "session.h"
#include "warren/defer.h"

namespace warren::waypoint {

UpstreamLeg::UpstreamLeg(Proxy& p, Session* owner, hbone::PoolKey key, std::string authority,
                         std::string forwarded_for, bool raw)
    : p_(p), owner_(owner), key_(std::move(key)), authority_(std::move(authority)),
      forwarded_(std::move(forwarded_for)), raw_(raw) {
  if (!raw_) {
    parser_ = std::make_unique<Http1Parser>(Http1Parser::Kind::kResponse, *this);
    parser_->set_one_message_per_feed(true);
  }
}

UpstreamLeg::~UpstreamLeg() {
  if (cb_) cb_->release_connection();
}

void UpstreamLeg::open() {
  state_ = State::kOpening;
  h2::Headers h = {{":method", "CONNECT"}, {":authority", authority_}};
  if (!forwarded_.empty()) h.push_back({"forwarded", "for=\"" + forwarded_ + "\""});
  UpstreamLeg* self = this;
  uint64_t t = p_.pool().open(
      key_, std::move(h), this,
      [self](h2::H2Conn* c, int32_t sid) {
        self->conn_ = c;
        self->sid_ = sid;
        self->ticket_ = 0;
        self->state_ = State::kConnecting;
      },
      [self](const std::string& why) {
        // May come from inside open(): report on the next loop turn.
        self->ticket_ = 0;
        defer(self->p_.loop(), [self, why] { self->fail(0, why); });
      });
  if (state_ == State::kOpening) ticket_ = t;
}

void UpstreamLeg::fail(int kind, const std::string& why) {
  if (state_ == State::kDone) return die();
  bool had_stream = state_ == State::kConnecting || state_ == State::kOpen;
  state_ = State::kDone;
  if (had_stream && conn_) {
    conn_->reset_stream(sid_, NGHTTP2_CANCEL);
    conn_->detach(sid_);
  }
  Session* o = owner_;
  owner_ = nullptr;
  if (o) o->up_failed(this, kind == 0 ? UpFailure::kConnect : kind == 2 ? UpFailure::kRefused : UpFailure::kReset, why);
  die();
}

void UpstreamLeg::die() {
  if (dying_) return;
  dying_ = true;
  if (cb_) {
    cb_->release_connection();  // the slot frees now, not when the object goes
    p_.wake_pending(cb_.get());  // a request waiting for a connection may open one
  }
  cb_.reset();
  state_ = State::kDone;
  owner_ = nullptr;
  if (parked) p_.unpark(this);
  UpstreamLeg* self = this;
  defer(p_.loop(), [self] { delete self; });
}

void UpstreamLeg::abandon() {
  owner_ = nullptr;
  switch (state_) {
    case State::kNew:
      return die();
    case State::kOpening:
      if (ticket_) {
        p_.pool().cancel(ticket_);
        return die();
      }
      return;  // a failure report is on its way; fail() then deletes
    case State::kConnecting:
    case State::kOpen:
      state_ = State::kDone;
      conn_->reset_stream(sid_, NGHTTP2_CANCEL);
      conn_->detach(sid_);
      return die();
    case State::kDone:
      return die();
  }
}

void UpstreamLeg::send(std::string_view data) {
  if (data.empty()) return;
  if (state_ != State::kOpen) {
    queued_.append(data);
    return;
  }
  conn_->send_data(sid_, data.data(), data.size());
}

void UpstreamLeg::end() {
  if (ended_) return;
  if (state_ != State::kOpen) {
    end_queued_ = true;
    return;
  }
  ended_ = true;
  conn_->end_stream(sid_);
}

size_t UpstreamLeg::buffered() const {
  size_t n = queued_.size();
  if (state_ == State::kOpen && conn_) n += conn_->buffered(sid_);
  return n;
}

void UpstreamLeg::expect_response(std::string_view method) {
  ++requests;
  in_response_ = true;
  if (parser_) parser_->set_request_method(method);
}

bool UpstreamLeg::reusable() const {
  return state_ == State::kOpen && !dying_ && !in_response_ && response_keep_alive_ && !peer_ended_ &&
         !ended_ && !raw_ && parser_ && !parser_->closed() && !parser_->upgraded() &&
         requests < kDefaultMaxRequestsPerConnection;
}

void UpstreamLeg::on_headers(h2::H2Conn*, int32_t, h2::Headers&& h, bool end_stream) {
  if (state_ != State::kConnecting) return;
  const std::string* st = h2::find_header(h, ":status");
  if (!st || *st != "200") {
    return fail(2, "CONNECT to " + authority_ + " answered " + (st ? *st : std::string("?")));
  }
  state_ = State::kOpen;
  if (!queued_.empty()) {
    std::string q = std::move(queued_);
    queued_.clear();
    conn_->send_data(sid_, q.data(), q.size());
  }
  if (end_queued_) end();
  if (owner_) owner_->up_open(this);
  if (end_stream) on_end_stream(conn_, sid_);
}

void UpstreamLeg::on_data(h2::H2Conn*, int32_t, const uint8_t* data, size_t len) {
  if (state_ != State::kOpen) return;
  if (!owner_) {  // nobody wants the answer (a mirror), or bytes on an idle leg
    conn_->consume(sid_, len);
    if (parked) abandon();
    return;
  }
  unparsed_.append(reinterpret_cast<const char*>(data), len);
  unconsumed_ += len;
  pump();
}

void UpstreamLeg::pump() {
  while (!unparsed_.empty() && state_ == State::kOpen && owner_ && !owner_->downstream_full()) {
    if (raw_) {
      std::string d = std::move(unparsed_);
      unparsed_.clear();
      owner_->up_raw(this, d);
      break;
    }
    auto r = parser_->feed(unparsed_);
    if (!r.ok()) {
      unparsed_.clear();
      return fail(1, "invalid response from " + authority_ + ": " + r.error().message);
    }
    if (state_ != State::kOpen) return;
    unparsed_.erase(0, *r);
    if (parser_->upgraded()) {
      raw_ = true;  // 101: the rest is the tunnel's
      continue;
    }
    if (*r == 0) {
      if (parser_->closed()) unparsed_.clear();  // bytes after a closing response
      break;
    }
  }
  if (state_ == State::kOpen && !dying_ && unparsed_.size() < kHigh && unconsumed_) {
    conn_->consume(sid_, unconsumed_);
    unconsumed_ = 0;
  }
  if (peer_ended_ && unparsed_.empty() && state_ == State::kOpen) {
    if (raw_) {
      if (owner_) owner_->up_raw_end(this);
    } else if (in_response_) {
      auto r = parser_->finish();  // a body read until close ends here
      if (!r.ok() && state_ == State::kOpen)
        return fail(1, "upstream " + authority_ + " closed mid-response: " + r.error().message);
    }
  }
}

void UpstreamLeg::resume() { pump(); }

void UpstreamLeg::on_end_stream(h2::H2Conn*, int32_t) {
  peer_ended_ = true;
  if (parked) return abandon();  // the upstream closed an idle connection
  pump();
}

void UpstreamLeg::on_stream_close(h2::H2Conn*, int32_t, uint32_t code) {
  if (state_ == State::kDone) return die();
  bool connecting = state_ == State::kConnecting;
  bool mid = in_response_ || connecting;
  state_ = State::kDone;
  Session* o = owner_;
  owner_ = nullptr;
  if (o) {
    if (raw_) o->up_raw_end(this);
    o->up_failed(this, connecting ? UpFailure::kConnect : UpFailure::kReset,
                 mid ? "upstream stream closed (code " + std::to_string(code) + ")" : "");
  }
  die();
}

void UpstreamLeg::on_send_drain(h2::H2Conn*, int32_t) {
  if (owner_) owner_->up_drained(this);
}

void UpstreamLeg::on_head(MessageHead head) {
  response_keep_alive_ = head.keep_alive;
  if (owner_) owner_->up_response_head(this, head);
}

void UpstreamLeg::on_body(std::string_view data) {
  if (owner_) owner_->up_response_body(this, data);
}

void UpstreamLeg::on_trailers(Headers trailers) {
  if (owner_) owner_->up_response_trailers(this, trailers);
}

void UpstreamLeg::on_complete() {
  in_response_ = false;
  if (owner_) owner_->up_response_complete(this);
}

}  // namespace warren::waypoint
