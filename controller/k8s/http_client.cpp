#include "k8s/http_client.h"

#include <curl/curl.h>
#include <spdlog/spdlog.h>
#include <uv.h>

#include <deque>
#include <mutex>
#include <set>
#include <unordered_map>

#include "k8s/api.h"

namespace warren::controller::k8s {

// ---- Client -----------------------------------------------------------------------------

namespace {

struct SockCtx {
  uv_poll_t poll;
  curl_socket_t fd;
  Client::Impl* impl;
};

constexpr size_t kMaxBody = 512u << 20;

}  // namespace

struct Call {
  Client::Impl* impl = nullptr;
  Client::CallId id = 0;
  HttpRequest req;
  Client::DoneFn done;
  std::shared_ptr<Client::DataFn> data;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  bool attached = false;  // added to the multi handle
  bool queued = false;    // in the ready queue
  bool retried_401 = false;
  std::string body;            // buffered body
  std::string stream_pending;  // streamed bytes not yet delivered
  std::optional<Result<HttpResponse>> result;
  char errbuf[CURL_ERROR_SIZE] = {};

  ~Call();
};

struct Client::Impl {
  uv_loop_t* loop = nullptr;
  CURLM* multi = nullptr;
  uv_timer_t timer;  // curl's timeout
  uv_timer_t kick;   // deferred delivery
  ClusterConfig cfg;
  ClientOptions opts;
  TokenSource tokens;
  std::string url_base;
  curl_slist* connect_to = nullptr;
  std::unordered_map<CallId, std::unique_ptr<Call>> calls;
  std::deque<CallId> ready;
  std::set<SockCtx*> sockets;
  CallId next_id = 1;
  int open_handles = 0;
  bool dead = false;
  bool dispatching = false;

  Impl(uv_loop_t* l, ClusterConfig c, ClientOptions o)
      : loop(l), cfg(std::move(c)), opts(std::move(o)), tokens(cfg.token, cfg.token_file) {}

  // ---- libcurl callbacks ----
  static int socket_fn(CURL*, curl_socket_t s, int what, void* ud, void* sockp) {
    auto* im = static_cast<Impl*>(ud);
    auto* sc = static_cast<SockCtx*>(sockp);
    if (what == CURL_POLL_REMOVE) {
      if (sc) {
        im->close_sock(sc);
        curl_multi_assign(im->multi, s, nullptr);
      }
      return 0;
    }
    if (!sc) {
      sc = new SockCtx{};
      sc->fd = s;
      sc->impl = im;
      if (int rc = uv_poll_init_socket(im->loop, &sc->poll, s); rc != 0) {
        spdlog::error("kubernetes client: uv_poll_init_socket: {}", uv_strerror(rc));
        delete sc;
        return -1;
      }
      sc->poll.data = sc;
      ++im->open_handles;
      im->sockets.insert(sc);
      curl_multi_assign(im->multi, s, sc);
    }
    int ev = 0;
    if (what & CURL_POLL_IN) ev |= UV_READABLE;
    if (what & CURL_POLL_OUT) ev |= UV_WRITABLE;
    uv_poll_start(&sc->poll, ev, &Impl::on_poll);
    return 0;
  }

  static int timer_fn(CURLM*, long timeout_ms, void* ud) {
    auto* im = static_cast<Impl*>(ud);
    if (im->dead) return 0;
    if (timeout_ms < 0) {
      uv_timer_stop(&im->timer);
    } else {
      uv_timer_start(&im->timer, &Impl::on_timer, static_cast<uint64_t>(timeout_ms), 0);
    }
    return 0;
  }

  static size_t write_fn(char* p, size_t size, size_t n, void* ud) {
    auto* c = static_cast<Call*>(ud);
    size_t len = size * n;
    if (c->req.stream) {
      long code = 0;
      curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &code);
      if (code >= 200 && code < 300) {
        c->stream_pending.append(p, len);
        c->impl->mark_ready(c);
        return len;
      }
    }
    if (c->body.size() + len > kMaxBody) return 0;  // aborts with CURLE_WRITE_ERROR
    c->body.append(p, len);
    return len;
  }

  // ---- libuv callbacks ----
  static void on_poll(uv_poll_t* h, int status, int events) {
    auto* sc = static_cast<SockCtx*>(h->data);
    Impl* im = sc->impl;
    int flags = 0;
    if (status < 0) flags |= CURL_CSELECT_ERR;
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    int running = 0;
    curl_multi_socket_action(im->multi, sc->fd, flags, &running);
    im->after_action();
  }

  static void on_timer(uv_timer_t* t) {
    auto* im = static_cast<Impl*>(t->data);
    int running = 0;
    curl_multi_socket_action(im->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    im->after_action();
  }

  static void on_kick(uv_timer_t* t) { static_cast<Impl*>(t->data)->dispatch(); }

  static void on_closed(uv_handle_t* h) {
    Impl* im;
    if (h->type == UV_POLL) {
      auto* sc = static_cast<SockCtx*>(h->data);
      im = sc->impl;
      delete sc;
    } else {
      im = static_cast<Impl*>(h->data);
    }
    if (--im->open_handles == 0 && im->dead) delete im;
  }

  void close_sock(SockCtx* sc) {
    if (!sockets.erase(sc)) return;
    uv_poll_stop(&sc->poll);
    uv_close(reinterpret_cast<uv_handle_t*>(&sc->poll), &Impl::on_closed);
  }

  // ---- delivery ----
  void mark_ready(Call* c) {
    if (c->queued) return;
    c->queued = true;
    ready.push_back(c->id);
  }

  void after_action() {
    collect_done();
    dispatch();
  }

  void collect_done() {
    int left = 0;
    while (CURLMsg* m = curl_multi_info_read(multi, &left)) {
      if (m->msg != CURLMSG_DONE) continue;
      CURL* e = m->easy_handle;
      CURLcode rc = m->data.result;
      Call* c = nullptr;
      curl_easy_getinfo(e, CURLINFO_PRIVATE, &c);
      curl_multi_remove_handle(multi, e);
      c->attached = false;
      long code = 0;
      curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
      if (rc == CURLE_OK && code == 401 && !c->retried_401 && tokens.from_file()) {
        c->retried_401 = true;
        tokens.reload();
        spdlog::info("kubernetes: {} {}: 401, re-read the token file, retrying once",
                     c->req.method, c->req.path);
        c->body.clear();
        if (attach(c)) continue;
      }
      if (rc != CURLE_OK) {
        Errc ec = Errc::kUnavailable;
        if (rc == CURLE_OPERATION_TIMEDOUT) ec = Errc::kTimeout;
        if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CONNECT_ERROR ||
            rc == CURLE_SSL_CERTPROBLEM || rc == CURLE_SSL_CACERT_BADFILE)
          ec = Errc::kTls;
        std::string why = c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc);
        c->result = make_error(ec, c->req.method + " " + c->req.path + ": " + why);
      } else {
        c->result = HttpResponse{static_cast<int>(code), std::move(c->body)};
      }
      mark_ready(c);
    }
  }

  void dispatch() {
    if (dispatching || dead) return;
    dispatching = true;
    while (!ready.empty() && !dead) {
      CallId id = ready.front();
      ready.pop_front();
      auto it = calls.find(id);
      if (it == calls.end()) continue;
      Call* c = it->second.get();
      c->queued = false;
      if (!c->stream_pending.empty()) {
        std::string chunk;
        chunk.swap(c->stream_pending);
        if (c->data) {
          auto fn = c->data;  // the callback may cancel this call
          (*fn)(chunk);
          it = calls.find(id);
          if (it == calls.end()) continue;
          c = it->second.get();
        }
      }
      if (c->result) {
        auto done = std::move(c->done);
        Result<HttpResponse> res = std::move(*c->result);
        calls.erase(it);
        if (done) done(std::move(res));
      }
    }
    dispatching = false;
  }

  // ---- requests ----
  bool attach(Call* c) {
    if (c->headers) curl_slist_free_all(c->headers);
    c->headers = nullptr;
    c->headers = curl_slist_append(c->headers, "Accept: application/json");
    c->headers = curl_slist_append(c->headers, "Expect:");
    if (!c->req.content_type.empty())
      c->headers = curl_slist_append(c->headers, ("Content-Type: " + c->req.content_type).c_str());
    const std::string& tok = tokens.token();
    if (!tok.empty())
      c->headers = curl_slist_append(c->headers, ("Authorization: Bearer " + tok).c_str());
    curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, c->headers);
    c->errbuf[0] = 0;
    if (curl_multi_add_handle(multi, c->easy) != CURLM_OK) return false;
    c->attached = true;
    return true;
  }

  bool setup(Call* c) {
    CURL* e = curl_easy_init();
    if (!e) return false;
    c->easy = e;
    const HttpRequest& r = c->req;
    curl_easy_setopt(e, CURLOPT_URL, (url_base + r.path).c_str());
    curl_easy_setopt(e, CURLOPT_PRIVATE, c);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &Impl::write_fn);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, opts.user_agent.c_str());
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(opts.connect_timeout.count()));
    long timeout = r.timeout.count() > 0 ? static_cast<long>(r.timeout.count())
                   : r.stream            ? 0L
                                         : static_cast<long>(opts.request_timeout.count());
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 30L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 15L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    if (connect_to) curl_easy_setopt(e, CURLOPT_CONNECT_TO, connect_to);
    if (r.method == "POST") {
      curl_easy_setopt(e, CURLOPT_POST, 1L);
    } else if (r.method != "GET") {
      curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r.method.c_str());
    }
    if (!r.body.empty() || r.method == "POST" || r.method == "PUT" || r.method == "PATCH") {
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, r.body.data());
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(r.body.size()));
    }
    if (cfg.insecure) {
      curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
      curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (!cfg.ca_pem.empty()) {
      curl_blob b{cfg.ca_pem.data(), cfg.ca_pem.size(), CURL_BLOB_NOCOPY};
      curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, &b);
    } else if (!cfg.ca_file.empty()) {
      curl_easy_setopt(e, CURLOPT_CAINFO, cfg.ca_file.c_str());
    }
    if (!cfg.client_cert_pem.empty()) {
      curl_blob b{cfg.client_cert_pem.data(), cfg.client_cert_pem.size(), CURL_BLOB_NOCOPY};
      curl_easy_setopt(e, CURLOPT_SSLCERT_BLOB, &b);
    } else if (!cfg.client_cert_file.empty()) {
      curl_easy_setopt(e, CURLOPT_SSLCERT, cfg.client_cert_file.c_str());
    }
    if (!cfg.client_key_pem.empty()) {
      curl_blob b{cfg.client_key_pem.data(), cfg.client_key_pem.size(), CURL_BLOB_NOCOPY};
      curl_easy_setopt(e, CURLOPT_SSLKEY_BLOB, &b);
    } else if (!cfg.client_key_file.empty()) {
      curl_easy_setopt(e, CURLOPT_SSLKEY, cfg.client_key_file.c_str());
    }
    curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
    curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
    return attach(c);
  }

  void shutdown() {
    dead = true;
    for (SockCtx* sc : sockets) uv_poll_stop(&sc->poll);
    calls.clear();
    ready.clear();
    curl_multi_cleanup(multi);
    multi = nullptr;
    if (connect_to) curl_slist_free_all(connect_to);
    connect_to = nullptr;
    while (!sockets.empty()) close_sock(*sockets.begin());
    uv_timer_stop(&timer);
    uv_timer_stop(&kick);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer), &Impl::on_closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&kick), &Impl::on_closed);
  }
};

Call::~Call() {
  if (easy) {
    if (attached) curl_multi_remove_handle(impl->multi, easy);
    curl_easy_cleanup(easy);
  }
  if (headers) curl_slist_free_all(headers);
}

namespace {

// With tls-server-name, the URL names the expected certificate name and
// CONNECT_TO sends the connection to the real host.
void apply_tls_server_name(Client::Impl* im) {
  const std::string& s = im->cfg.server;
  size_t scheme_end = s.find("://");
  if (im->cfg.tls_server_name.empty() || scheme_end == std::string::npos) return;
  std::string scheme = s.substr(0, scheme_end);
  std::string rest = s.substr(scheme_end + 3);
  size_t path_start = rest.find('/');
  std::string authority = rest.substr(0, path_start);
  std::string path = path_start == std::string::npos ? "" : rest.substr(path_start);
  std::string host = authority, port = scheme == "https" ? "443" : "80";
  size_t colon = authority.rfind(':');
  if (colon != std::string::npos && authority.find(']', colon) == std::string::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  im->url_base = scheme + "://" + im->cfg.tls_server_name + ":" + port + path;
  std::string rule = im->cfg.tls_server_name + ":" + port + ":" + host + ":" + port;
  im->connect_to = curl_slist_append(nullptr, rule.c_str());
}

}  // namespace

Result<std::unique_ptr<Client>> Client::create(uv_loop_t* loop, ClusterConfig cfg,
                                               ClientOptions opts) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (cfg.server.rfind("https://", 0) != 0 && cfg.server.rfind("http://", 0) != 0)
    return make_error(Errc::kInvalidArgument,
                      "kubernetes: server \"" + cfg.server + "\" is not an http(s) URL");
  auto* im = new Impl(loop, std::move(cfg), std::move(opts));
  im->url_base = im->cfg.server;
  apply_tls_server_name(im);
  im->multi = curl_multi_init();
  curl_multi_setopt(im->multi, CURLMOPT_SOCKETFUNCTION, &Impl::socket_fn);
  curl_multi_setopt(im->multi, CURLMOPT_SOCKETDATA, im);
  curl_multi_setopt(im->multi, CURLMOPT_TIMERFUNCTION, &Impl::timer_fn);
  curl_multi_setopt(im->multi, CURLMOPT_TIMERDATA, im);
  uv_timer_init(loop, &im->timer);
  im->timer.data = im;
  uv_timer_init(loop, &im->kick);
  im->kick.data = im;
  im->open_handles = 2;
  return std::unique_ptr<Client>(new Client(im));
}

Client::~Client() { impl_->shutdown(); }

Client::CallId Client::start(HttpRequest req, DoneFn done, DataFn data) {
  auto c = std::make_unique<Call>();
  c->impl = impl_;
  c->id = impl_->next_id++;
  c->req = std::move(req);
  c->done = std::move(done);
  if (data) c->data = std::make_shared<DataFn>(std::move(data));
  Call* raw = c.get();
  CallId id = raw->id;
  impl_->calls.emplace(id, std::move(c));
  if (!impl_->setup(raw)) {
    raw->result = make_error(Errc::kInternal, raw->req.method + " " + raw->req.path +
                                                  ": could not start the request");
    impl_->mark_ready(raw);
    uv_timer_start(&impl_->kick, &Impl::on_kick, 0, 0);
  }
  return id;
}

void Client::cancel(CallId id) { impl_->calls.erase(id); }

size_t Client::active_calls() const { return impl_->calls.size(); }
const ClusterConfig& Client::config() const { return impl_->cfg; }
uv_loop_t* Client::loop() const { return impl_->loop; }
TokenSource& Client::tokens() { return impl_->tokens; }

}  // namespace warren::controller::k8s
