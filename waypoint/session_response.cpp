// Responses from upstream, retries, local replies and the end of an exchange.
#include "session_impl.h"

namespace warren::waypoint {

using namespace session_detail;

void Session::up_open(Leg*) {}

void Session::up_drained(Leg* l) {
  if (l == leg_) process();
}

void Session::up_failed(Leg* l, UpFailure f, const std::string& why) {
  if (l != leg_) return;
  leg_ = nullptr;
  if (closed_) return;
  if (mode_ == Mode::kOpaque) {
    if (why.empty()) return end_down();
    return shutdown(why);
  }
  if (!ex_) return;
  if (ex_->response_started) {
    if (why.empty()) return;  // the response was complete
    return shutdown(why);
  }
  attempt_done(f == UpFailure::kConnect ? Outcome::connect_failure()
               : f == UpFailure::kRefused ? Outcome::refused_stream()
                                          : Outcome::reset());
  retry_or_fail(f, why);
}

bool Session::maybe_retry(UpFailure f, int status, const std::string& why) {
  auto& e = *ex_;
  const RetryPolicy& rp = *e.retry;
  Outcome o = status ? Outcome::response(status)
              : f == UpFailure::kConnect ? Outcome::connect_failure()
              : f == UpFailure::kRefused ? Outcome::refused_stream()
                                         : Outcome::reset();
  // The retry slot of the previous retry is held until its attempt ended
  // (Envoy's RetryStateImpl::resetRetry at the next shouldRetry).
  if (e.retry_held) {
    e.cb->release_retry();
    e.retry_held = false;
  }
  if (!should_retry(rp, o, e.attempts - 1) || !e.body_kept || !e.request_complete || closed_) return false;
  if (e.cb) {
    // http.maxRetries or the retry budget: over it, no retry (the original error stands).
    if (!e.cb->admit_retry()) {
      spdlog::debug("waypoint: retry overflow ({} concurrent retries)", e.cb->active_retries());
      return false;
    }
    e.retry_held = true;
  }
  auto wait = backoff(e.attempts, static_cast<uint32_t>(p_.rng().next64()), rp.backoff_base);
  spdlog::debug("waypoint: retry {} of {} in {} ms: {}", e.attempts, rp.attempts, wait.count(),
                why.empty() ? std::to_string(status) : why);
  Session* self = this;
  retry_timer_.start(static_cast<uint64_t>(wait.count()), 0, [self] {
    if (self->ex_ && !self->closed_ && !self->ex_->response_started) self->start_attempt();
  });
  return true;
}

void Session::retry_or_fail(UpFailure f, const std::string& why) {
  if (maybe_retry(f, 0, why)) return;
  const char* flag = f == UpFailure::kConnect ? "UF" : "UC";
  if (ex_->attempts > 1) flag = "URX";
  local_reply(503, "upstream connect error or disconnect/reset before headers. reset reason: " + why, flag,
              f == UpFailure::kConnect ? "upstream_reset_before_response_started{connection_failure}"
                                       : "upstream_reset_before_response_started{remote_reset}");
}

void Session::up_response_head(Leg* l, MessageHead& h) {
  if (l != leg_ || !ex_ || closed_) return;
  auto& e = *ex_;
  {
    std::optional<int> grpc;
    if (auto gs = header_of(h.headers, "grpc-status"); !gs.empty()) grpc = std::atoi(gs.c_str());
    attempt_done(Outcome::response(h.status, grpc));
  }
  if (!e.response_started && maybe_retry(UpFailure::kReset, h.status, "")) {
    leg_->abandon();  // the rest of this response is not wanted
    leg_ = nullptr;
    return;
  }
  e.response_started = true;
  timeout_.stop();
  e.rec.response_code = h.status;
  e.rec.upstream_service_time =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - e.t0);
  if (e.attempts > 1 && e.rec.response_flags == "-" && h.status >= 500) e.rec.response_flags = "URX";
  e.rec.response_code_details = "via_upstream";
  if (e.sel.route) e.sel.route->response_headers.apply(h.headers);
  if (e.dest) e.dest->response.apply(h.headers);
  if (auto gs = header_of(h.headers, "grpc-status"); !gs.empty()) e.rec.grpc_status = std::atoi(gs.c_str());
  if (mode_ == Mode::kH2Stream) return h2_response_head(h);
  ForwardOptions o;
  o.framing = h.framing;
  o.content_length = h.content_length;
  bool head_req = e.head.method == "HEAD";
  if (h.framing == BodyFraming::kUntilClose) {
    if (e.head.version_minor >= 1) o.framing = BodyFraming::kChunked;
    else e.down_keep_alive = false;
  }
  if (h.status == 101) {
    o.upgrade = true;
    e.down_keep_alive = true;
  }
  if (!h.keep_alive && h.status != 101) {
    // The upstream connection ends; the client's may go on.
  }
  o.keep_alive = e.down_keep_alive;
  if (head_req && h.framing == BodyFraming::kUntilClose) o.framing = BodyFraming::kNone;
  // No body (Content-Length: 0 parses as none): say so, or an HTTP/1.1 client
  // reads until close.
  bool bodiless_status = h.status / 100 == 1 || h.status == 204 || h.status == 304;
  if (o.framing == BodyFraming::kNone && !bodiless_status && !head_req && h.status != 101) {
    o.framing = BodyFraming::kContentLength;
    o.content_length = 0;
  }
  e.chunk_down = o.framing == BodyFraming::kChunked && !head_req;
  auto bytes = serialize_response_head(h, o);
  if (!bytes.ok()) {
    e.response_started = false;
    leg_->abandon();
    leg_ = nullptr;
    return local_reply(502, "invalid response from upstream: " + bytes.error().message, "UPE",
                       "upstream_response_invalid");
  }
  e.rec.response_header_bytes = bytes->size();
  send_down(*bytes);
  if (h.status == 101) mode_ = Mode::kOpaque;
}

void Session::up_response_body(Leg* l, std::string_view data) {
  if (l != leg_ || !ex_) return;
  ex_->rec.response_body_bytes += data.size();
  if (ex_->chunk_down) send_down(encode_chunk(data));
  else send_down(data);
}

void Session::up_response_trailers(Leg* l, Headers& t) {
  if (l != leg_ || !ex_) return;
  if (auto gs = header_of(t, "grpc-status"); !gs.empty()) ex_->rec.grpc_status = std::atoi(gs.c_str());
  // HTTP/1.1 chunked trailers are not relayed to an HTTP/2 client (Envoy's
  // HTTP/1 codec drops them without enable_trailers, which Istio leaves off).
  if (mode_ == Mode::kH2Stream && !l->http2()) return;
  ex_->resp_trailers = std::move(t);
}

void Session::up_response_complete(Leg* l) {
  if (l != leg_ || !ex_) return;
  if (mode_ == Mode::kH2Stream) {
    // An HTTP/1.1 upstream connection goes back to the pool first: ending the
    // client's stream may close it (and this session) at once.
    if (!leg_->http2()) {
      auto* leg = static_cast<UpstreamLeg*>(leg_);
      leg_ = nullptr;
      if (leg->reusable() && ex_->request_complete) p_.park(leg);
      else leg->abandon();
    }
    h2_response_end();
    return finish_exchange();
  }
  if (ex_->chunk_down) {
    auto last = encode_last_chunk(ex_->resp_trailers);
    send_down(last.ok() ? *last : "0\r\n\r\n");
  }
  if (mode_ == Mode::kOpaque) {  // 101: from here on bytes flow as they come
    ex_.reset();
    return process();
  }
  finish_exchange();
}

void Session::up_raw(Leg* l, std::string_view data) {
  if (l == leg_) send_down(data);
}

void Session::up_raw_end(Leg* l) {
  if (l == leg_) end_down();
}

// ---- local replies and the end of an exchange ----

void Session::local_reply(int status, std::string body, const std::string& flags,
                          const std::string& details, const Headers& extra) {
  if (closed_) return;
  auto& e = *ex_;
  if (e.response_started) return shutdown(details);
  leave_pending();
  attempt_done(Outcome::timeout(), details == "upstream_response_timeout");
  if (leg_) leg_->abandon();
  leg_ = nullptr;
  timeout_.stop();
  retry_timer_.stop();
  delay_timer_.stop();
  duration_timer_.stop();
  e.local = true;
  e.response_started = true;
  e.rec.response_code = status;
  e.rec.response_flags = flags;
  e.rec.response_code_details = details;
  if (mode_ == Mode::kH2Stream) return h2_local_reply(status, body, details, extra);
  MessageHead r;
  r.request = false;
  r.status = status;
  r.reason = http::reason_phrase(status);
  r.headers = extra;
  bool has_ct = false;
  for (const auto& hd : extra) has_ct |= iequals(hd.name, "content-type");
  if (!body.empty() && !has_ct) r.headers.push_back({"content-type", "text/plain"});
  r.headers.push_back({"server", "warren-waypoint"});
  // A body still to come is not read: the connection closes after the reply.
  if (!e.request_complete && e.head.framing != BodyFraming::kNone) e.down_keep_alive = false;
  ForwardOptions o;
  o.framing = BodyFraming::kContentLength;
  o.content_length = body.size();
  o.keep_alive = e.down_keep_alive;
  o.strip_internal = false;
  auto head = serialize_response_head(r, o);
  if (!head.ok()) return shutdown(head.error().message);
  e.rec.response_header_bytes = head->size();
  e.rec.response_body_bytes = body.size();
  send_down(*head);
  if (e.head.method != "HEAD") send_down(body);
  if (e.request_complete || !e.down_keep_alive) finish_exchange();
}

void Session::leave_pending() {
  if (!ex_ || !ex_->pending) return;
  ex_->pending = false;
  p_.stop_waiting(ex_->cb.get(), this);
  ex_->cb->release_pending();
}

void Session::connection_available() {
  if (!ex_ || closed_ || !ex_->pending) return;
  ex_->pending = false;
  ex_->waited = true;
  ex_->cb->release_pending();
  start_attempt();
}

void Session::finish_exchange() {
  if (!ex_) return;
  auto& e = *ex_;
  timeout_.stop();
  retry_timer_.stop();
  delay_timer_.stop();
  duration_timer_.stop();
  e.rec.duration =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - e.t0);
  e.rec.attempts = e.attempts;
  if (e.rec.response_code_details.empty()) e.rec.response_code_details = "via_upstream";
  p_.request_metrics().record(e.rec);
  p_.write_access_log(e.rec);
  p_.export_span(e.rec, e.span);
  if (leg_) {
    if (leg_->http2()) {
      leg_->abandon();  // done with the stream (the connection stays pooled)
    } else {
      // An HTTP/1.1 upstream connection goes back to the pool when its
      // exchange was whole, whichever version the client spoke.
      auto* leg = static_cast<UpstreamLeg*>(leg_);
      if (leg->reusable() && e.request_complete) p_.park(leg);
      else leg->abandon();
    }
    leg_ = nullptr;
  }
  if (mode_ == Mode::kH2Stream) {
    // The stream ends with the response; a request body still coming is dropped.
    ex_.reset();
    return process();
  }
  bool keep = e.down_keep_alive && !parser_->closed() && !parser_->upgraded();
  ex_.reset();
  if (!keep) {
    in_.clear();
    return end_down();
  }
  process();
}

}  // namespace warren::waypoint
