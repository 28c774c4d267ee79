#include "h2_backend.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace warren::e2e {

namespace {

std::string find(const H2Fields& h, const std::string& n) {
  for (const auto& [k, v] : h)
    if (k == n) return v;
  return "";
}

std::vector<nghttp2_nv> to_nv(const H2Fields& h) {
  std::vector<nghttp2_nv> nva;
  for (const auto& [k, v] : h)
    nva.push_back(
        {(uint8_t*)k.data(), (uint8_t*)v.data(), k.size(), v.size(), NGHTTP2_NV_FLAG_NONE});
  return nva;
}

// Writes everything nghttp2 has to send; false when the socket is broken.
bool send_pending(nghttp2_session* s, int fd) {
  for (;;) {
    const uint8_t* data = nullptr;
    ssize_t n = nghttp2_session_mem_send(s, &data);
    if (n < 0) return false;
    if (n == 0) return true;
    if (!send_all(fd, data, static_cast<size_t>(n))) return false;
  }
}

// Outgoing DATA of one stream from a buffer, with trailers after it.
struct Out {
  std::string data;
  bool eof = false;
  H2Fields trailers;
  bool deferred = false;
};

ssize_t read_out(nghttp2_session* s, int32_t sid, uint8_t* buf, size_t len, uint32_t* flags,
                 Out& o) {
  size_t n = std::min(len, o.data.size());
  std::memcpy(buf, o.data.data(), n);
  o.data.erase(0, n);
  if (o.data.empty() && o.eof) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (!o.trailers.empty()) {
      auto nva = to_nv(o.trailers);
      if (nghttp2_submit_trailer(s, sid, nva.data(), nva.size()) == 0)
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      o.trailers.clear();
    }
    return static_cast<ssize_t>(n);
  }
  if (n == 0) {
    o.deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  return static_cast<ssize_t>(n);
}

void resume(nghttp2_session* s, int32_t sid, Out& o) {
  if (o.deferred) {
    o.deferred = false;
    nghttp2_session_resume_data(s, sid);
  }
}

}  // namespace

std::string H2Msg::header(const std::string& n) const {
  return find(headers, n);
}
std::string H2Msg::trailer(const std::string& n) const {
  return find(trailers, n);
}

std::string grpc_frame(const std::string& payload) {
  std::string f(5, '\0');
  uint32_t n = static_cast<uint32_t>(payload.size());
  f[1] = static_cast<char>(n >> 24);
  f[2] = static_cast<char>(n >> 16);
  f[3] = static_cast<char>(n >> 8);
  f[4] = static_cast<char>(n);
  return f + payload;
}

// ---- backend ----

struct H2Backend::Conn {
  struct Stream {
    H2Msg req;
    bool head_done = false;
    bool streaming = false;
    Out out;
  };
  H2Backend& b;
  nghttp2_session* s = nullptr;
  std::map<int32_t, Stream> streams;
  uint64_t open = 0;

  explicit Conn(H2Backend& backend) : b(backend) {}

  static Conn* self(void* ud) { return static_cast<Conn*>(ud); }

  void respond(int32_t sid, Stream& st, int status, H2Fields headers, bool with_body) {
    H2Fields h = {{":status", std::to_string(status)}};
    for (auto& f : headers) h.push_back(f);
    h.push_back({"x-backend", b.name_});
    auto nva = to_nv(h);
    nghttp2_data_provider prd{};
    prd.source.ptr = &st.out;
    prd.read_callback = [](nghttp2_session* s, int32_t sid, uint8_t* buf, size_t len,
                           uint32_t* flags, nghttp2_data_source* src, void*) -> ssize_t {
      return read_out(s, sid, buf, len, flags, *static_cast<Out*>(src->ptr));
    };
    nghttp2_submit_response(s, sid, nva.data(), nva.size(), with_body ? &prd : nullptr);
  }

  void request_ended(int32_t sid, Stream& st) {
    b.requests_++;
    {
      std::lock_guard<std::mutex> g(b.mu_);
      b.seen_.push_back(st.req);
    }
    if (st.streaming) {
      st.out.eof = true;
      st.out.trailers = {{"grpc-status", "0"}};
      return resume(s, sid, st.out);
    }
    H2Reply r;
    bool grpc = st.req.header("content-type").rfind("application/grpc", 0) == 0;
    if (b.handler_) {
      r = b.handler_(st.req);
    } else if (grpc) {
      r.headers = {{"content-type", "application/grpc"}};
      r.body = st.req.body;
      r.trailers = {{"grpc-status", "0"}};
    } else {
      r.body = b.name_ + " " + st.req.method + " " + st.req.path + "\n";
    }
    if (r.trailers_only) return respond(sid, st, r.status, r.headers, false);
    st.out.data = r.body;
    st.out.eof = true;
    st.out.trailers = r.trailers;
    respond(sid, st, r.status, r.headers, true);
  }

  void init() {
    nghttp2_session_callbacks* cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(
        cb, [](nghttp2_session*, const nghttp2_frame* f, void* ud) {
          if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
            self(ud)->streams[f->hd.stream_id];
          return 0;
        });
    nghttp2_session_callbacks_set_on_header_callback(
        cb, [](nghttp2_session*, const nghttp2_frame* f, const uint8_t* n, size_t nl,
               const uint8_t* v, size_t vl, uint8_t, void* ud) {
          auto it = self(ud)->streams.find(f->hd.stream_id);
          if (it == self(ud)->streams.end()) return 0;
          std::string name(reinterpret_cast<const char*>(n), nl),
              value(reinterpret_cast<const char*>(v), vl);
          auto& q = it->second.req;
          if (name == ":method")
            q.method = value;
          else if (name == ":path")
            q.path = value;
          else if (name == ":authority")
            q.authority = value;
          else if (!name.empty() && name[0] == ':') {
          } else if (it->second.head_done)
            q.trailers.push_back({name, value});
          else
            q.headers.push_back({name, value});
          return 0;
        });
    nghttp2_session_callbacks_set_on_frame_recv_callback(
        cb, [](nghttp2_session*, const nghttp2_frame* f, void* ud) {
          Conn* c = self(ud);
          auto it = c->streams.find(f->hd.stream_id);
          if (it == c->streams.end()) return 0;
          Stream& st = it->second;
          if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
            st.head_done = true;
            ++c->open;
            uint64_t m = c->b.max_open_.load();
            while (c->open > m && !c->b.max_open_.compare_exchange_weak(m, c->open)) {
            }
            if (st.req.path.rfind("/stream/", 0) == 0) {
              st.streaming = true;
              std::string ct = st.req.header("content-type");
              c->respond(f->hd.stream_id, st, 200,
                         {{"content-type", ct.empty() ? "application/grpc" : ct}}, true);
            }
          }
          if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
              (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
            st.req.ended = true;
            c->request_ended(f->hd.stream_id, st);
          }
          return 0;
        });
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        cb, [](nghttp2_session* s, uint8_t, int32_t sid, const uint8_t* d, size_t len, void* ud) {
          auto it = self(ud)->streams.find(sid);
          if (it == self(ud)->streams.end()) return 0;
          it->second.req.body.append(reinterpret_cast<const char*>(d), len);
          if (it->second.streaming) {
            it->second.out.data.append(reinterpret_cast<const char*>(d), len);
            resume(s, sid, it->second.out);
          }
          return 0;
        });
    nghttp2_session_callbacks_set_on_stream_close_callback(
        cb, [](nghttp2_session*, int32_t sid, uint32_t, void* ud) {
          Conn* c = self(ud);
          auto it = c->streams.find(sid);
          if (it == c->streams.end()) return 0;
          if (it->second.head_done) --c->open;
          c->streams.erase(it);
          return 0;
        });
    nghttp2_session_server_new(&s, cb, this);
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1000}};
    nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, iv, 1);
  }
  ~Conn() {
    if (s) nghttp2_session_del(s);
  }
};

H2Backend::H2Backend(const std::string& ip, uint16_t port, std::string name, Handler h)
    : ThreadedServer(ip, port, "H2Backend"), name_(std::move(name)), handler_(std::move(h)) {
  start();
}

H2Backend::~H2Backend() { stop(); }

std::vector<H2Msg> H2Backend::seen() {
  std::lock_guard<std::mutex> g(mu_);
  return seen_;
}

void H2Backend::serve(int fd) {
  Conn c(*this);
  c.init();
  char buf[16384];
  while (!stopping()) {
    if (!send_pending(c.s, fd)) break;
    if (!nghttp2_session_want_read(c.s) && !nghttp2_session_want_write(c.s)) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    if (nghttp2_session_mem_recv(c.s, reinterpret_cast<uint8_t*>(buf), static_cast<size_t>(n)) < 0)
      break;
  }
  send_pending(c.s, fd);
  ::shutdown(fd, SHUT_RDWR);
  finish(fd);
}

// ---- client ----

struct H2cClientCallbacks {
  static H2cClient* self(void* ud) { return static_cast<H2cClient*>(ud); }
  static H2cClient::Stream* stream(void* ud, int32_t sid) {
    auto it = self(ud)->streams_.find(sid);
    return it == self(ud)->streams_.end() ? nullptr : &it->second;
  }
};

H2cClient::H2cClient(Fd fd) : fd_(std::move(fd)) {
  nghttp2_session_callbacks* cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_on_header_callback(
      cb, [](nghttp2_session*, const nghttp2_frame* f, const uint8_t* n, size_t nl,
             const uint8_t* v, size_t vl, uint8_t, void* ud) {
        auto* st = H2cClientCallbacks::stream(ud, f->hd.stream_id);
        if (!st) return 0;
        std::string name(reinterpret_cast<const char*>(n), nl),
            value(reinterpret_cast<const char*>(v), vl);
        if (name == ":status") {
          st->msg.status = std::atoi(value.c_str());
          st->msg.headers.clear();  // a final response after a 1xx
        } else if (f->headers.cat == NGHTTP2_HCAT_HEADERS && st->msg.status >= 200) {
          st->msg.trailers.push_back({name, value});
        } else {
          st->msg.headers.push_back({name, value});
        }
        return 0;
      });
  nghttp2_session_callbacks_set_on_frame_recv_callback(
      cb, [](nghttp2_session*, const nghttp2_frame* f, void* ud) {
        if (f->hd.type == NGHTTP2_GOAWAY) {
          H2cClientCallbacks::self(ud)->goaway_ = true;
          H2cClientCallbacks::self(ud)->goaway_code_ = f->goaway.error_code;
        }
        auto* st = H2cClientCallbacks::stream(ud, f->hd.stream_id);
        if (st && (f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
            (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
          st->msg.ended = true;
        if (st && f->hd.type == NGHTTP2_RST_STREAM) st->msg.reset_code = f->rst_stream.error_code;
        return 0;
      });
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
      cb, [](nghttp2_session*, uint8_t, int32_t sid, const uint8_t* d, size_t len, void* ud) {
        if (auto* st = H2cClientCallbacks::stream(ud, sid))
          st->msg.body.append(reinterpret_cast<const char*>(d), len);
        return 0;
      });
  nghttp2_session_callbacks_set_on_stream_close_callback(
      cb, [](nghttp2_session*, int32_t sid, uint32_t code, void* ud) {
        if (auto* st = H2cClientCallbacks::stream(ud, sid)) {
          st->msg.closed = true;
          if (code && !st->msg.reset_code) st->msg.reset_code = code;
        }
        return 0;
      });
  nghttp2_session_client_new(&session_, cb, this);
  nghttp2_session_callbacks_del(cb);
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, nullptr, 0);
}

H2cClient::~H2cClient() {
  if (session_) nghttp2_session_del(session_);
}

int32_t H2cClient::request(const std::string& method, const std::string& path,
                           const H2Fields& headers, const std::string& body, bool end,
                           const std::string& authority) {
  H2Fields h = {
      {":method", method}, {":scheme", "http"}, {":authority", authority}, {":path", path}};
  for (auto& f : headers) h.push_back(f);
  auto nva = to_nv(h);
  // The stream's buffer must exist before nghttp2 asks for DATA: use a
  // placeholder id, then move it under the real one.
  Stream st;
  st.out = body;
  st.out_eof = end;
  bool with_body = !body.empty() || !end;
  auto& tmp = streams_[-1];
  tmp = std::move(st);
  nghttp2_data_provider prd{};
  prd.read_callback = [](nghttp2_session* s, int32_t sid, uint8_t* buf, size_t len, uint32_t* flags,
                         nghttp2_data_source*, void* ud) -> ssize_t {
    auto* st = H2cClientCallbacks::stream(ud, sid);
    if (!st) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    Out o{std::move(st->out), st->out_eof, std::move(st->out_trailers), false};
    ssize_t n = read_out(s, sid, buf, len, flags, o);
    st->out = std::move(o.data);
    st->out_trailers = std::move(o.trailers);
    if (o.deferred) st->deferred = true;
    return n;
  };
  int32_t sid = nghttp2_submit_request(session_, nullptr, nva.data(), nva.size(),
                                       with_body ? &prd : nullptr, nullptr);
  Stream moved = std::move(streams_[-1]);
  streams_.erase(-1);
  if (sid < 0) return sid;
  streams_[sid] = std::move(moved);
  send_pending(session_, fd_.get());
  return sid;
}

void H2cClient::send(int32_t sid, const std::string& data, bool end, const H2Fields& trailers) {
  auto it = streams_.find(sid);
  if (it == streams_.end()) return;
  it->second.out += data;
  if (end) {
    it->second.out_eof = true;
    it->second.out_trailers = trailers;
  }
  if (it->second.deferred) {
    it->second.deferred = false;
    nghttp2_session_resume_data(session_, sid);
  }
  send_pending(session_, fd_.get());
}

void H2cClient::reset(int32_t sid) {
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, sid, NGHTTP2_CANCEL);
  send_pending(session_, fd_.get());
}

bool H2cClient::pump(int timeout_ms) {
  if (eof_) return false;
  if (!send_pending(session_, fd_.get())) {
    eof_ = true;
    return false;
  }
  pollfd p{fd_.get(), POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) <= 0) return true;
  char buf[16384];
  ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
  if (n <= 0) {
    eof_ = true;
    return false;
  }
  if (nghttp2_session_mem_recv(session_, reinterpret_cast<uint8_t*>(buf), static_cast<size_t>(n)) <
      0) {
    eof_ = true;
    return false;
  }
  return send_pending(session_, fd_.get());
}

bool H2cClient::run_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    if (!pump(50) && !pred()) return false;
  }
  return true;
}

H2Msg H2cClient::get(int32_t sid, std::chrono::milliseconds timeout) {
  if (sid < 0) return {};
  run_until([&] { return streams_[sid].msg.closed; }, timeout);
  return streams_[sid].msg;
}

H2Msg H2cClient::fetch(const std::string& method, const std::string& path, const H2Fields& headers,
                       const std::string& body) {
  return get(request(method, path, headers, body, true));
}

// ---- raw frames ----

std::string h2_frame(uint8_t type, uint8_t flags, int32_t sid, const std::string& payload) {
  std::string f(9, '\0');
  size_t n = payload.size();
  f[0] = static_cast<char>(n >> 16);
  f[1] = static_cast<char>(n >> 8);
  f[2] = static_cast<char>(n);
  f[3] = static_cast<char>(type);
  f[4] = static_cast<char>(flags);
  f[5] = static_cast<char>((sid >> 24) & 0x7f);
  f[6] = static_cast<char>(sid >> 16);
  f[7] = static_cast<char>(sid >> 8);
  f[8] = static_cast<char>(sid);
  return f + payload;
}

namespace {
// HPACK string literal without Huffman coding (lengths < 127 only).
std::string hpack_string(const std::string& s) {
  return std::string(1, static_cast<char>(s.size())) + s;
}
}  // namespace

std::string hpack_request(const std::string& path, const std::string& authority,
                          const H2Fields& extra) {
  std::string b;
  b += '\x82';  // :method GET
  b += '\x86';  // :scheme http
  b += '\x04';  // :path, literal without indexing, name index 4
  b += hpack_string(path);
  b += '\x01';  // :authority, literal without indexing, name index 1
  b += hpack_string(authority);
  for (const auto& [k, v] : extra) {
    b += '\x00';  // literal without indexing, new name
    b += hpack_string(k);
    b += hpack_string(v);
  }
  return b;
}

bool read_frame(int fd, H2RawFrame* f, std::chrono::milliseconds timeout) {
  set_recv_timeout(fd, timeout);
  uint8_t hd[9];
  if (!recv_exact(fd, hd, sizeof hd)) return false;
  size_t len = (hd[0] << 16) | (hd[1] << 8) | hd[2];
  f->type = hd[3];
  f->flags = hd[4];
  f->sid = static_cast<int32_t>(((hd[5] & 0x7f) << 24) | (hd[6] << 16) | (hd[7] << 8) | hd[8]);
  f->payload.assign(len, '\0');
  return len == 0 || recv_exact(fd, f->payload.data(), len);
}

bool read_until_goaway_and_close(int fd, uint32_t* code, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string in;
  bool goaway = false;
  char buf[65536];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return goaway;
    in.append(buf, static_cast<size_t>(n));
    while (in.size() >= 9) {
      size_t len = (static_cast<uint8_t>(in[0]) << 16) | (static_cast<uint8_t>(in[1]) << 8) |
                   static_cast<uint8_t>(in[2]);
      if (in.size() < 9 + len) break;
      if (in[3] == NGHTTP2_GOAWAY && len >= 8) {
        goaway = true;
        if (code)
          *code = (static_cast<uint32_t>(static_cast<uint8_t>(in[13])) << 24) |
                  (static_cast<uint32_t>(static_cast<uint8_t>(in[14])) << 16) |
                  (static_cast<uint32_t>(static_cast<uint8_t>(in[15])) << 8) |
                  static_cast<uint8_t>(in[16]);
      }
      in.erase(0, 9 + len);
    }
  }
}

}  // namespace warren::e2e
