#include "warren/http_server.h"

#include <http_parser.h>
#include <uv.h>

#include <algorithm>
#include <cctype>
#include <set>

namespace warren::http {

namespace {

constexpr uint64_t kLingerMs = 2000;  // reading and discarding after our final response
constexpr size_t kReadBufSize = 64 * 1024;

int hex_val(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string form_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '+') {
      out += ' ';
    } else if (c == '%' && i + 2 < s.size() && hex_val(s[i + 1]) >= 0 && hex_val(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_val(s[i + 1]) * 16 + hex_val(s[i + 2]));
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

// Calls fn(key, value) for each "k=v" of a query string, raw (not decoded).
template <typename F>
bool for_each_param(std::string_view q, F&& fn) {
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view part = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
    if (part.empty()) continue;
    size_t eq = part.find('=');
    std::string_view k = part.substr(0, eq);
    std::string_view v = eq == std::string_view::npos ? std::string_view{} : part.substr(eq + 1);
    if (fn(k, v)) return true;
  }
  return false;
}

// Header values we write must not be able to start a new header line.
std::string strip_crlf(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c != '\r' && c != '\n') out += c;
  }
  return out;
}

Error uv_error(const std::string& what, int rc) {
  return Error{Errc::kSystem, what + ": " + uv_strerror(rc), -rc};
}

}  // namespace

const char* reason_phrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 413:
      return "Payload Too Large";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

// ---------------------------------------------------------------- Request

std::string Request::query_param(std::string_view name) const {
  std::string out;
  for_each_param(query, [&](std::string_view k, std::string_view v) {
    if (form_decode(k) != name) return false;
    out = form_decode(v);
    return true;
  });
  return out;
}

bool Request::has_query_param(std::string_view name) const {
  return for_each_param(
      query, [&](std::string_view k, std::string_view) { return form_decode(k) == name; });
}

std::string Request::header(std::string_view lower_name) const {
  auto it = headers.find(std::string(lower_name));
  return it == headers.end() ? std::string() : it->second;
}

// ---------------------------------------------------------------- internals

struct Conn;

struct Server::Impl {
  uv_loop_t* loop;
  Options opts;
  std::map<std::string, std::map<std::string, Handler>> routes;  // path -> method -> handler
  uv_tcp_t* listener = nullptr;
  std::set<Conn*> conns;
  size_t live_handles = 0;  // handles whose close callback has not run yet
  bool detached = false;    // the Server object is gone
  char read_buf[kReadBufSize];

  Impl(uv_loop_t* l, Options o) : loop(l), opts(o) {}
  void maybe_free() {
    if (detached && live_handles == 0) delete this;
  }
  void close_all();
  void on_connection();
  Response dispatch(const Request& req) const;
};

struct Conn {
  Server::Impl* srv;
  uv_tcp_t tcp;
  uv_timer_t timer;
  int open_handles = 0;

  http_parser parser;
  Request req;
  std::string url;
  std::string field, value;
  bool last_was_value = false;
  size_t head_bytes = 0;
  int fail_status = 0;  // 431 / 413 set by a callback before it stops the parser

  size_t pending_writes = 0;
  bool read_paused = false;  // backpressure
  bool final_sent = false;   // no more requests: close once writes are done
  bool draining = false;     // FIN sent, discarding input until EOF or linger timeout
  bool closing = false;

  explicit Conn(Server::Impl* s) : srv(s) {}
};

namespace {

struct WriteReq {
  uv_write_t req;
  std::string data;
};

void on_handle_closed(uv_handle_t* h) {
  auto* c = static_cast<Conn*>(h->data);
  Server::Impl* srv = c->srv;
  if (--c->open_handles == 0) delete c;
  --srv->live_handles;
  srv->maybe_free();
}

void close_conn(Conn* c) {
  if (c->closing) return;
  c->closing = true;
  c->srv->conns.erase(c);
  uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), on_handle_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), on_handle_closed);
}

uv_stream_t* stream(Conn* c) {
  return reinterpret_cast<uv_stream_t*>(&c->tcp);
}

void on_timeout(uv_timer_t* t) {
  close_conn(static_cast<Conn*>(t->data));
}

void arm_timer(Conn* c, uint64_t ms) {
  if (!c->closing) uv_timer_start(&c->timer, on_timeout, ms, 0);
}

void on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  // One buffer per server: libuv hands it to on_read before the next alloc,
  // and on_read consumes it synchronously.
  auto* c = static_cast<Conn*>(h->data);
  *buf = uv_buf_init(c->srv->read_buf, sizeof c->srv->read_buf);
}

void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);

void on_shutdown(uv_shutdown_t* req, int status) {
  auto* c = static_cast<Conn*>(req->data);
  delete req;
  if (c->closing) return;
  if (status < 0) {
    close_conn(c);
    return;
  }
  // Lingering close: keep reading (and dropping) so unread input does not make
  // the kernel answer with RST, which could destroy our final response.
  c->draining = true;
  arm_timer(c, std::min(kLingerMs, c->srv->opts.idle_timeout_ms));
  if (uv_read_start(stream(c), on_alloc, on_read) < 0) close_conn(c);
}

void finish(Conn* c) {
  if (c->closing || c->draining) return;
  auto* req = new uv_shutdown_t;
  req->data = c;
  if (uv_shutdown(req, stream(c), on_shutdown) < 0) {
    delete req;
    close_conn(c);
  }
}

// After the final response: stop reading; close once it is written.
void mark_final(Conn* c) {
  c->final_sent = true;
  uv_read_stop(stream(c));
  if (c->pending_writes == 0) finish(c);
}

void on_write(uv_write_t* req, int status) {
  auto* w = reinterpret_cast<WriteReq*>(req);
  auto* c = static_cast<Conn*>(req->handle->data);
  delete w;
  --c->pending_writes;
  if (c->closing) return;
  if (status < 0) {
    close_conn(c);
    return;
  }
  if (c->final_sent) {
    if (c->pending_writes == 0) finish(c);
    return;
  }
  if (c->read_paused &&
      uv_stream_get_write_queue_size(stream(c)) <= c->srv->opts.max_pending_write_bytes / 2) {
    c->read_paused = false;
    if (uv_read_start(stream(c), on_alloc, on_read) < 0) close_conn(c);
  }
}

void send_response(Conn* c, const Response& r, bool head_only, bool keep_alive, bool http10) {
  if (c->closing || c->final_sent) return;
  auto* w = new WriteReq;
  std::string& d = w->data;
  d.reserve(160 + (head_only ? 0 : r.body.size()));
  d += "HTTP/1.1 ";
  d += std::to_string(r.status);
  d += ' ';
  d += reason_phrase(r.status);
  d += "\r\nContent-Type: ";
  d += strip_crlf(r.content_type);
  d += "\r\nContent-Length: ";
  d += std::to_string(r.body.size());
  d += "\r\n";
  for (const auto& [k, v] : r.headers) {
    d += strip_crlf(k);
    d += ": ";
    d += strip_crlf(v);
    d += "\r\n";
  }
  if (!keep_alive) {
    d += "Connection: close\r\n";
  } else if (http10) {
    d += "Connection: keep-alive\r\n";
  }
  d += "\r\n";
  if (!head_only) d += r.body;
  uv_buf_t buf = uv_buf_init(d.data(), static_cast<unsigned>(d.size()));
  int rc = uv_write(&w->req, stream(c), &buf, 1, on_write);
  if (rc < 0) {
    delete w;
    close_conn(c);
    return;
  }
  ++c->pending_writes;
  if (!keep_alive) mark_final(c);
}

void send_error(Conn* c, int status, std::string body) {
  Response r;
  r.status = status;
  r.body = std::move(body);
  send_response(c, r, false, false, false);
}

Conn* conn_of(http_parser* p) {
  return static_cast<Conn*>(p->data);
}

// Head size: request line plus header names and values as they stream in.
int add_head_bytes(Conn* c, size_t n) {
  c->head_bytes += n;
  if (c->head_bytes > c->srv->opts.max_head_bytes) {
    c->fail_status = 431;
    return -1;
  }
  return 0;
}

void commit_header(Conn* c) {
  if (c->field.empty()) return;
  std::string name = c->field;
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  auto [it, inserted] = c->req.headers.try_emplace(std::move(name), c->value);
  if (!inserted) {
    it->second += ", ";
    it->second += c->value;
  }
  c->field.clear();
  c->value.clear();
  c->last_was_value = false;
}

int on_message_begin(http_parser* p) {
  Conn* c = conn_of(p);
  c->req = Request{};
  c->url.clear();
  c->field.clear();
  c->value.clear();
  c->last_was_value = false;
  c->head_bytes = 0;
  return 0;
}

int on_url(http_parser* p, const char* at, size_t len) {
  Conn* c = conn_of(p);
  if (add_head_bytes(c, len) != 0) return -1;
  c->url.append(at, len);
  return 0;
}

int on_header_field(http_parser* p, const char* at, size_t len) {
  Conn* c = conn_of(p);
  if (add_head_bytes(c, len + 4) != 0) return -1;  // + ": " and CRLF, roughly
  if (c->last_was_value) commit_header(c);
  c->field.append(at, len);
  return 0;
}

int on_header_value(http_parser* p, const char* at, size_t len) {
  Conn* c = conn_of(p);
  if (add_head_bytes(c, len) != 0) return -1;
  c->value.append(at, len);
  c->last_was_value = true;
  return 0;
}

int on_headers_complete(http_parser* p) {
  Conn* c = conn_of(p);
  commit_header(c);
  if (p->http_major != 1) {
    c->fail_status = 505;
    return -1;
  }
  if ((p->flags & F_CONTENTLENGTH) && p->content_length > c->srv->opts.max_body_bytes) {
    c->fail_status = 413;
    return -1;
  }
  return 0;
}

int on_body(http_parser* p, const char* at, size_t len) {
  Conn* c = conn_of(p);
  if (c->req.body.size() + len > c->srv->opts.max_body_bytes) {
    c->fail_status = 413;
    return -1;
  }
  c->req.body.append(at, len);
  return 0;
}

int on_message_complete(http_parser* p) {
  Conn* c = conn_of(p);
  if (c->closing || c->final_sent) return -1;
  Request& req = c->req;
  req.method = http_method_str(static_cast<http_method>(p->method));
  http_parser_url u;
  http_parser_url_init(&u);
  bool is_connect = p->method == HTTP_CONNECT;
  if (http_parser_parse_url(c->url.data(), c->url.size(), is_connect, &u) != 0) {
    send_error(c, 400, "bad request target\n");
    return -1;
  }
  if (u.field_set & (1 << UF_PATH)) {
    req.path = c->url.substr(u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
  } else {
    req.path = "/";
  }
  if (u.field_set & (1 << UF_QUERY)) {
    req.query = c->url.substr(u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
  }
  bool keep_alive = http_should_keep_alive(p) != 0 && !p->upgrade && !is_connect;
  bool http10 = p->http_major == 1 && p->http_minor == 0;
  bool head_only = p->method == HTTP_HEAD;
  Response resp = c->srv->dispatch(req);
  send_response(c, resp, head_only, keep_alive, http10);
  arm_timer(c, c->srv->opts.idle_timeout_ms);  // the next request gets a fresh deadline
  return c->final_sent ? -1 : 0;
}

const http_parser_settings kSettings = [] {
  http_parser_settings s;
  http_parser_settings_init(&s);
  s.on_message_begin = on_message_begin;
  s.on_url = on_url;
  s.on_header_field = on_header_field;
  s.on_header_value = on_header_value;
  s.on_headers_complete = on_headers_complete;
  s.on_body = on_body;
  s.on_message_complete = on_message_complete;
  return s;
}();

void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  auto* c = static_cast<Conn*>(s->data);
  if (c->closing) return;
  if (nread < 0) {  // EOF or error
    uv_read_stop(s);
    if (c->draining || c->pending_writes == 0) {
      close_conn(c);
    } else {
      c->final_sent = true;  // the peer half-closed: finish writing, then close
    }
    return;
  }
  if (nread == 0 || c->draining) return;
  size_t n = static_cast<size_t>(nread);
  size_t parsed = http_parser_execute(&c->parser, &kSettings, buf->base, n);
  if (c->closing || c->final_sent) return;
  if (parsed != n || HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
    switch (c->fail_status) {
      case 431:
        send_error(c, 431, "request head too large\n");
        break;
      case 413:
        send_error(c, 413, "request body too large\n");
        break;
      case 505:
        send_error(c, 505, "only HTTP/1.x is served here\n");
        break;
      default:
        send_error(
            c, 400,
            std::string("bad request: ") + http_errno_name(HTTP_PARSER_ERRNO(&c->parser)) + "\n");
    }
    return;
  }
  if (uv_stream_get_write_queue_size(s) > c->srv->opts.max_pending_write_bytes) {
    c->read_paused = true;
    uv_read_stop(s);
  }
}

void on_new_connection(uv_stream_t* server, int status) {
  auto* impl = static_cast<Server::Impl*>(server->data);
  if (status < 0) return;
  impl->on_connection();
}

void on_listener_closed(uv_handle_t* h) {
  auto* impl = static_cast<Server::Impl*>(h->data);
  delete reinterpret_cast<uv_tcp_t*>(h);
  --impl->live_handles;
  impl->maybe_free();
}

}  // namespace

void Server::Impl::on_connection() {
  auto* c = new Conn(this);
  if (uv_tcp_init(loop, &c->tcp) < 0) {
    delete c;
    return;
  }
  c->tcp.data = c;
  c->timer.data = c;
  ++c->open_handles;
  ++live_handles;
  if (uv_timer_init(loop, &c->timer) < 0) {
    // Only the tcp handle exists: close it alone.
    c->closing = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), on_handle_closed);
    return;
  }
  ++c->open_handles;
  ++live_handles;
  conns.insert(c);
  if (uv_accept(reinterpret_cast<uv_stream_t*>(listener), stream(c)) < 0 ||
      conns.size() > opts.max_connections) {
    close_conn(c);
    return;
  }
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  uv_tcp_nodelay(&c->tcp, 1);
  arm_timer(c, opts.idle_timeout_ms);
  if (uv_read_start(stream(c), on_alloc, on_read) < 0) close_conn(c);
}

Response Server::Impl::dispatch(const Request& req) const {
  auto pit = routes.find(req.path);
  if (pit == routes.end()) {
    Response r;
    r.status = 404;
    r.body = "no such endpoint\navailable endpoints:\n";
    for (const auto& [path, methods] : routes) {
      for (const auto& [method, h] : methods) r.body += "  " + method + " " + path + "\n";
    }
    return r;
  }
  auto mit = pit->second.find(req.method);
  if (mit == pit->second.end() && req.method == "HEAD") mit = pit->second.find("GET");
  if (mit == pit->second.end()) {
    Response r;
    r.status = 405;
    std::string allow;
    for (const auto& [method, h] : pit->second) {
      if (!allow.empty()) allow += ", ";
      allow += method;
    }
    r.body = "method " + req.method + " not allowed; allowed: " + allow + "\n";
    r.headers.emplace_back("Allow", allow);
    return r;
  }
  try {
    return mit->second(req);
  } catch (const std::exception& e) {
    Response r;
    r.status = 500;
    r.body = std::string("internal error: ") + e.what() + "\n";
    return r;
  } catch (...) {
    Response r;
    r.status = 500;
    r.body = "internal error\n";
    return r;
  }
}

void Server::Impl::close_all() {
  if (listener != nullptr) {
    uv_close(reinterpret_cast<uv_handle_t*>(listener), on_listener_closed);
    listener = nullptr;
  }
  auto copy = conns;
  for (Conn* c : copy) close_conn(c);
}

// ---------------------------------------------------------------- Server

Server::Server(uv_loop_t* loop, Options opts) : impl_(new Impl(loop, opts)) {}

Server::~Server() {
  impl_->close_all();
  impl_->detached = true;
  impl_->maybe_free();
}

void Server::route(std::string method, std::string path, Handler handler) {
  impl_->routes[std::move(path)][std::move(method)] = std::move(handler);
}

Result<SockAddr> Server::listen(const SockAddr& addr) {
  if (impl_->listener != nullptr) {
    return make_error(Errc::kInvalidArgument, "http server already listening");
  }
  auto* l = new uv_tcp_t;
  int rc = uv_tcp_init(impl_->loop, l);
  if (rc < 0) {
    delete l;
    return uv_error("uv_tcp_init", rc);
  }
  l->data = impl_;
  ++impl_->live_handles;
  sockaddr_storage ss{};
  addr.to_sockaddr(&ss);
  std::string where = "http listen on " + addr.to_string();
  rc = uv_tcp_bind(l, reinterpret_cast<const sockaddr*>(&ss), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(l), 128, on_new_connection);
  if (rc < 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(l), on_listener_closed);
    return uv_error(where, rc);
  }
  int len = sizeof ss;
  rc = uv_tcp_getsockname(l, reinterpret_cast<sockaddr*>(&ss), &len);
  if (rc < 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(l), on_listener_closed);
    return uv_error(where + ": getsockname", rc);
  }
  impl_->listener = l;
  return SockAddr::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss));
}

void Server::close() {
  impl_->close_all();
}

size_t Server::connection_count() const {
  return impl_->conns.size();
}

}  // namespace warren::http
