// The fake API server's thread, listener and public (thread-safe) API.
#include "fake_apiserver.h"

#include <openssl/ssl.h>

#include "fake_internal.h"
#include "warren/ip.h"

namespace warren::fakes {

std::string RecordedRequest::param(const std::string& name) const {
  return query_param(query, name);
}

namespace {

void on_alloc(uv_handle_t*, size_t, uv_buf_t* b) {
  static thread_local char buf[64 * 1024];
  *b = uv_buf_init(buf, sizeof buf);
}

void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
  auto* c = static_cast<Conn*>(s->data);
  if (n < 0) {
    c->close();
    return;
  }
  if (n > 0) c->on_data(b->base, static_cast<size_t>(n));
}

void on_connection(uv_stream_t* server, int status) {
  auto* srv = static_cast<FakeApiServer::Impl*>(server->data);
  if (status < 0) return;
  auto* c = new Conn;
  c->srv = srv;
  uv_tcp_init(&srv->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp),
             [](uv_handle_t* h) { delete static_cast<Conn*>(h->data); });
    return;
  }
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  if (srv->ssl_ctx) c->tls = std::make_unique<tls::Session>(srv->ssl_ctx, true);
  srv->conns.insert(c);
  uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), on_alloc, on_read);
}

Error status_error(const Outcome& o) {
  std::string msg = o.body.is_object() ? o.body.value("message", "") : "";
  return make_error(o.code == 404 ? Errc::kNotFound : Errc::kInvalidArgument,
                    "HTTP " + std::to_string(o.code) + ": " + msg);
}

}  // namespace

void FakeApiServer::Impl::shutdown() {
  std::vector<Conn*> cs(conns.begin(), conns.end());
  for (Conn* c : cs) c->close();
  uv_close(reinterpret_cast<uv_handle_t*>(&listener), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&wake), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&bookmark_timer), nullptr);
}

Result<std::unique_ptr<FakeApiServer>> FakeApiServer::start(FakeApiServerOptions opts) {
  auto addr = SockAddr::parse(opts.listen);
  if (!addr) return make_error(Errc::kInvalidArgument, "fake apiserver: bad address " + opts.listen);
  auto im = std::make_unique<Impl>(std::move(opts));
  if (im->opts.tls) {
    auto pki = FakePki::create();
    if (!pki) return pki.error();
    im->pki = std::move(*pki);
    auto ctx = im->pki.server_ctx();
    if (!ctx) return ctx.error();
    im->ssl_ctx = *ctx;
  }
  for (auto& t : im->opts.tokens) im->tokens.insert(t);
  im->store.set_listener(
      [p = im.get()](const ResourceType& t, const WatchEvent& ev) { p->on_store_event(t, ev); });
  uv_loop_init(&im->loop);
  uv_tcp_init(&im->loop, &im->listener);
  im->listener.data = im.get();
  sockaddr_storage ss{};
  addr->to_sockaddr(&ss);
  int rc = uv_tcp_bind(&im->listener, reinterpret_cast<sockaddr*>(&ss), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&im->listener), 128, on_connection);
  if (rc != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&im->listener), nullptr);
    uv_run(&im->loop, UV_RUN_DEFAULT);
    uv_loop_close(&im->loop);
    if (im->ssl_ctx) SSL_CTX_free(im->ssl_ctx);
    return make_error(Errc::kSystem, "fake apiserver: listen " + im->opts.listen + ": " +
                                         uv_strerror(rc));
  }
  sockaddr_storage bound{};
  int len = sizeof bound;
  uv_tcp_getsockname(&im->listener, reinterpret_cast<sockaddr*>(&bound), &len);
  im->port = SockAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&bound)).port;
  uv_async_init(&im->loop, &im->wake, [](uv_async_t* a) {
    auto* p = static_cast<Impl*>(a->data);
    std::deque<std::function<void()>> tasks;
    {
      std::lock_guard<std::mutex> l(p->mu);
      tasks.swap(p->tasks);
    }
    for (auto& t : tasks) t();
  });
  im->wake.data = im.get();
  uv_timer_init(&im->loop, &im->bookmark_timer);
  im->bookmark_timer.data = im.get();
  if (im->opts.bookmark_interval.count() > 0) {
    auto ms = static_cast<uint64_t>(im->opts.bookmark_interval.count());
    uv_timer_start(
        &im->bookmark_timer,
        [](uv_timer_t* t) {
          auto* p = static_cast<Impl*>(t->data);
          p->for_watches("", [p](Watch* w) {
            if (w->bookmarks) p->enqueue(w, p->bookmark(*w->type).dump() + "\n");
          });
        },
        ms, ms);
  }
  Impl* raw = im.get();
  im->thread = std::thread([raw] { uv_run(&raw->loop, UV_RUN_DEFAULT); });
  return std::unique_ptr<FakeApiServer>(new FakeApiServer(std::move(im)));
}

FakeApiServer::FakeApiServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

FakeApiServer::~FakeApiServer() {
  impl_->run([this] { impl_->shutdown(); });
  impl_->thread.join();
  uv_loop_close(&impl_->loop);
  if (impl_->ssl_ctx) SSL_CTX_free(impl_->ssl_ctx);
}

std::string FakeApiServer::url() const {
  return std::string(impl_->opts.tls ? "https" : "http") + "://127.0.0.1:" +
         std::to_string(impl_->port);
}

uint16_t FakeApiServer::port() const { return impl_->port; }
std::string FakeApiServer::ca_pem() const { return impl_->opts.tls ? impl_->pki.ca_pem() : ""; }

std::string FakeApiServer::kubeconfig(const std::string& token) const {
  nlohmann::json cluster = {{"server", url()}};
  if (impl_->opts.tls) {
    std::string pem = ca_pem();
    static const char* kB64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string b;
    size_t i = 0;
    for (; i + 2 < pem.size(); i += 3) {
      uint32_t v = (uint8_t(pem[i]) << 16) | (uint8_t(pem[i + 1]) << 8) | uint8_t(pem[i + 2]);
      for (int s : {18, 12, 6, 0}) b += kB64[(v >> s) & 63];
    }
    if (i < pem.size()) {
      uint32_t v = uint8_t(pem[i]) << 16;
      if (i + 1 < pem.size()) v |= uint8_t(pem[i + 1]) << 8;
      b += kB64[(v >> 18) & 63];
      b += kB64[(v >> 12) & 63];
      b += i + 1 < pem.size() ? kB64[(v >> 6) & 63] : '=';
      b += '=';
    }
    cluster["certificate-authority-data"] = b;
  }
  nlohmann::json doc = {
      {"apiVersion", "v1"},
      {"kind", "Config"},
      {"current-context", "fake"},
      {"clusters", {{{"name", "fake"}, {"cluster", cluster}}}},
      {"users", {{{"name", "fake"}, {"user", {{"token", token}}}}}},
      {"contexts", {{{"name", "fake"}, {"context", {{"cluster", "fake"}, {"user", "fake"}}}}}}};
  return doc.dump(2);  // JSON is YAML
}

std::pair<std::string, std::string> FakeApiServer::issue_client_cert(const std::string& user) const {
  auto r = impl_->pki.client_cert(user);
  return r ? *r : std::pair<std::string, std::string>{};
}

Result<nlohmann::json> FakeApiServer::create(nlohmann::json obj) {
  const ResourceType* t = find_type_by_kind(obj.value("kind", ""));
  if (!t) return make_error(Errc::kInvalidArgument, "fake apiserver: unknown kind");
  Outcome o = impl_->run([&] { return impl_->store.create(*t, std::move(obj)); });
  if (!o.ok()) return status_error(o);
  return o.body;
}

Result<nlohmann::json> FakeApiServer::update(nlohmann::json obj) {
  const ResourceType* t = find_type_by_kind(obj.value("kind", ""));
  if (!t) return make_error(Errc::kInvalidArgument, "fake apiserver: unknown kind");
  if (obj["metadata"].is_object()) obj["metadata"].erase("resourceVersion");
  Outcome o = impl_->run([&] { return impl_->store.update(*t, std::move(obj)); });
  if (!o.ok()) return status_error(o);
  return o.body;
}

Result<nlohmann::json> FakeApiServer::apply(nlohmann::json obj) {
  std::string kind = obj.value("kind", "");
  std::string ns = obj["metadata"].value("namespace", "");
  std::string name = obj["metadata"].value("name", "");
  return get(kind, ns.empty() ? "default" : ns, name) ? update(std::move(obj))
                                                      : create(std::move(obj));
}

Result<void> FakeApiServer::remove(const std::string& kind, const std::string& ns,
                                   const std::string& name) {
  const ResourceType* t = find_type_by_kind(kind);
  if (!t) return make_error(Errc::kInvalidArgument, "fake apiserver: unknown kind");
  Outcome o = impl_->run([&] { return impl_->store.remove(*t, ns, name); });
  if (!o.ok()) return status_error(o);
  return {};
}

std::optional<nlohmann::json> FakeApiServer::get(const std::string& kind, const std::string& ns,
                                                 const std::string& name) {
  const ResourceType* t = find_type_by_kind(kind);
  if (!t) return std::nullopt;
  return impl_->run([&] { return impl_->store.find(*t, ns, name); });
}

uint64_t FakeApiServer::resource_version() {
  return impl_->run([&] { return impl_->store.resource_version(); });
}

void FakeApiServer::set_served(const std::string& kind, bool served) {
  impl_->run([&] { impl_->store.set_served(kind, served); });
}

void FakeApiServer::set_tokens(std::vector<std::string> tokens) {
  impl_->run([&] { impl_->tokens = std::set<std::string>(tokens.begin(), tokens.end()); });
}

void FakeApiServer::set_token_review(const std::string& token, nlohmann::json user_info) {
  impl_->run([&] { impl_->reviews[token] = std::move(user_info); });
}

void FakeApiServer::compact() {
  impl_->run([&] { impl_->store.compact(); });
}

void FakeApiServer::fail_next_watch(const std::string& kind, int http_status) {
  impl_->run([&] { impl_->fail_next[kind] = http_status; });
}

void FakeApiServer::expire_watches(const std::string& kind) {
  impl_->run([&] {
    auto line = nlohmann::json({{"type", "ERROR"},
                                {"object", make_status(410, "Expired",
                                                       "The resourceVersion for the provided "
                                                       "watch is too old.")}})
                    .dump() +
                "\n";
    impl_->for_watches(kind, [&](Watch* w) {
      impl_->enqueue(w, line);
      impl_->end_watch(w);
    });
  });
}

void FakeApiServer::drop_watches(const std::string& kind) {
  impl_->run([&] { impl_->for_watches(kind, [](Watch* w) { w->conn->close(); }); });
}

void FakeApiServer::end_watches(const std::string& kind) {
  impl_->run([&] { impl_->for_watches(kind, [&](Watch* w) { impl_->end_watch(w); }); });
}

void FakeApiServer::send_bookmarks(const std::string& kind) {
  impl_->run([&] {
    impl_->for_watches(kind, [&](Watch* w) {
      if (w->bookmarks) impl_->enqueue(w, impl_->bookmark(*w->type).dump() + "\n");
    });
  });
}

void FakeApiServer::set_event_delay(std::chrono::milliseconds d) {
  impl_->run([&] { impl_->event_delay = d; });
}

void FakeApiServer::fail_requests(const std::string& method, const std::string& path,
                                  int http_status, int times) {
  impl_->run([&] { impl_->injected.push_back({method, path, http_status, times}); });
}

void FakeApiServer::set_expired_watch_as_event(bool as_event) {
  impl_->run([&] { impl_->expired_as_event = as_event; });
}

std::vector<RecordedRequest> FakeApiServer::requests() {
  return impl_->run([&] { return impl_->requests; });
}

void FakeApiServer::clear_requests() {
  impl_->run([&] { impl_->requests.clear(); });
}

size_t FakeApiServer::open_watches(const std::string& kind) {
  return impl_->run([&] {
    size_t n = 0;
    impl_->for_watches(kind, [&](Watch*) { ++n; });
    return n;
  });
}

std::vector<StatusPatch> FakeApiServer::status_patches() {
  return impl_->run([&] { return impl_->patches; });
}

size_t FakeApiServer::connection_count() {
  return impl_->run([&] { return impl_->conns.size(); });
}

}  // namespace warren::fakes
