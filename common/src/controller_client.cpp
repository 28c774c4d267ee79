#include "warren/controller_client.h"

#include <spdlog/spdlog.h>

#include <fstream>
#include <random>
#include <sstream>

#include "warren/certs.h"
#include "warren/config.h"

namespace warren::push {

Result<void> ControllerClientOptions::set_address(const std::string& spec) {
  if (auto a = SockAddr::parse(spec)) {
    address = *a;
    host.clear();
    return {};
  }
  auto named = config::parse_host_port(spec);
  if (!named)
    return make_error(Errc::kInvalidArgument, "controller address \"" + spec + "\" is not IP:port or NAME:port");
  host = named->first;
  port = named->second;
  return {};
}

namespace {

std::string read_token(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string t = ss.str();
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
  return t;
}

}  // namespace

// Waits for the TCP connect, then hands the socket to the HTTP/2 connection.
struct ControllerClient::ConnectWatch : net::TcpConn::Handler {
  ControllerClient* cc;
  void on_read(net::TcpConn*, const char*, size_t) override {}
  void on_eof(net::TcpConn*) override {}
  void on_error(net::TcpConn*, int) override {}
  void on_connect(net::TcpConn* t, int status) override {
    cc->connecting_ = false;
    h2::H2Conn* c = cc->conn_.get();
    t->set_handler(c);
    if (status != 0)
      c->close(std::string("connect: ") + uv_strerror(status));
    else
      c->start();
  }
};

struct ControllerClient::Csr {
  std::string id, pem;
  std::function<void(Result<std::string>)> done;
  void finish(Result<std::string> r) {
    if (done) {
      auto d = std::move(done);
      done = nullptr;
      d(std::move(r));
    }
  }
};

// One signing request's stream: collects the JSON answer.
struct ControllerClient::CsrHandler : h2::StreamHandler {
  std::shared_ptr<Csr> r;
  int status = 0;
  std::string body;
  explicit CsrHandler(std::shared_ptr<Csr> r) : r(std::move(r)) {}
  void on_headers(h2::H2Conn*, int32_t, h2::Headers&& h, bool) override {
    if (const auto* s = h2::find_header(h, ":status")) status = std::atoi(s->c_str());
  }
  void on_data(h2::H2Conn* c, int32_t sid, const uint8_t* d, size_t n) override {
    c->consume(sid, n);
    if (body.size() < (1 << 20)) body.append(reinterpret_cast<const char*>(d), n);
  }
  void on_end_stream(h2::H2Conn*, int32_t) override {
    auto j = nlohmann::json::parse(body, nullptr, false);
    if (status == 200 && j.is_object() && j.contains("chain") && j["chain"].is_string())
      r->finish(j["chain"].get<std::string>());
    else if (j.is_object() && j.contains("error") && j["error"].is_string())
      r->finish(make_error(status == 403 ? Errc::kPermissionDenied : Errc::kInvalidArgument,
                           "controller refused (" + std::to_string(status) +
                               "): " + j["error"].get<std::string>()));
    else
      r->finish(make_error(Errc::kUnavailable,
                           "controller answered " + std::to_string(status) + " without a chain"));
  }
  void on_stream_close(h2::H2Conn*, int32_t, uint32_t code) override {
    r->finish(make_error(Errc::kUnavailable, "signing request stream closed (code " +
                                                 std::to_string(code) + ")"));
    delete this;
  }
};

ControllerClient::ControllerClient(uv_loop_t* loop, ControllerClientOptions opts, ApplyFn apply)
    : loop_(loop),
      opts_(std::move(opts)),
      apply_(std::move(apply)),
      retry_(loop),
      connect_timer_(loop),
      watch_(std::make_unique<ConnectWatch>()) {}

ControllerClient::~ControllerClient() {
  stop();
  alive_.reset();
}

Result<void> ControllerClient::load_ca() {
  auto roots = certs::read_certs_file(opts_.ca_file);
  if (!roots) return make_error(roots.error().code, opts_.ca_file + ": " + roots.error().message);
  std::vector<X509*> ptrs;
  for (auto& r : *roots) ptrs.push_back(r.get());
  auto ctx = tls::make_push_client_ctx(ptrs);
  if (!ctx) return ctx.error();
  ctx_ = std::move(*ctx);
  return {};
}

void ControllerClient::start() {
  stopped_ = false;
  connect();
}

void ControllerClient::stop() {
  stopped_ = true;
  retry_.stop();
  connect_timer_.stop();
  if (conn_) conn_->close("node stopping");
}

void ControllerClient::schedule_reconnect(const std::string& why) {
  last_error_ = why;
  auto waiting = std::move(csr_waiting_);
  csr_waiting_.clear();
  for (auto& r : waiting) r->finish(make_error(Errc::kUnavailable, "controller unreachable: " + why));
  if (stopped_) return;
  backoff_ms_ = backoff_ms_ ? std::min(backoff_ms_ * 2, opts_.backoff_max_ms) : opts_.backoff_min_ms;
  static thread_local std::mt19937 rng{std::random_device{}()};
  uint32_t wait = backoff_ms_ / 2 + rng() % (backoff_ms_ / 2 + 1);
  spdlog::warn("controller {}: {}; retrying in {} ms", target(), why, wait);
  retry_.start(wait, 0, [this] { connect(); });
}

std::string ControllerClient::target() const {
  return opts_.host.empty() ? opts_.address.to_string() : opts_.host + ":" + std::to_string(opts_.port);
}

namespace {
struct Resolve {
  uv_getaddrinfo_t req;
  std::function<void(int, addrinfo*)> done;
};
}  // namespace

void ControllerClient::connect() {
  if (stopped_ || conn_ || resolving_) return;
  if (auto r = load_ca(); !r) return schedule_reconnect(r.error().message);
  token_ = read_token(opts_.token_file);
  if (token_.empty()) return schedule_reconnect("no token in " + opts_.token_file);
  if (opts_.host.empty()) return connect_to(opts_.address);
  // A name: resolved on libuv's thread pool, every attempt (the Service's
  // address may change); the first IPv4 address returned, else the first.
  auto* r = new Resolve;
  std::weak_ptr<bool> alive = alive_;
  resolving_ = true;
  r->done = [this, alive](int status, addrinfo* res) {
    if (alive.expired()) return;
    resolving_ = false;
    if (stopped_) return;
    if (status != 0 || !res)
      return schedule_reconnect("resolving " + opts_.host + ": " + uv_strerror(status));
    const addrinfo* pick = res;  // IPv4 first: the nodes' fabric is
    for (const addrinfo* i = res; i; i = i->ai_next)
      if (i->ai_family == AF_INET) {
        pick = i;
        break;
      }
    SockAddr a = SockAddr::from_sockaddr(pick->ai_addr);
    connect_to(SockAddr{a.ip, opts_.port});
  };
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  int rc = uv_getaddrinfo(
      loop_, &r->req,
      [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
        auto* r = reinterpret_cast<Resolve*>(req);
        r->done(status, res);
        uv_freeaddrinfo(res);
        delete r;
      },
      opts_.host.c_str(), nullptr, &hints);
  if (rc != 0) {
    resolving_ = false;
    delete r;
    schedule_reconnect("resolving " + opts_.host + ": " + uv_strerror(rc));
  }
}

void ControllerClient::connect_to(const SockAddr& addr) {
  auto tcp = net::TcpConn::create_for(loop_, addr, 0, std::nullopt);
  if (!tcp) return schedule_reconnect(tcp.error().message);
  (*tcp)->set_nodelay(true);
  conn_ = std::make_unique<h2::H2Conn>(*tcp, ctx_.get(), /*server=*/false, this);
  watch_->cc = this;
  connecting_ = true;
  (*tcp)->set_handler(watch_.get());
  if (int r = (*tcp)->connect(addr); r != 0) {
    connecting_ = false;
    (*tcp)->set_handler(conn_.get());
    conn_->close(std::string("connect: ") + uv_strerror(r));
    return;
  }
  connect_timer_.start(opts_.connect_timeout_ms, 0, [this] {
    if (!conn_ || conn_->ready()) return;
    if (connecting_ && conn_->tcp()) conn_->tcp()->set_handler(conn_.get());
    connecting_ = false;
    conn_->close("connect timed out");
  });
}

h2::Headers ControllerClient::base_headers(const char* path) {
  h2::Headers h{{":method", "POST"},
                {":scheme", "https"},
                {":authority", target()},
                {":path", path},
                {"authorization", "Bearer " + token_},
                {"x-warren-node", opts_.node},
                {"content-type", "application/x-warren-push"}};
  if (!opts_.pod.empty()) h.push_back({"x-warren-pod", opts_.pod});
  return h;
}

void ControllerClient::on_ready(h2::H2Conn* c) {
  connect_timer_.stop();
  std::string want = "spiffe://" + opts_.trust_domain + "/ns/" + push::kControllerNs + "/sa/" +
                     push::kControllerSa;
  if (!tls::check_peer_identity(c->tls().ssl(), want)) {
    auto got = tls::peer_spiffe_id(c->tls().ssl());
    c->close("controller identity mismatch: expected " + want + ", got " +
             (got ? *got : got.error().message));
    return;
  }
  auto h = base_headers(push::kStreamPath);
  if (!epoch_.empty()) {
    h.push_back({"x-warren-epoch", epoch_});
    h.push_back({"x-warren-version", std::to_string(version_)});
  }
  reader_ = push::FrameReader();
  status_ = 0;
  sid_ = c->submit_request(h, this, true);
  if (sid_ < 0) return c->close("submitting the configuration stream failed");
  while (!csr_waiting_.empty()) {
    submit_csr(csr_waiting_.front());
    csr_waiting_.pop_front();
  }
}

void ControllerClient::on_conn_close(h2::H2Conn* c, const std::string& reason) {
  bool was_open = stream_open_;
  stream_open_ = false;
  sid_ = -1;
  auto owned = std::make_shared<std::unique_ptr<h2::H2Conn>>(std::move(conn_));
  defer(loop_, [owned] { owned->reset(); });
  if (was_open && on_connection) on_connection(false);
  if (stopped_) return;
  schedule_reconnect(reason.empty() ? "connection closed" : reason);
}

void ControllerClient::on_headers(h2::H2Conn* c, int32_t sid, h2::Headers&& h, bool end_stream) {
  if (const auto* s = h2::find_header(h, ":status")) status_ = std::atoi(s->c_str());
  if (status_ == 200) {
    stream_open_ = true;
    backoff_ms_ = 0;
    last_error_.clear();
    spdlog::info("controller {}: configuration stream open", target());
    if (on_connection) on_connection(true);
  }
}

void ControllerClient::on_data(h2::H2Conn* c, int32_t sid, const uint8_t* data, size_t len) {
  c->consume(sid, len);
  if (status_ != 200) {
    last_error_.append(reinterpret_cast<const char*>(data), std::min<size_t>(len, 512));
    return;
  }
  std::vector<std::string> msgs;
  if (auto r = reader_.feed(data, len, &msgs); !r) {
    c->close(r.error().message);
    return;
  }
  for (const auto& m : msgs) handle(m);
}

void ControllerClient::on_end_stream(h2::H2Conn* c, int32_t sid) {
  while (!last_error_.empty() && (last_error_.back() == '\n' || last_error_.back() == '\r'))
    last_error_.pop_back();
  std::string why = status_ == 200 ? "controller ended the configuration stream"
                                   : "controller refused the stream (" + std::to_string(status_) +
                                         "): " + last_error_;
  c->close(why);
}

void ControllerClient::on_stream_close(h2::H2Conn* c, int32_t sid, uint32_t code) {
  if (!c->closed()) c->close("configuration stream closed (code " + std::to_string(code) + ")");
}

void ControllerClient::send(const nlohmann::json& j) {
  if (!conn_ || sid_ < 0) return;
  std::string s;
  push::append_frame(&s, j.dump());
  conn_->send_data(sid_, s.data(), s.size());
}

void ControllerClient::handle_streamed(const std::string& msg) {
  // Header fields come before the resources (push_server.cpp writes them so).
  std::string type, epoch, section, id;
  uint64_t version = 0, since = 0;
  bool have_version = false, started = false, refuse = false, snapshot = false;
  auto start = [&]() {
    if (started || refuse) return;
    snapshot = type == "snapshot";
    if ((type != "snapshot" && type != "delta") || !have_version ||
        (type == "delta" && (epoch != epoch_ || since != version_))) {
      refuse = true;  // handled below, as handle() does
      return;
    }
    started = true;
    if (stream_.begin) stream_.begin(snapshot);
  };
  auto cb = [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (depth == 1 && ev == E::key) {
      section = parsed.get<std::string>();
    } else if (depth == 1 && ev == E::value) {
      if (section == "type" && parsed.is_string()) type = parsed.get<std::string>();
      if (section == "epoch" && parsed.is_string()) epoch = parsed.get<std::string>();
      if (section == "version" && parsed.is_number_unsigned()) version = parsed.get<uint64_t>(), have_version = true;
      if (section == "since" && parsed.is_number_unsigned()) since = parsed.get<uint64_t>();
    } else if (depth == 2 && (section == "resources" || section == "upserts")) {
      if (ev == E::key) {
        id = parsed.get<std::string>();
      } else if (ev == E::object_end || ev == E::value || ev == E::array_end) {
        start();
        if (started) stream_.resource(id, std::move(parsed));
        return false;  // not kept in the message
      }
    }
    return true;
  };
  auto j = nlohmann::json::parse(msg, cb, false);
  if (!j.is_object() || !j.contains("type") || !j.contains("version") || !j["version"].is_number_unsigned()) {
    spdlog::warn("controller: malformed message ignored");
    if (started && conn_) {  // the node holds part of it: start over
      epoch_.clear();
      conn_->close("malformed message");
    }
    return;
  }
  ++messages_;
  if (type != "snapshot" && type != "delta") {
    spdlog::warn("controller: unknown message type \"{}\" ignored", type);
    return;
  }
  start();
  if (refuse) {
    spdlog::warn("controller: delta {}->{} does not follow {}@{}; reconnecting", since, version, epoch_, version_);
    epoch_.clear();
    if (conn_) conn_->close("out-of-order delta");
    return;
  }
  if (j.contains("trustBundle") && j["trustBundle"].is_string() && on_trust_bundle)
    on_trust_bundle(j["trustBundle"].get<std::string>());
  Update u;
  u.snapshot = snapshot;
  u.streamed = true;
  deliver(std::move(u), j, epoch, version);
}

// The message is applied (all of it, or all but `rejected`): the node is now
// at this version; the controller hears ack or nack.
void ControllerClient::answer(const std::string& epoch, uint64_t version,
                              const std::map<std::string, std::string>& rejected) {
  epoch_ = epoch;
  version_ = version;
  if (rejected.empty())
    send({{"type", "ack"}, {"version", version}});
  else
    send({{"type", "nack"}, {"version", version}, {"rejected", rejected}});
}

void ControllerClient::deliver(Update&& u, nlohmann::json& msg, const std::string& epoch, uint64_t version) {
  if (msg.contains("removes") && msg["removes"].is_array())
    for (const auto& id : msg["removes"])
      if (id.is_string()) u.removes.push_back(id.get<std::string>());
  msg = nlohmann::json();  // free the message before the node builds its snapshot
  auto rejected = update_(std::move(u));
  answer(epoch, version, rejected);
}

void ControllerClient::handle(const std::string& msg) {
  if (update_ && stream_.resource) return handle_streamed(msg);
  auto j = nlohmann::json::parse(msg, nullptr, false);
  if (!j.is_object() || !j.contains("type") || !j.contains("version") ||
      !j["version"].is_number_unsigned()) {
    spdlog::warn("controller: malformed message ignored");
    return;
  }
  ++messages_;
  uint64_t version = j["version"];
  std::string type = j["type"].is_string() ? j["type"].get<std::string>() : "";
  std::string epoch = j.value("epoch", "");
  if (type != "snapshot" && type != "delta") {
    spdlog::warn("controller: unknown message type \"{}\" ignored", type);
    return;
  }
  if (type == "delta") {
    uint64_t since = j.value("since", uint64_t{0});
    if (epoch != epoch_ || since != version_) {
      // Not on top of what we hold: start over with a snapshot.
      spdlog::warn("controller: delta {}->{} does not follow {}@{}; reconnecting", since, version,
                   epoch_, version_);
      epoch_.clear();
      if (conn_) conn_->close("out-of-order delta");
      return;
    }
  }
  if (j.contains("trustBundle") && j["trustBundle"].is_string() && on_trust_bundle)
    on_trust_bundle(j["trustBundle"].get<std::string>());
  if (update_) {
    Update u;
    u.snapshot = type == "snapshot";
    const char* key = u.snapshot ? "resources" : "upserts";
    if (j.contains(key) && j[key].is_object()) {
      u.upserts.reserve(j[key].size());
      for (auto& [id, body] : j[key].items()) u.upserts.emplace_back(id, std::move(body));
    }
    deliver(std::move(u), j, epoch, version);
    return;
  }
  ResourceMap candidate;
  std::vector<std::string> changed;
  if (type == "snapshot") {
    if (j.contains("resources") && j["resources"].is_object())
      for (auto& [id, body] : j["resources"].items()) {
        changed.push_back(id);
        candidate.emplace(id, std::move(body));
      }
    for (const auto& [id, _] : accepted_)
      if (!candidate.count(id)) changed.push_back(id);
  } else {
    candidate = accepted_;
    if (j.contains("removes") && j["removes"].is_array())
      for (const auto& id : j["removes"])
        if (id.is_string()) {
          candidate.erase(id.get<std::string>());
          changed.push_back(id);
        }
    if (j.contains("upserts") && j["upserts"].is_object())
      for (auto& [id, body] : j["upserts"].items()) {
        changed.push_back(id);
        candidate[id] = std::move(body);
      }
  }
  auto rejected = apply_(candidate, changed);
  // Rejected ids keep what we had before.
  for (const auto& [id, _] : rejected) {
    auto old = accepted_.find(id);
    if (old != accepted_.end())
      candidate[id] = std::move(old->second);
    else
      candidate.erase(id);
  }
  accepted_ = std::move(candidate);
  answer(epoch, version, rejected);
}

void ControllerClient::request_certificate(const std::string& spiffe_id, const std::string& csr_pem,
                                           std::function<void(Result<std::string>)> done) {
  auto r = std::make_shared<Csr>(Csr{spiffe_id, csr_pem, std::move(done)});
  if (conn_ && conn_->ready())
    submit_csr(r);
  else
    csr_waiting_.push_back(r);
}

void ControllerClient::submit_csr(std::shared_ptr<Csr> r) {
  auto* h = new CsrHandler(r);
  int32_t sid = conn_->submit_request(base_headers(push::kSignPath), h, true);
  if (sid < 0) {
    delete h;
    r->finish(make_error(Errc::kUnavailable, "submitting the signing request failed"));
    return;
  }
  std::string body = nlohmann::json{{"identity", r->id}, {"csr", r->pem}}.dump();
  conn_->send_data(sid, body.data(), body.size());
  conn_->end_stream(sid);
}

void feed_cert_manager(ControllerClient& c, certs::CertManager& m) {
  c.on_trust_bundle = [&m](const std::string& pem) {
    if (auto r = m.set_trust_bundle(pem); !r)
      spdlog::error("controller sent a trust bundle that does not parse: {}", r.error().message);
  };
  c.on_connection = [&m](bool up) {
    if (up) m.retry_failed_now();
  };
}

}  // namespace warren::push
