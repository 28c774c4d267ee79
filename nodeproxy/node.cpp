#include "node.h"

#include "warren/defer.h"

#include <spdlog/spdlog.h>

#include <malloc.h>

#include <filesystem>

#include "inbound.h"
#include "inpod.h"
#include "pool.h"
#include "warren/cert_manager.h"
#include "warren/controller_client.h"
#include "socks_entry.h"
#include "warren/http_server.h"

namespace warren::node {

namespace {
// The pool dials from the source pod's netns (marked, so capture ignores it).
class NodePoolEnv : public hbone::PoolEnv {
 public:
  explicit NodePoolEnv(Node& n) : n_(n) {}
  uv_loop_t* loop() override { return n_.loop(); }
  Result<SSL_CTX*> client_ctx(const std::string& identity) override { return n_.client_ctx(identity); }
  net::DialOptions dial_options(const IpAddr& src) override {
    net::DialOptions d;
    d.bind_src = src;
    d.netns_fd = n_.netns_for(src);
    if (d.netns_fd >= 0) d.mark = kMeshMark;
    return d;
  }
  uint32_t connect_timeout_ms() const override { return n_.options().connect_timeout_ms; }

 private:
  Node& n_;
};
}  // namespace

Node::Node(uv_loop_t* loop, NodeOptions opts) : loop_(loop), opts_(std::move(opts)) {
  node_metrics_ = std::make_unique<NodeMetrics>(registry_);
  access_log_ = std::make_unique<log::AccessLog>(opts_.access_log);
  pool_env_ = std::make_unique<NodePoolEnv>(*this);
  auto& nm = *node_metrics_;
  pool_ = std::make_unique<Pool>(*pool_env_, hbone::PoolMetrics{nm.pool_connects, nm.pool_reuses,
                                                                 nm.pool_connections, nm.pool_streams});
  inbound_ = std::make_unique<Inbound>(*this);
  socks_ = std::make_unique<SocksEntry>(*this);
}

Node::~Node() = default;

Result<SSL_CTX*> Node::client_ctx(const std::string& identity) {
  auto it = client_ctx_.find(identity);
  if (it != client_ctx_.end()) return it->second.get();
  auto id = store_.get(identity);
  if (!id) return make_error(Errc::kNotFound, "no certificate loaded for " + identity);
  auto ctx = tls::make_client_ctx(*id, store_.root_ptrs());
  if (!ctx.ok()) return ctx.error();
  SSL_CTX* raw = ctx->get();
  client_ctx_[identity] = std::move(ctx.value());
  return raw;
}

Result<SSL_CTX*> Node::server_ctx(const std::string& identity) {
  auto it = server_ctx_.find(identity);
  if (it != server_ctx_.end()) return it->second.get();
  auto id = store_.get(identity);
  if (!id) return make_error(Errc::kNotFound, "no certificate loaded for " + identity);
  auto ctx = tls::make_server_ctx(*id, store_.root_ptrs(), snap_->trust_domain);
  if (!ctx.ok()) return ctx.error();
  SSL_CTX* raw = ctx->get();
  server_ctx_[identity] = std::move(ctx.value());
  return raw;
}

Result<void> Node::start() {
  auto snap = config::load_file(opts_.config_path);
  if (!snap.ok()) return snap.error();
  {
    auto& m = const_cast<config::Snapshot&>(**snap);
    if (!opts_.controller_address.empty()) m.controller.address = opts_.controller_address;
    if (!opts_.controller_token_file.empty()) m.controller.token_file = opts_.controller_token_file;
    if (!opts_.controller_ca_file.empty()) m.controller.ca_file = opts_.controller_ca_file;
  }
  const auto& s = **snap;
  const bool controller_mode = !s.controller.address.empty();
  if (!controller_mode) {
    if (s.certificates.dir.empty())
      return make_error(Errc::kInvalidArgument,
                        opts_.config_path + ": /certificates is required without a controller");
    cert_dir_ = s.certificates.dir;
    root_file_ = s.certificates.root_cert;
    if (auto r = store_.load(cert_dir_, root_file_); !r.ok())
      return r.error().wrap("loading certificates from " + cert_dir_);
  }
  snap_ = *snap;
  for (const auto* w : controller_mode ? std::vector<const config::Workload*>{}
                                       : snap_->local_workloads())
    if (w->protocol == config::Protocol::kHbone && !store_.get(w->identity))
      spdlog::warn("no certificate for local workload {}/{} ({}): its traffic will be refused",
                   w->namespace_, w->name, w->identity);
  if (snap_->capture.mode == config::CaptureMode::kInPod) {
    inpod_ = std::make_unique<InPod>(*this);
    if (auto r = inpod_->start(*snap_); !r.ok()) return r.error();
  }
  if (auto r = inbound_->sync_listeners(*snap_); !r.ok()) return r.error();
  auto socks = socks_->listen(snap_->listeners.socks5);
  if (!socks.ok()) return socks.error();
  spdlog::info("socks5 entry listening on {}", socks->to_string());
  setup_admin();
  auto a = admin_->listen(snap_->listeners.admin);
  if (!a.ok()) return a.error();
  auto m = metrics_srv_->listen(snap_->listeners.metrics);
  if (!m.ok()) return m.error();
  auto rd = ready_srv_->listen(snap_->listeners.readiness);
  if (!rd.ok()) return rd.error();
  spdlog::info("admin on {}, metrics on {}, readiness on {}", a->to_string(), m->to_string(),
               rd->to_string());
  node_metrics_->config_reload(true)->inc();

  // Watch the config file (stat polling also sees editors that replace it) and SIGHUP.
  uv_fs_poll_init(loop_, &config_poll_);
  config_poll_.data = this;
  uv_fs_poll_start(
      &config_poll_,
      [](uv_fs_poll_t* h, int status, const uv_stat_t*, const uv_stat_t*) {
        // reload_config() logs its own errors and keeps the last good config.
        if (status == 0) (void)static_cast<Node*>(h->data)->reload_config();
      },
      opts_.config_path.c_str(), opts_.config_poll_ms);
  uv_signal_init(loop_, &sighup_);
  sighup_.data = this;
  uv_signal_start(
      &sighup_,
      [](uv_signal_t* h, int) {
        auto* self = static_cast<Node*>(h->data);
        spdlog::info("SIGHUP: reloading configuration and certificates");
        (void)self->reload_config();  // logs its own errors
        self->reload_certs();
      },
      SIGHUP);
  for (auto* sig : {&sigterm_, &sigint_}) {
    uv_signal_init(loop_, sig);
    sig->data = this;
    uv_signal_start(
        sig,
        [](uv_signal_t* h, int signum) {
          spdlog::info("signal {}: shutting down", signum);
          static_cast<Node*>(h->data)->stop();
        },
        sig == &sigterm_ ? SIGTERM : SIGINT);
  }
  uv_timer_init(loop_, &cert_timer_);
  cert_timer_.data = this;
  uv_timer_start(
      &cert_timer_, [](uv_timer_t* t) { static_cast<Node*>(t->data)->reload_certs(); },
      opts_.cert_poll_ms, opts_.cert_poll_ms);
  handles_started_ = true;
  if (controller_mode) {
    if (auto r = start_controller(*snap_); !r) return r.error();
    return {};  // ready once the first configuration is applied
  }
  ready_ = true;
  // Parsing a large document leaves many small freed blocks behind; hand
  // them back so RSS reflects the snapshot, not the parser.
  ::malloc_trim(0);
  spdlog::info("warren-node {} ready: {} workloads ({} local), {} services, {} policies",
               snap_->node_name, snap_->workloads.size(), snap_->local_workloads().size(),
               snap_->services.size(), snap_->policies.size());
  return {};
}

Result<void> Node::reload_config() {
  if (stopped_) return {};
  if (controller_) {
    spdlog::warn("{} changed: in controller mode the bootstrap file is read at start only",
                 opts_.config_path);
    return {};
  }
  auto snap = config::load_file(opts_.config_path);
  if (!snap.ok()) {
    node_metrics_->config_reload(false)->inc();
    spdlog::error("config rejected, still serving version {}:\n{}", snap_->version,
                  snap.error().message);
    return snap.error();
  }
  return apply(*snap);
}

Result<void> Node::apply(config::SnapshotPtr snap, bool trim) {
  auto mutable_snap = std::const_pointer_cast<config::Snapshot>(snap);
  mutable_snap->version = snap_->version + 1;
  bool certs_moved = snap->certificates.dir != cert_dir_ || snap->certificates.root_cert != root_file_;
  if (certs_moved) {
    certs::IdentityStore fresh;
    if (auto r = fresh.load(snap->certificates.dir, snap->certificates.root_cert); !r.ok()) {
      node_metrics_->config_reload(false)->inc();
      spdlog::error("config rejected: certificates: {}", r.error().message);
      return r.error();
    }
    store_ = std::move(fresh);
    cert_dir_ = snap->certificates.dir;
    root_file_ = snap->certificates.root_cert;
    client_ctx_.clear();
    server_ctx_.clear();
  }
  if (snap->trust_domain != snap_->trust_domain) server_ctx_.clear();
  if (snap->capture.mode != snap_->capture.mode || snap->capture.pin_dir != snap_->capture.pin_dir ||
      snap->capture.cgroup != snap_->capture.cgroup || snap->capture.cni_socket != snap_->capture.cni_socket) {
    node_metrics_->config_reload(false)->inc();
    spdlog::error("config rejected: /capture (mode, cgroup, bpfPinDir, cniSocket) changes need a restart");
    return make_error(Errc::kInvalidArgument, "/capture: changes need a restart");
  }
  snap_ = snap;
  if (inpod_) inpod_->apply(*snap_);
  if (auto r = inbound_->sync_listeners(*snap_); !r.ok())
    spdlog::warn("some HBONE listeners could not open: {}", r.error().message);
  inbound_->recheck(*snap_);
  node_metrics_->config_reload(true)->inc();
  // After the caller has freed the message and its parse too (a 100k-workload
  // snapshot is ~35 MB of text and more as JSON): trimming now would leave
  // those pages mapped.
  if (trim) defer(loop_, [] { ::malloc_trim(0); });
  spdlog::info("config version {} applied: {} workloads, {} services, {} policies",
               snap_->version, snap_->workloads.size(), snap_->services.size(),
               snap_->policies.size());
  return {};
}

void Node::reload_certs() {
  if (stopped_ || cert_manager_) return;
  auto rep = store_.reload();
  for (auto& e : rep.errors) spdlog::warn("certificates: {} (keeping the previous ones)", e.message);
  if (!rep.changed()) return;
  // New connections use the new certificates; open ones keep theirs.
  if (rep.roots_changed) {
    client_ctx_.clear();
    server_ctx_.clear();
  }
  for (auto* list : {&rep.added, &rep.updated, &rep.removed})
    for (auto& id : *list) {
      client_ctx_.erase(id);
      server_ctx_.erase(id);
    }
  spdlog::info("certificates rotated: {} added, {} updated, {} removed{}", rep.added.size(),
               rep.updated.size(), rep.removed.size(), rep.roots_changed ? ", roots changed" : "");
}

void Node::setup_admin() {
  admin_ = std::make_unique<http::Server>(loop_);
  metrics_srv_ = std::make_unique<http::Server>(loop_);
  ready_srv_ = std::make_unique<http::Server>(loop_);
  auto ready = [this](const http::Request&) {
    http::Response r;
    r.status = ready_ ? 200 : 503;
    r.body = ready_ ? "ready\n" : "not ready\n";
    return r;
  };
  auto metrics = [this](const http::Request&) {
    http::Response r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = registry_.render();
    return r;
  };
  admin_->route("GET", "/healthz/ready", ready);
  ready_srv_->route("GET", "/healthz/ready", ready);
  metrics_srv_->route("GET", "/metrics", metrics);
  admin_->route("GET", "/stats/prometheus", metrics);
  admin_->route("GET", "/config_dump", [this](const http::Request&) {
    http::Response r;
    r.content_type = "application/json";
    nlohmann::json j;
    j["config"] = config::to_json(*snap_);
    j["version"] = snap_->version;
    j["certificates"] = nlohmann::json::array();
    for (auto& id : store_.ids()) {
      auto c = store_.get(id);
      j["certificates"].push_back(
          {{"identity", id},
           {"notAfter", std::chrono::duration_cast<std::chrono::seconds>(
                            c->not_after.time_since_epoch())
                            .count()}});
    }
    if (inpod_) j["capture"] = inpod_->status();
    if (controller_)
      j["controller"] = {{"address", snap_->controller.address},
                         {"connected", controller_->connected()},
                         {"epoch", controller_->epoch()},
                         {"version", controller_->version()},
                         {"resources", builder_ ? builder_->size() : 0},
                         {"lastError", controller_->last_error()},
                         {"certificates", cert_manager_->status_json()}};
    j["hbone"] = {{"poolConnections", pool_->connections()},
                  {"inboundConnections", inbound_->connections()},
                  {"listeners", inbound_->listeners()}};
    r.body = j.dump(2) + "\n";
    return r;
  });
  auto logging = [](const http::Request& req) {
    http::Response r;
    if (req.has_query_param("level")) {
      auto lvl = req.query_param("level");
      if (!log::set_level(lvl)) {
        r.status = 400;
        r.body = "unknown level \"" + lvl + "\" (trace, debug, info, warn, error, off)\n";
        return r;
      }
    }
    r.body = "level: " + log::level() + "\n";
    return r;
  };
  admin_->route("GET", "/logging", logging);
  admin_->route("POST", "/logging", logging);
  admin_->route("POST", "/quitquitquit", [this](const http::Request&) {
    // Answer first, then stop on the next loop turn.
    uv_timer_t* t = new uv_timer_t;
    uv_timer_init(loop_, t);
    t->data = this;
    uv_timer_start(
        t,
        [](uv_timer_t* t) {
          static_cast<Node*>(t->data)->stop();
          uv_close(reinterpret_cast<uv_handle_t*>(t),
                   [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
        },
        50, 0);
    http::Response r;
    r.body = "OK\n";
    return r;
  });
}

int Node::netns_for(const IpAddr& ip) const { return inpod_ ? inpod_->netns_for(ip) : -1; }

void Node::stop() {
  if (stopped_) return;
  stopped_ = true;
  ready_ = false;
  spdlog::info("warren-node stopping");
  socks_->close();
  if (inpod_) inpod_->stop();
  if (controller_) controller_->stop();
  if (cert_manager_) cert_manager_->stop();
  inbound_->close_all();
  pool_->close_all();
  pool_->stop_timer();
  if (admin_) admin_->close();
  if (metrics_srv_) metrics_srv_->close();
  if (ready_srv_) ready_srv_->close();
  if (handles_started_) {
    handles_started_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&config_poll_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&sighup_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&sigterm_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&sigint_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&cert_timer_), nullptr);
  }
}

}  // namespace warren::node
