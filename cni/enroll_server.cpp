#include "enroll_server.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <filesystem>
#include <set>

#include "warren/defer.h"
#include "warren/log.h"

namespace warren::cni {

namespace {

struct Client {
  uv_pipe_t pipe{};
  std::shared_ptr<EnrollServer::State> state;  // reset when the client closes
  std::string buf;
  uint64_t last_active = 0;
  bool draining = false;  // a final reply is being written; reads stopped
  bool closed = false;
};

struct WriteReq {
  uv_write_t req{};
  std::string data;
};

void close_client(Client* c);

}  // namespace

struct EnrollServer::State : std::enable_shared_from_this<EnrollServer::State> {
  uv_loop_t* loop = nullptr;
  std::string path;
  Handler handler;
  uv_pipe_t* listener = nullptr;
  ino_t sock_ino = 0;
  std::set<Client*> clients;
  std::unique_ptr<Timer> sweep;
  uint64_t idle_timeout_ms = kIdleTimeoutMs;
  uint64_t served = 0;
};

namespace {

void send(Client* c, std::string data) {
  auto* w = new WriteReq;
  w->data = std::move(data);
  uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  w->req.data = w;
  int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&c->pipe), &b, 1,
                    [](uv_write_t* req, int) { delete static_cast<WriteReq*>(req->data); });
  if (rc != 0) {
    delete w;
    close_client(c);
  }
}

void close_client(Client* c) {
  if (c->closed) return;
  c->closed = true;
  if (c->state) c->state->clients.erase(c);
  c->state.reset();
  uv_close(reinterpret_cast<uv_handle_t*>(&c->pipe),
           [](uv_handle_t* h) { delete static_cast<Client*>(h->data); });
}

// Replies with an error, then closes once the reply has been written.
void fail_and_close(Client* c, const std::string& msg) {
  spdlog::debug("enroll: closing client after error: {}", log::escape(msg));
  c->draining = true;
  auto* stream = reinterpret_cast<uv_stream_t*>(&c->pipe);
  uv_read_stop(stream);
  send(c, encode_reply(EnrollReply::failure(msg)));
  if (c->closed) return;
  auto* req = new uv_shutdown_t;
  req->data = c;
  if (uv_shutdown(req, stream, [](uv_shutdown_t* r, int) {
        auto* cl = static_cast<Client*>(r->data);
        delete r;
        close_client(cl);
      }) != 0) {
    delete req;
    close_client(c);
  }
}

Result<void> call_handler(const EnrollServer::Handler& h, const EnrollRequest& req) {
  try {
    return h(req);
  } catch (const std::exception& e) {
    return make_error(Errc::kInternal, std::string("handler threw: ") + e.what());
  }
}

void process_lines(Client* c) {
  while (!c->closed && !c->draining) {
    size_t nl = c->buf.find('\n');
    if (nl == std::string::npos) {
      if (c->buf.size() > kMaxLineBytes) {
        fail_and_close(c, "request longer than " + std::to_string(kMaxLineBytes) + " bytes");
      }
      return;
    }
    std::string line = c->buf.substr(0, nl);
    c->buf.erase(0, nl + 1);
    auto req = decode_request(line);
    if (!req) {
      fail_and_close(c, req.error().message);
      return;
    }
    auto state = c->state;  // keeps the server's state alive across the handler
    auto res = call_handler(state->handler, *req);
    ++state->served;
    if (c->closed) return;  // the handler closed the server
    send(c, encode_reply(res ? EnrollReply::success() : EnrollReply::failure(res.error().message)));
  }
}

void on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
  thread_local std::array<char, kMaxLineBytes> scratch;
  *buf = uv_buf_init(scratch.data(), scratch.size());
}

void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  auto* c = static_cast<Client*>(s->data);
  if (n < 0) {
    close_client(c);
    return;
  }
  if (n == 0 || c->closed || c->draining) return;
  c->last_active = uv_now(s->loop);
  c->buf.append(buf->base, static_cast<size_t>(n));
  process_lines(c);
}

void on_connection(uv_stream_t* server, int status) {
  auto* st = static_cast<EnrollServer::State*>(server->data);
  if (status < 0) {
    spdlog::warn("enroll: accept on {}: {}", st->path, uv_strerror(status));
    return;
  }
  auto* c = new Client;
  uv_pipe_init(st->loop, &c->pipe, 0);
  c->pipe.data = c;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->pipe)) != 0) {
    close_client(c);
    return;
  }
  if (st->clients.size() >= EnrollServer::kMaxClients) {
    spdlog::warn("enroll: {} clients already connected; refusing one", st->clients.size());
    close_client(c);
    return;
  }
  c->state = st->shared_from_this();
  c->last_active = uv_now(st->loop);
  st->clients.insert(c);
  uv_read_start(reinterpret_cast<uv_stream_t*>(&c->pipe), on_alloc, on_read);
}

Result<void> remove_stale(const std::string& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return Error::sys("stat " + path);
  }
  if (!S_ISSOCK(st.st_mode)) {
    return make_error(Errc::kInvalidArgument, path + " exists and is not a socket");
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error::sys("socket");
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  path.copy(sa.sun_path, sizeof sa.sun_path - 1);
  bool live = connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
  ::close(fd);
  if (live) return make_error(Errc::kUnavailable, "another server is listening on " + path);
  if (unlink(path.c_str()) != 0 && errno != ENOENT) return Error::sys("unlink " + path);
  return {};
}

}  // namespace

EnrollServer::EnrollServer(uv_loop_t* loop, std::string path, Handler handler)
    : loop_(loop), path_(std::move(path)), state_(std::make_shared<State>()) {
  state_->loop = loop;
  state_->path = path_;
  state_->handler = std::move(handler);
}

EnrollServer::~EnrollServer() {
  close();
}

Result<void> EnrollServer::start() {
  if (state_->listener) return make_error(Errc::kInvalidArgument, "enroll server already started");
  if (path_.empty() || path_.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return make_error(Errc::kInvalidArgument,
                      "socket path must be 1.." +
                          std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " bytes: " + path_);
  }
  auto parent = std::filesystem::path(path_).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec) return make_error(Errc::kSystem, "creating " + parent.string() + ": " + ec.message());
  }
  auto stale = remove_stale(path_);
  if (!stale) return stale.error();

  auto* l = new uv_pipe_t;
  uv_pipe_init(loop_, l, 0);
  l->data = state_.get();
  auto fail = [&](const std::string& what, int rc) -> Error {
    uv_close(reinterpret_cast<uv_handle_t*>(l),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
    return make_error(Errc::kSystem, what + " " + path_ + ": " + uv_strerror(rc));
  };
  if (int rc = uv_pipe_bind(l, path_.c_str()); rc != 0) return fail("bind", rc);
  // Not connectable before listen(), so no client sees a wider mode.
  struct stat st {};
  if (chmod(path_.c_str(), 0600) != 0 || stat(path_.c_str(), &st) != 0) {
    int e = errno;
    unlink(path_.c_str());
    return fail("chmod", uv_translate_sys_error(e));
  }
  if (int rc = uv_listen(reinterpret_cast<uv_stream_t*>(l), 128, on_connection); rc != 0) {
    unlink(path_.c_str());
    return fail("listen", rc);
  }
  state_->listener = l;
  state_->sock_ino = st.st_ino;
  std::weak_ptr<State> weak = state_;
  state_->sweep = std::make_unique<Timer>(loop_);
  state_->sweep->start(1000, 1000, [weak] {
    auto s = weak.lock();
    if (!s) return;
    uint64_t now = uv_now(s->loop);
    std::vector<Client*> idle;
    for (Client* c : s->clients) {
      if (now - c->last_active >= s->idle_timeout_ms) idle.push_back(c);
    }
    for (Client* c : idle) close_client(c);
  });
  spdlog::info("enroll: listening on {}", path_);
  return {};
}

void EnrollServer::close() {
  auto& s = *state_;
  s.sweep.reset();
  if (s.listener) {
    uv_close(reinterpret_cast<uv_handle_t*>(s.listener),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
    s.listener = nullptr;
    struct stat st {};
    if (stat(path_.c_str(), &st) == 0 && st.st_ino == s.sock_ino) unlink(path_.c_str());
  }
  std::vector<Client*> all(s.clients.begin(), s.clients.end());
  for (Client* c : all) close_client(c);
}

size_t EnrollServer::clients() const {
  return state_->clients.size();
}
uint64_t EnrollServer::requests_served() const {
  return state_->served;
}
void EnrollServer::set_idle_timeout_ms(uint64_t ms) {
  state_->idle_timeout_ms = ms;
}

}  // namespace warren::cni
