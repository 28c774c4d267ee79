#include "push_server.h"

#include <algorithm>

#include <openssl/rand.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "push_streams.h"
#include "warren/defer.h"
#include "warren/push_proto.h"

namespace warren::controller {

namespace {

std::string random_epoch() {
  unsigned char b[8];
  RAND_bytes(b, sizeof b);
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (unsigned char c : b) {
    s += hex[c >> 4];
    s += hex[c & 15];
  }
  return s;
}

std::vector<double> latency_buckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

// Nodes get only the kinds they read.
bool visible(const WaypointScope* scope, const std::string& id) {
  return scope ? scope->wants(id) : push::node_kind(push::resource_kind(id));
}

}  // namespace

std::string Principal::name() const {
  return is_waypoint() ? push::kWaypointPrincipalPrefix + waypoint_ns + "/" + waypoint : node;
}

bool WaypointScope::wants(const std::string& id) const {
  auto k = push::resource_kind(id);
  if (push::node_kind(k)) return true;
  if (k == push::ResourceKind::kWaypoint) return id == waypoint_block_id(ns, gateway, pod);
  if (k == push::ResourceKind::kUnknown) return false;
  auto a = id.find('/');
  auto b = id.find('/', a + 1);
  if (b == std::string::npos) return false;
  std::string_view in = std::string_view(id).substr(a + 1, b - a - 1);
  return in == ns || in == root_ns;
}

PushServer::PushServer(uv_loop_t* loop, Model& model, Authenticator& auth, SignFn sign,
                       tls::SslCtxPtr ctx, metrics::Registry& registry, PushOptions opts)
    : loop_(loop),
      model_(model),
      auth_(auth),
      sign_(std::move(sign)),
      ctx_(std::move(ctx)),
      opts_(std::move(opts)) {
  if (opts_.epoch.empty()) opts_.epoch = random_epoch();
  m_connected_ = registry.gauge("warren_push_connected_nodes",
                                "Node proxies holding a configuration stream")
                     .with(std::vector<std::string>{});
  m_msgs_ = &registry.counter("warren_push_messages_total",
                              "Configuration messages queued to nodes", {"type"});
  m_acks_ = &registry.counter("warren_push_acks_total",
                              "Answers from nodes to configuration messages", {"result"});
  m_csr_ = &registry.counter("warren_ca_requests_total", "Certificate signing requests",
                             {"result"});
  m_ack_latency_ = registry
                       .histogram("warren_push_ack_latency_seconds",
                                  "From a model change being published to a node acknowledging it",
                                  {}, latency_buckets())
                       .with(std::vector<std::string>{});
}

PushServer::~PushServer() { stop(); }

Result<void> PushServer::start() {
  auto l = net::TcpListener::listen(loop_, opts_.listen, &PushServer::on_accept, this);
  if (!l) return make_error(l.error().code, "push server on " + opts_.listen.to_string() + ": " +
                                                l.error().message);
  listener_ = *l;
  spdlog::info("push: listening on {} (epoch {})", listener_->local().to_string(), opts_.epoch);
  return {};
}

SockAddr PushServer::local() const { return listener_ ? listener_->local() : SockAddr{}; }

void PushServer::stop() {
  if (listener_) {
    listener_->close();
    listener_ = nullptr;
  }
  std::vector<h2::H2Conn*> cs;
  for (auto& [c, _] : conns_) cs.push_back(c);
  for (auto* c : cs) c->close("controller stopping");
}

void PushServer::on_accept(void* ctx, uv_stream_t* server) {
  static_cast<PushServer*>(ctx)->accept(server);
}

void PushServer::accept(uv_stream_t* server) {
  auto* tcp = net::TcpConn::create(loop_);
  if (tcp->accept_from(server) != 0) {
    tcp->close();
    return;
  }
  tcp->set_nodelay(true);
  h2::H2Limits limits;
  limits.max_concurrent_streams = 16;
  auto conn = std::make_unique<h2::H2Conn>(tcp, ctx_.get(), /*server=*/true, this, limits);
  h2::H2Conn* c = conn.get();
  conns_[c] = std::move(conn);
  c->start();
}

h2::StreamHandler* PushServer::on_new_stream(h2::H2Conn* c, int32_t sid) {
  return new RequestRouter(this, c);
}

void PushServer::on_conn_close(h2::H2Conn* c, const std::string& reason) {
  auto it = conns_.find(c);
  if (it == conns_.end()) return;
  spdlog::debug("push: connection closed: {}", reason);
  auto owned = std::make_shared<std::unique_ptr<h2::H2Conn>>(std::move(it->second));
  conns_.erase(it);
  defer(loop_, [owned] { owned->reset(); });
}

// ---- resource text and messages ---------------------------------------------------------

void PushServer::text_apply(const Delta& d) {
  if (!text_built_) {
    for (const auto& [id, body] : model_.resources())
      text_[id] = std::make_shared<const std::string>(body->dump());
    text_built_ = true;
    return;  // the model already holds this delta's result
  }
  for (const auto& id : d.removes) text_.erase(id);
  for (const auto& [id, body] : d.upserts) text_[id] = std::make_shared<const std::string>(body->dump());
}

std::string PushServer::delta_json(uint64_t since, uint64_t version, const Delta& d,
                                   bool with_bundle, const WaypointScope* scope) {
  std::string s;
  s.reserve(256 + d.upserts.size() * 256);
  s += R"({"type":"delta","epoch":)";
  s += nlohmann::json(opts_.epoch).dump();
  s += R"(,"version":)" + std::to_string(version) + R"(,"since":)" + std::to_string(since);
  if (with_bundle) s += R"(,"trustBundle":)" + nlohmann::json(bundle_).dump();
  s += R"(,"upserts":{)";
  bool first = true;
  for (const auto& [id, body] : d.upserts) {
    if (!visible(scope, id)) continue;
    if (!first) s += ',';
    first = false;
    s += nlohmann::json(id).dump();
    s += ':';
    auto t = text_.find(id);
    s += t != text_.end() ? *t->second : body->dump();
  }
  s += R"(},"removes":[)";
  first = true;
  for (const auto& id : d.removes) {
    if (!visible(scope, id)) continue;
    if (!first) s += ',';
    first = false;
    s += nlohmann::json(id).dump();
  }
  s += "]}";
  return s;
}

std::shared_ptr<const std::string> PushServer::snapshot_frame(const WaypointScope* scope) {
  if (!scope && snapshot_ && snapshot_version_ == version_) return snapshot_;
  size_t total = 256 + bundle_.size();
  for (const auto& [id, t] : text_) total += id.size() + t->size() + 8;
  std::string s;
  s.reserve(total + 4);
  s += std::string(4, '\0');
  s += R"({"type":"snapshot","epoch":)";
  s += nlohmann::json(opts_.epoch).dump();
  s += R"(,"version":)" + std::to_string(version_);
  s += R"(,"trustBundle":)" + nlohmann::json(bundle_).dump();
  s += R"(,"resources":{)";
  bool first = true;
  for (const auto& [id, t] : text_) {
    if (!visible(scope, id)) continue;
    if (!first) s += ',';
    first = false;
    s += nlohmann::json(id).dump();
    s += ':';
    s += *t;
  }
  s += "}}";
  std::string h = push::frame_header(s.size() - 4);
  s.replace(0, 4, h);
  if (scope) return std::make_shared<const std::string>(std::move(s));  // one waypoint's: not kept
  snapshot_ = std::make_shared<const std::string>(std::move(s));
  snapshot_version_ = version_;
  return snapshot_;
}

std::shared_ptr<const std::string> PushServer::catch_up(const std::string& epoch, uint64_t version,
                                                        bool with_bundle, const WaypointScope* scope) {
  if (epoch == opts_.epoch && version <= version_ && version > 0) {
    if (version == version_) {
      if (!with_bundle) return nullptr;
      std::string s;
      push::append_frame(&s, delta_json(version, version, Delta{}, true, scope));
      return std::make_shared<const std::string>(std::move(s));
    }
    // Deltas version+1 .. version_ must all be in the log.
    if (!log_.empty() && log_.front().version <= version + 1) {
      if (log_.back().version == version_ && version + 1 == version_ && !with_bundle && !scope)
        return log_.back().frame;
      std::map<std::string, ResourcePtr> up;
      std::set<std::string> rm;
      for (const auto& l : log_) {
        if (l.version <= version) continue;
        for (const auto& id : l.delta.removes) {
          up.erase(id);
          rm.insert(id);
        }
        for (const auto& [id, body] : l.delta.upserts) {
          rm.erase(id);
          up[id] = body;
        }
      }
      Delta merged;
      merged.upserts.assign(up.begin(), up.end());
      merged.removes.assign(rm.begin(), rm.end());
      std::string s;
      push::append_frame(&s, delta_json(version, version_, merged, with_bundle, scope));
      return std::make_shared<const std::string>(std::move(s));
    }
  }
  return snapshot_frame(scope);
}

void PushServer::publish(const Delta& d) {
  text_apply(d);
  if (d.version > version_) {
    version_ = d.version;
    std::string s;
    push::append_frame(&s, delta_json(d.version - 1, d.version, d, false, nullptr));
    log_.push_back({d.version, std::make_shared<const std::string>(std::move(s)), d,
                    std::chrono::steady_clock::now()});
    while (log_.size() > opts_.history) log_.pop_front();
  }
  if (!model_.is_synced()) return;
  for (auto* s : streams_) s->pump_updates();
}

void PushServer::set_trust_bundle(std::string pem) {
  if (pem == bundle_) return;
  bundle_ = std::move(pem);
  ++bundle_gen_;
  snapshot_.reset();
  for (auto* s : streams_) s->pump_updates();
}

void PushServer::stream_opened(PushStream* s) {
  streams_.insert(s);
  m_connected_->set(static_cast<int64_t>(streams_.size()));
  auto& st = nodes_[s->node()];
  st.node = s->node();
  st.peer = s->peer();
  st.connected = true;
  spdlog::info("push: node {} connected from {} (holds epoch {} version {})", s->node(), s->peer(),
               s->resume_epoch().empty() ? "-" : s->resume_epoch(), s->resume_version());
  if (model_.is_synced() && text_built_) s->pump_updates();
}

bool PushServer::take_bulk(PushStream* s) {
  if (bulk_.count(s)) return true;
  if (bulk_.size() < std::max<size_t>(opts_.max_bulk_streams, 1)) {
    bulk_.insert(s);
    return true;
  }
  if (std::find(bulk_waiting_.begin(), bulk_waiting_.end(), s) == bulk_waiting_.end())
    bulk_waiting_.push_back(s);
  return false;
}

void PushServer::release_bulk(PushStream* s) {
  std::erase(bulk_waiting_, s);
  if (!bulk_.erase(s)) return;
  while (!bulk_waiting_.empty() && bulk_.size() < std::max<size_t>(opts_.max_bulk_streams, 1)) {
    PushStream* next = bulk_waiting_.front();
    bulk_waiting_.pop_front();
    bulk_.insert(next);
    next->resume_bulk();
  }
}

void PushServer::stream_closed(PushStream* s) {
  release_bulk(s);
  if (!streams_.erase(s)) return;
  m_connected_->set(static_cast<int64_t>(streams_.size()));
  bool other = false;
  for (auto* o : streams_) other |= o->node() == s->node();
  if (!other) {
    nodes_[s->node()].connected = false;
    spdlog::info("push: node {} disconnected", s->node());
  }
}

void PushServer::acked(PushStream* s, uint64_t version, std::map<std::string, std::string> rejected) {
  m_acks_->with({rejected.empty() ? "ack" : "nack"})->inc();
  auto& st = nodes_[s->node()];
  st.acked = version;
  st.sent = s->sent_version();
  if (!rejected.empty())
    for (const auto& [id, why] : rejected)
      spdlog::warn("push: node {} rejected {} at version {}: {}", s->node(), id, version, why);
  st.rejected = std::move(rejected);
  for (auto it = log_.rbegin(); it != log_.rend(); ++it) {
    if (it->version == version) {
      m_ack_latency_->observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - it->at).count());
      break;
    }
    if (it->version < version) break;
  }
  if (on_ack) on_ack(s->node(), version);
}

std::vector<PushServer::NodeStatus> PushServer::status() const {
  std::vector<NodeStatus> out;
  for (const auto& [_, st] : nodes_) out.push_back(st);
  for (auto& st : out)
    for (auto* s : streams_)
      if (s->node() == st.node) st.sent = std::max(st.sent, s->sent_version());
  return out;
}

size_t PushServer::connected() const { return streams_.size(); }

// ---- TokenFileAuthenticator ---------------------------------------------------------------

Result<void> TokenFileAuthenticator::load() {
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0)
    return make_error(Errc::kNotFound, path_ + ": " + std::strerror(errno));
  long long m = st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
  if (m == mtime_ns_) return {};
  std::ifstream f(path_);
  if (!f) return make_error(Errc::kNotFound, path_ + ": cannot read");
  std::map<std::string, std::string> tokens;
  std::string line;
  int n = 0;
  while (std::getline(f, line)) {
    ++n;
    if (auto h = line.find('#'); h != std::string::npos) line.resize(h);
    std::istringstream ls(line);
    std::string token, node, extra;
    if (!(ls >> token)) continue;
    ls >> node;
    if (ls >> extra)
      return make_error(Errc::kInvalidArgument,
                        path_ + ":" + std::to_string(n) + ": expected \"<token> [<node>|waypoint:<ns>/<gateway>]\"");
    std::string wns, wgw;
    if (node.rfind(push::kWaypointPrincipalPrefix, 0) == 0 && !push::parse_waypoint_principal(node, &wns, &wgw))
      return make_error(Errc::kInvalidArgument, path_ + ":" + std::to_string(n) + ": \"" + node +
                                                    "\" is not waypoint:<namespace>/<gateway>");
    if (token.size() < 16)
      return make_error(Errc::kInvalidArgument,
                        path_ + ":" + std::to_string(n) + ": token shorter than 16 characters");
    tokens[token] = node;
  }
  tokens_ = std::move(tokens);
  mtime_ns_ = m;
  return {};
}

void TokenFileAuthenticator::authenticate(const std::string& token, const std::string& claimed,
                                          std::function<void(Result<Principal>)> done) {
  if (auto r = load(); !r) spdlog::warn("push: bootstrap tokens: {}", r.error().message);
  auto it = tokens_.find(token);
  if (token.empty() || it == tokens_.end())
    return done(make_error(Errc::kPermissionDenied, "unknown bootstrap token"));
  if (claimed.empty()) return done(make_error(Errc::kInvalidArgument, "x-warren-node is missing"));
  Principal p;
  if (claimed.rfind(push::kWaypointPrincipalPrefix, 0) == 0) {
    if (!push::parse_waypoint_principal(claimed, &p.waypoint_ns, &p.waypoint))
      return done(make_error(Errc::kInvalidArgument, "\"" + claimed + "\" is not waypoint:<namespace>/<gateway>"));
    if (it->second != claimed)
      return done(make_error(Errc::kPermissionDenied,
                             "this token does not belong to " + claimed +
                                 (it->second.empty() ? " (a token without a principal serves nodes only)" : "")));
    return done(std::move(p));
  }
  if (!it->second.empty() && it->second != claimed) {
    bool waypoint = it->second.rfind(push::kWaypointPrincipalPrefix, 0) == 0;
    return done(make_error(Errc::kPermissionDenied, "this token belongs to " + (waypoint ? "" : std::string("node ")) +
                                                        it->second + ", not " + claimed));
  }
  p.node = claimed;
  done(std::move(p));
}

}  // namespace warren::controller
