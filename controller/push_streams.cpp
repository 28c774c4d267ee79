#include "push_streams.h"

#include <spdlog/spdlog.h>

namespace warren::controller {

namespace {
constexpr size_t kSlice = 256 << 10;
constexpr size_t kBufferHigh = 1 << 20;
constexpr size_t kMaxCsrBody = 64 << 10;

std::string header(const h2::Headers& h, std::string_view name) {
  const std::string* v = h2::find_header(h, name);
  return v ? *v : std::string();
}

std::string peer_of(h2::H2Conn* c) { return c->tcp() ? c->tcp()->peer().to_string() : "?"; }
}  // namespace

std::string Caller::bearer(const h2::Headers& h) {
  std::string a = header(h, "authorization");
  if (a.rfind("Bearer ", 0) == 0) return a.substr(7);
  return "";
}

void RequestRouter::on_headers(h2::H2Conn* c, int32_t sid, h2::Headers&& h, bool end_stream) {
  std::string method = header(h, ":method"), path = header(h, ":path");
  h2::StreamHandler* next = nullptr;
  if (method == "POST" && path == push::kStreamPath)
    next = new PushStream(srv_, c, sid);
  else if (method == "POST" && path == push::kSignPath)
    next = new SignStream(srv_, c, sid);
  if (!next) {
    c->submit_response(sid, 404, false);
    return;  // this router stays the handler until the stream closes
  }
  c->set_stream_handler(sid, next);
  next->on_headers(c, sid, std::move(h), end_stream);
  delete this;
}

// ---- PushStream ---------------------------------------------------------------------------

void PushStream::fail(int status, const std::string& why) {
  spdlog::warn("push: refused stream from {} (node \"{}\"): {}", who_.peer, who_.claimed_node, why);
  conn_->submit_response(sid_, status, true, {{"content-type", "text/plain"}});
  std::string body = why + "\n";
  conn_->send_data(sid_, body.data(), body.size());
  conn_->end_stream(sid_);
}

void PushStream::on_headers(h2::H2Conn* c, int32_t sid, h2::Headers&& h, bool end_stream) {
  who_.peer = peer_of(c);
  who_.token = Caller::bearer(h);
  who_.claimed_node = header(h, "x-warren-node");
  who_.pod = header(h, "x-warren-pod");
  resume_epoch_ = header(h, "x-warren-epoch");
  std::string v = header(h, "x-warren-version");
  resume_version_ = v.empty() ? 0 : std::strtoull(v.c_str(), nullptr, 10);
  if (end_stream) return fail(400, "the configuration stream needs a request body");
  std::weak_ptr<bool> alive = alive_;
  srv_->auth_.authenticate(who_.token, who_.claimed_node, [this, alive](Result<Principal> r) {
    if (alive.expired()) return;
    if (!r) return fail(r.error().code == Errc::kPermissionDenied ? 403 : 401, r.error().message);
    who_.principal = std::move(*r);
    who_.node = who_.principal.name();
    if (who_.principal.is_waypoint()) {
      if (who_.pod.empty()) return fail(400, "a waypoint must name its pod (x-warren-pod)");
      who_.node += "/" + who_.pod;
      scope_ = WaypointScope{who_.principal.waypoint_ns, who_.principal.waypoint, who_.pod,
                             srv_->model_.options().root_namespace};
    }
    if (!conn_->submit_response(sid_, 200, true, {{"content-type", "application/x-warren-push"}}))
      return;
    open_ = true;
    sent_epoch_ = resume_epoch_;
    sent_version_ = resume_version_;
    srv_->stream_opened(this);
  });
}

void PushStream::pump_updates() {
  if (!open_ || in_pump_) return;
  if (q_bytes_ >= srv_->opts_.lag_bytes) return;  // caught up when the queue drains
  bool bundle = bundle_gen_ != srv_->bundle_gen_;
  if (sent_epoch_ == srv_->opts_.epoch && sent_version_ == srv_->version_ && !bundle) return;
  auto msg = srv_->catch_up(sent_epoch_, sent_version_, bundle, scope_ ? &*scope_ : nullptr);
  sent_epoch_ = srv_->opts_.epoch;
  sent_version_ = srv_->version_;
  bundle_gen_ = srv_->bundle_gen_;
  if (!msg) return;
  srv_->m_msgs_->with({msg->size() > 4 && msg->compare(4, 19, R"({"type":"snapshot",)") == 0
                           ? "snapshot"
                           : "delta"})
      ->inc();
  q_.emplace_back(std::move(msg), 0);
  q_bytes_ += q_.back().first->size();
  pump();
}

void PushStream::pump() {
  if (!open_ || in_pump_) return;
  in_pump_ = true;
  while (!q_.empty() && conn_->buffered(sid_) < kBufferHigh && !conn_->closed()) {
    auto& [msg, off] = q_.front();
    // A message bigger than a slice waits for a bulk slot (bounded memory
    // when many nodes need a snapshot at once); small deltas never wait.
    if (msg->size() > kSlice && !srv_->take_bulk(this)) break;
    size_t n = std::min(kSlice, msg->size() - off);
    conn_->send_data(sid_, msg->data() + off, n);
    off += n;
    q_bytes_ -= n;
    if (off == msg->size()) {
      bool big = msg->size() > kSlice;
      q_.pop_front();
      if (big) {
        in_pump_ = false;
        srv_->release_bulk(this);  // may wake other streams
        in_pump_ = true;
        if (!open_) break;
      }
    }
  }
  in_pump_ = false;
  if (q_.empty()) pump_updates();
}

void PushStream::on_data(h2::H2Conn* c, int32_t sid, const uint8_t* data, size_t len) {
  c->consume(sid, len);
  if (!open_) return;
  std::vector<std::string> msgs;
  if (auto r = reader_.feed(data, len, &msgs); !r) {
    spdlog::warn("push: node {}: {}", who_.node, r.error().message);
    c->reset_stream(sid, NGHTTP2_PROTOCOL_ERROR);
    return;
  }
  for (const auto& m : msgs) {
    auto j = nlohmann::json::parse(m, nullptr, false);
    if (!j.is_object() || !j.contains("type") || !j["version"].is_number_unsigned()) {
      spdlog::warn("push: node {} sent a malformed message", who_.node);
      continue;
    }
    std::map<std::string, std::string> rejected;
    if (j["type"] == "nack" && j.contains("rejected") && j["rejected"].is_object())
      for (const auto& [id, why] : j["rejected"].items())
        rejected[id] = why.is_string() ? why.get<std::string>() : why.dump();
    srv_->acked(this, j["version"].get<uint64_t>(), std::move(rejected));
  }
}

void PushStream::on_end_stream(h2::H2Conn* c, int32_t sid) { c->end_stream(sid); }

void PushStream::on_stream_close(h2::H2Conn*, int32_t, uint32_t code) {
  alive_.reset();
  srv_->stream_closed(this);
  delete this;
}

// ---- SignStream ---------------------------------------------------------------------------

void SignStream::on_headers(h2::H2Conn* c, int32_t sid, h2::Headers&& h, bool end_stream) {
  who_.peer = peer_of(c);
  who_.token = Caller::bearer(h);
  who_.claimed_node = header(h, "x-warren-node");
  body_done_ = end_stream;
  std::weak_ptr<bool> alive = alive_;
  srv_->auth_.authenticate(who_.token, who_.claimed_node, [this, alive](Result<Principal> r) {
    if (alive.expired()) return;
    auth_done_ = true;
    if (r) {
      who_.principal = std::move(*r);
      who_.node = who_.principal.name();
    } else
      auth_error_ = r.error().message;
    maybe_answer();
  });
}

void SignStream::on_data(h2::H2Conn* c, int32_t sid, const uint8_t* data, size_t len) {
  c->consume(sid, len);
  if (body_.size() + len > kMaxCsrBody)
    too_big_ = true;
  else
    body_.append(reinterpret_cast<const char*>(data), len);
}

void SignStream::on_end_stream(h2::H2Conn*, int32_t) {
  body_done_ = true;
  maybe_answer();
}

void SignStream::on_stream_close(h2::H2Conn*, int32_t, uint32_t) {
  alive_.reset();
  delete this;
}

void SignStream::respond(int status, const nlohmann::json& body) {
  answered_ = true;
  std::string s = body.dump();
  conn_->submit_response(sid_, status, true, {{"content-type", "application/json"}});
  conn_->send_data(sid_, s.data(), s.size());
  conn_->end_stream(sid_);
}

void SignStream::maybe_answer() {
  if (answered_ || !body_done_ || !auth_done_) return;
  auto refuse = [&](int status, const std::string& why) {
    srv_->m_csr_->with({"refused"})->inc();
    spdlog::warn("ca: refused a certificate for node \"{}\" ({}): {}", who_.claimed_node,
                 who_.peer, why);
    respond(status, {{"error", why}});
  };
  if (!auth_error_.empty()) return refuse(401, auth_error_);
  if (too_big_) return refuse(413, "request body over " + std::to_string(kMaxCsrBody) + " bytes");
  auto j = nlohmann::json::parse(body_, nullptr, false);
  if (!j.is_object() || !j.contains("identity") || !j["identity"].is_string() ||
      !j.contains("csr") || !j["csr"].is_string())
    return refuse(400, "expected {\"identity\": \"spiffe://...\", \"csr\": \"<PEM>\"}");
  std::string id = j["identity"], csr = j["csr"];
  if (const Principal& p = who_.principal; p.is_waypoint()) {
    std::string own = "spiffe://" + srv_->model_.options().trust_domain + "/ns/" + p.waypoint_ns + "/sa/" +
                      p.service_account;
    if (!p.service_account.empty() && id != own)
      return refuse(403, "the token of " + p.waypoint_ns + "/" + p.service_account + " may only obtain " + own);
    if (!srv_->model_.identity_of_waypoint(p.waypoint_ns, p.waypoint, id))
      return refuse(403, "no pod of waypoint " + p.waypoint_ns + "/" + p.waypoint + " runs as " + id);
  } else if (!srv_->model_.identity_on_node(who_.node, id)) {
    return refuse(403, "no pod running as " + id + " is scheduled on node " + who_.node);
  }
  auto chain = srv_->sign_(csr, id);
  if (!chain) return refuse(400, chain.error().message);
  srv_->m_csr_->with({"signed"})->inc();
  spdlog::info("ca: signed {} for node {}", id, who_.node);
  respond(200, {{"chain", *chain}, {"trustBundle", srv_->bundle_}});
}

}  // namespace warren::controller
