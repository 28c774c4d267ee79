// The fake API server's connections: TLS (warren/tls_session.h) and HTTP/1.1
// requests (http_parser); responses are written whole, watches as chunks.
#include <openssl/ssl.h>

#include <cctype>

#include "fake_internal.h"
#include "warren/http_server.h"

namespace warren::fakes {

namespace {

struct WriteReq {
  uv_write_t req;
  std::string data;
};

Conn* conn_of(http_parser* p) { return static_cast<Conn*>(p->data); }

void commit_header(Conn* c) {
  if (c->field.empty()) return;
  std::string f = c->field;
  for (auto& ch : f) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  c->req.headers[f] = c->value;
  c->field.clear();
  c->value.clear();
  c->in_value = false;
}

const http_parser_settings& settings() {
  static const http_parser_settings s = [] {
    http_parser_settings st{};
    st.on_message_begin = [](http_parser* p) {
      Conn* c = conn_of(p);
      c->req = HttpReq{};
      c->url.clear();
      c->field.clear();
      c->value.clear();
      c->in_value = false;
      return 0;
    };
    st.on_url = [](http_parser* p, const char* at, size_t n) {
      conn_of(p)->url.append(at, n);
      return 0;
    };
    st.on_header_field = [](http_parser* p, const char* at, size_t n) {
      Conn* c = conn_of(p);
      if (c->in_value) commit_header(c);
      c->field.append(at, n);
      return 0;
    };
    st.on_header_value = [](http_parser* p, const char* at, size_t n) {
      Conn* c = conn_of(p);
      c->in_value = true;
      c->value.append(at, n);
      return 0;
    };
    st.on_headers_complete = [](http_parser* p) {
      commit_header(conn_of(p));
      return 0;
    };
    st.on_body = [](http_parser* p, const char* at, size_t n) {
      conn_of(p)->req.body.append(at, n);
      return 0;
    };
    st.on_message_complete = [](http_parser* p) {
      Conn* c = conn_of(p);
      c->req.method = http_method_str(static_cast<http_method>(p->method));
      size_t q = c->url.find('?');
      c->req.path = c->url.substr(0, q);
      c->req.query = q == std::string::npos ? "" : c->url.substr(q + 1);
      c->srv->handle(c, c->req);
      return 0;
    };
    return st;
  }();
  return s;
}

}  // namespace

void Conn::parse(const char* data, size_t n) {
  if (closed) return;
  if (watch) return;  // a streaming connection takes no further requests
  size_t done = http_parser_execute(&parser, &settings(), data, n);
  if (closed) return;
  if (parser.http_errno != HPE_OK || done != n) {
    if (!watch) {
      respond(400, make_status(400, "BadRequest",
                               http_errno_description(static_cast<http_errno>(parser.http_errno))));
    }
    close();
  }
}

void Conn::on_data(const char* data, size_t n) {
  if (!tls) {
    parse(data, n);
    return;
  }
  tls->feed(data, n);
  if (!tls->handshake_done()) {
    tls::Status st = tls->handshake();
    flush_tls();
    if (st == tls::Status::kError) {
      close();
      return;
    }
    if (st != tls::Status::kOk) return;
    X509* peer = SSL_get0_peer_certificate(tls->ssl());
    client_cert_ok = peer && SSL_get_verify_result(tls->ssl()) == X509_V_OK;
  }
  char buf[16384];
  while (!closed) {
    size_t got = 0;
    tls::Status st = tls->read(buf, sizeof buf, &got);
    if (st == tls::Status::kOk) {
      parse(buf, got);
      continue;
    }
    if (st != tls::Status::kWantRead) close();
    break;
  }
  flush_tls();
}

void Conn::flush_tls() {
  if (closed || !tls || tls->output().empty()) return;
  auto* w = new WriteReq;
  w->data = tls->take_output();
  uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  if (uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&tcp), &b, 1,
               [](uv_write_t* r, int) { delete reinterpret_cast<WriteReq*>(r); }) != 0) {
    delete w;
  }
}

void Conn::send(std::string data) {
  if (closed) return;
  if (tls) {
    tls->write(data.data(), data.size());
    flush_tls();
    return;
  }
  auto* w = new WriteReq;
  w->data = std::move(data);
  uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  if (uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&tcp), &b, 1,
               [](uv_write_t* r, int) { delete reinterpret_cast<WriteReq*>(r); }) != 0) {
    delete w;
  }
}

void Conn::respond(int code, const nlohmann::json& body) {
  std::string b = body.is_null() ? std::string() : body.dump();
  std::string head = "HTTP/1.1 " + std::to_string(code) + " " + http::reason_phrase(code) +
                     "\r\nContent-Type: application/json\r\nCache-Control: no-cache, private\r\n"
                     "Content-Length: " +
                     std::to_string(b.size()) + "\r\n\r\n";
  send(head + b);
}

void Conn::close() {
  if (closed) return;
  closed = true;
  watch.reset();
  srv->conns.erase(this);
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp),
           [](uv_handle_t* h) { delete static_cast<Conn*>(h->data); });
}

Watch::~Watch() {
  if (conn) conn->srv->watches.erase(this);
  for (uv_timer_t* t : {delay_timer, timeout_timer}) {
    if (!t) continue;
    t->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(t),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  }
}

}  // namespace warren::fakes
