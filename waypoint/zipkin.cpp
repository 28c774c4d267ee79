#include "zipkin.h"

#include <deque>
#include <mutex>

namespace warren::waypoint {

// ---------------------------------------------------------------- JSON

ZipkinEndpoint endpoint_from_address(std::string_view a, std::string service_name) {
  ZipkinEndpoint e;
  e.service_name = std::move(service_name);
  std::string_view host = a, port;
  if (!a.empty() && a.front() == '[') {
    size_t close = a.find(']');
    if (close == std::string_view::npos) return e;
    host = a.substr(1, close - 1);
    if (close + 1 < a.size() && a[close + 1] == ':') port = a.substr(close + 2);
  } else if (size_t colon = a.rfind(':');
             colon != std::string_view::npos && a.find(':') == colon) {  // one ':': IPv4:port
    host = a.substr(0, colon);
    port = a.substr(colon + 1);
  }
  e.ip = std::string(host);
  uint32_t p = 0;
  if (!port.empty() && port.size() <= 5) {
    for (char c : port) {
      if (c < '0' || c > '9') return e;
      p = p * 10 + static_cast<uint32_t>(c - '0');
    }
    if (p <= 65535) e.port = static_cast<uint16_t>(p);
  }
  return e;
}

namespace {

void endpoint_json(std::string& out, std::string_view name, const ZipkinEndpoint& e) {
  if (e.service_name.empty() && e.ip.empty() && e.port == 0) return;
  out += ",\"";
  out += name;
  out += "\":{";
  size_t open = out.size();
  if (!e.service_name.empty()) {
    out += "\"serviceName\":";
    append_json_string(out, e.service_name);
  }
  if (!e.ip.empty()) {
    if (out.size() > open) out += ',';
    out += e.ip.find(':') == std::string::npos ? "\"ipv4\":" : "\"ipv6\":";
    append_json_string(out, e.ip);
  }
  if (e.port != 0) {
    if (out.size() > open) out += ',';
    out += "\"port\":" + std::to_string(e.port);
  }
  out += '}';
}

}  // namespace

void append_span_json(std::string& out, const SpanRecord& s) {
  out += "{\"traceId\":\"";
  out += s.trace_id_64bit ? hex16(s.trace_id.lo) : s.trace_id.hex();
  out += "\",\"id\":\"";
  out += hex16(s.id);
  out += '"';
  if (s.parent_id != 0) {
    out += ",\"parentId\":\"";
    out += hex16(s.parent_id);
    out += '"';
  }
  if (!s.name.empty()) {
    out += ",\"name\":";
    append_json_string(out, s.name);
  }
  out += s.kind == SpanRecord::Kind::kServer ? ",\"kind\":\"SERVER\"" : ",\"kind\":\"CLIENT\"";
  out += ",\"timestamp\":";
  out += std::to_string(s.timestamp_us);
  out += ",\"duration\":";
  out += std::to_string(s.duration_us > 0 ? s.duration_us : 1);
  endpoint_json(out, "localEndpoint", s.local);
  endpoint_json(out, "remoteEndpoint", s.remote);
  if (!s.tags.empty()) {
    out += ",\"tags\":{";
    bool first = true;
    for (const auto& [k, v] : s.tags) {
      if (!first) out += ',';
      first = false;
      append_json_string(out, k);
      out += ':';
      append_json_string(out, v);
    }
    out += '}';
  }
  if (s.debug) out += ",\"debug\":true";
  out += '}';
}

std::string span_json(const SpanRecord& s) {
  std::string out;
  append_span_json(out, s);
  return out;
}

SpanRecord server_span(const RequestRecord& r, const Span& span, const ZipkinEndpoint& local) {
  using namespace std::chrono;
  SpanRecord s;
  s.trace_id = span.trace_id;
  s.trace_id_64bit = span.trace_id_64bit;
  s.id = span.span_id;
  s.parent_id = span.parent_span_id;
  s.debug = span.debug;
  s.kind = SpanRecord::Kind::kServer;
  s.timestamp_us = duration_cast<microseconds>(r.start.time_since_epoch()).count();
  s.duration_us = r.duration.count();
  s.local = local;
  s.remote = endpoint_from_address(r.destination.upstream_host, r.destination.canonical_service);
  // Envoy's default operation name: "<host>:<port>/*"; the port from the
  // cluster name "outbound|<port>|<subset>|<host>".
  const auto& d = r.destination;
  std::string port;
  if (d.upstream_cluster.starts_with("outbound|")) {
    std::string_view rest = std::string_view(d.upstream_cluster).substr(9);
    port = std::string(rest.substr(0, rest.find('|')));
  }
  s.name =
      (d.service_host.empty() ? r.authority : d.service_host + (port.empty() ? "" : ":" + port)) +
      "/*";
  auto tag = [&s](std::string k, std::string v) {
    if (!v.empty()) s.tags.emplace_back(std::move(k), std::move(v));
  };
  bool error =
      r.response_code == 0 || r.response_code >= 500 || (r.grpc_status && *r.grpc_status != 0);
  tag("component", "proxy");
  tag("http.method", r.method);
  tag("http.url", "http://" + r.authority + r.path);
  tag("http.path", r.path);
  tag("http.protocol", r.protocol);
  tag("http.status_code", std::to_string(r.response_code));
  if (r.grpc_status) tag("grpc.status_code", std::to_string(*r.grpc_status));
  if (error) tag("error", "true");
  tag("response_flags", r.response_flags.empty() ? "-" : r.response_flags);
  tag("upstream_cluster", d.upstream_cluster);
  tag("upstream_cluster.name", d.upstream_cluster);
  tag("peer.address", r.source.address);
  tag("request_size", std::to_string(r.request_body_bytes));
  tag("response_size", std::to_string(r.response_body_bytes));
  tag("user_agent", r.user_agent);
  tag("guid:x-request-id", r.request_id);
  tag("istio.canonical_service", d.canonical_service);
  tag("istio.canonical_revision", d.canonical_revision);
  tag("istio.namespace", d.service_namespace.empty() ? d.namespace_ : d.service_namespace);
  return s;
}

// ---------------------------------------------------------------- exporter

struct ZipkinExporter::Shared {
  std::mutex mu;
  std::deque<SpanRecord> queue;
  bool closed = false;
  bool wake_pending = false;
  uv_async_t* async = nullptr;  // valid while !closed
  size_t max_queue = 0, batch = 0;
  bool addr_ok = false;
  std::atomic<uint64_t> sent{0}, failed{0}, dropped{0}, batches{0};
};

namespace {

struct Request {
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  ZipkinExporter::Impl* owner = nullptr;
  std::string data;
  std::string resp;
  size_t nspans = 0;
  bool done = false;
};

}  // namespace

struct ZipkinExporter::Impl {
  uv_loop_t* loop = nullptr;
  std::shared_ptr<Shared> shared;
  std::string host, path;
  sockaddr_storage addr{};
  Options opts;
  uv_timer_t flush_timer{}, timeout_timer{};
  uv_async_t async{};
  Request* inflight = nullptr;
  int open_handles = 0;
  bool closing = false;

  void flush();
  void finish(Request* r, bool ok);
  void close();
  static void on_connect(uv_connect_t* c, int status);
  static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* b);
};

void ZipkinExporter::Impl::on_connect(uv_connect_t* c, int status) {
  auto* r = static_cast<Request*>(c->data);
  if (r->done) return;
  if (status < 0) return r->owner->finish(r, false);
  auto* stream = reinterpret_cast<uv_stream_t*>(&r->tcp);
  uv_buf_t buf = uv_buf_init(r->data.data(), static_cast<unsigned>(r->data.size()));
  int rc = uv_write(&r->write, stream, &buf, 1, [](uv_write_t* w, int st) {
    auto* r = static_cast<Request*>(w->data);
    if (st < 0 && !r->done) r->owner->finish(r, false);
  });
  if (rc == 0) {
    auto alloc = [](uv_handle_t*, size_t, uv_buf_t* b) {
      static thread_local char buf[1024];
      *b = uv_buf_init(buf, sizeof buf);
    };
    rc = uv_read_start(stream, alloc, on_read);
  }
  if (rc < 0) r->owner->finish(r, false);
}

void ZipkinExporter::Impl::on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
  auto* r = static_cast<Request*>(s->data);
  if (r->done) return;
  if (n < 0) return r->owner->finish(r, false);  // EOF or error before a status line
  r->resp.append(b->base, static_cast<size_t>(n));
  size_t eol = r->resp.find("\r\n");
  if (eol == std::string::npos) {
    if (r->resp.size() > 512) r->owner->finish(r, false);
    return;
  }
  std::string_view line(r->resp.data(), eol);  // "HTTP/1.1 202 Accepted"
  auto digit = [&line](size_t i) { return line[i] >= '0' && line[i] <= '9'; };
  bool ok = line.size() >= 12 && line.starts_with("HTTP/1.") && line[8] == ' ' && line[9] == '2' &&
            digit(10) && digit(11);
  r->owner->finish(r, ok);
}

void ZipkinExporter::Impl::finish(Request* r, bool ok) {
  if (r->done) return;
  r->done = true;
  (ok ? shared->sent : shared->failed) += r->nspans;
  if (ok) ++shared->batches;
  uv_timer_stop(&timeout_timer);
  inflight = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&r->tcp),
           [](uv_handle_t* h) { delete static_cast<Request*>(h->data); });
  if (ok && !closing) {
    std::unique_lock lk(shared->mu);
    bool more = shared->queue.size() >= opts.batch;
    lk.unlock();
    if (more) flush();  // a backlog drains at once; a failure waits for the timer
  }
}

void ZipkinExporter::Impl::flush() {
  if (closing || inflight) return;
  std::vector<SpanRecord> batch;
  {
    std::lock_guard lk(shared->mu);
    size_t n = std::min(opts.batch, shared->queue.size());
    batch.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      batch.push_back(std::move(shared->queue.front()));
      shared->queue.pop_front();
    }
  }
  if (batch.empty()) return;
  if (!shared->addr_ok) {
    shared->failed += batch.size();
    return;
  }
  std::string body = "[";
  for (size_t i = 0; i < batch.size(); ++i) {
    if (i) body += ',';
    append_span_json(body, batch[i]);
  }
  body += ']';

  auto* r = new Request;
  r->owner = this;
  r->nspans = batch.size();
  r->data = "POST " + path + " HTTP/1.1\r\nHost: " + host +
            "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
            "\r\nConnection: close\r\n\r\n" + body;
  uv_tcp_init(loop, &r->tcp);
  r->tcp.data = r;
  r->connect.data = r;
  r->write.data = r;
  inflight = r;
  uv_timer_start(
      &timeout_timer,
      [](uv_timer_t* t) {
        auto* self = static_cast<Impl*>(t->data);
        if (self->inflight) self->finish(self->inflight, false);
      },
      static_cast<uint64_t>(opts.timeout.count()), 0);

  int rc =
      uv_tcp_connect(&r->connect, &r->tcp, reinterpret_cast<const sockaddr*>(&addr), on_connect);
  if (rc < 0) finish(r, false);
}

void ZipkinExporter::Impl::close() {
  if (closing) return;
  {
    std::lock_guard lk(shared->mu);
    shared->closed = true;
    shared->async = nullptr;
    shared->dropped += shared->queue.size();
    shared->queue.clear();
  }
  if (inflight) finish(inflight, false);
  closing = true;
  auto on_close = [](uv_handle_t* h) {
    auto* self = static_cast<Impl*>(h->data);
    if (--self->open_handles == 0) delete self;
  };
  uv_close(reinterpret_cast<uv_handle_t*>(&flush_timer), on_close);
  uv_close(reinterpret_cast<uv_handle_t*>(&timeout_timer), on_close);
  uv_close(reinterpret_cast<uv_handle_t*>(&async), on_close);
}

ZipkinExporter::ZipkinExporter(uv_loop_t* loop, std::string host_port, std::string path,
                               Options opts)
    : shared_(std::make_shared<Shared>()), impl_(new Impl) {
  impl_->loop = loop;
  impl_->shared = shared_;
  impl_->path = path.empty() ? "/" : std::move(path);
  impl_->opts = opts;
  if (impl_->opts.batch == 0) impl_->opts.batch = 1;
  shared_->max_queue = opts.max_queue;
  shared_->batch = impl_->opts.batch;

  ZipkinEndpoint ep = endpoint_from_address(host_port);
  auto* sa = &impl_->addr;
  shared_->addr_ok =
      ep.port != 0 &&
      (uv_ip4_addr(ep.ip.c_str(), ep.port, reinterpret_cast<sockaddr_in*>(sa)) == 0 ||
       uv_ip6_addr(ep.ip.c_str(), ep.port, reinterpret_cast<sockaddr_in6*>(sa)) == 0);
  impl_->host = std::move(host_port);

  uv_timer_init(loop, &impl_->flush_timer);
  uv_timer_init(loop, &impl_->timeout_timer);
  uv_async_init(loop, &impl_->async, [](uv_async_t* a) {
    auto* self = static_cast<Impl*>(a->data);
    {
      std::lock_guard lk(self->shared->mu);
      self->shared->wake_pending = false;
    }
    self->flush();
  });
  impl_->flush_timer.data = impl_->timeout_timer.data = impl_->async.data = impl_;
  impl_->open_handles = 3;
  shared_->async = &impl_->async;
  auto every = static_cast<uint64_t>(std::max<int64_t>(1, opts.flush_interval.count()));
  uv_timer_start(
      &impl_->flush_timer, [](uv_timer_t* t) { static_cast<Impl*>(t->data)->flush(); }, every,
      every);
}

ZipkinExporter::~ZipkinExporter() {
  close();
}

void ZipkinExporter::enqueue(SpanRecord span) {
  std::lock_guard lk(shared_->mu);
  if (shared_->closed || shared_->queue.size() >= shared_->max_queue) {
    ++shared_->dropped;
    return;
  }
  shared_->queue.push_back(std::move(span));
  if (shared_->queue.size() >= shared_->batch && !shared_->wake_pending && shared_->async) {
    shared_->wake_pending = true;
    uv_async_send(shared_->async);
  }
}

void ZipkinExporter::flush() {
  if (impl_) impl_->flush();
}

void ZipkinExporter::close() {
  if (!impl_) return;
  impl_->close();
  impl_ = nullptr;  // it frees itself once libuv has closed its handles
}

bool ZipkinExporter::ok() const {
  return shared_->addr_ok;
}
uint64_t ZipkinExporter::sent() const {
  return shared_->sent.load();
}
uint64_t ZipkinExporter::failed() const {
  return shared_->failed.load();
}
uint64_t ZipkinExporter::dropped() const {
  return shared_->dropped.load();
}
uint64_t ZipkinExporter::batches() const {
  return shared_->batches.load();
}
size_t ZipkinExporter::queued() const {
  std::lock_guard lk(shared_->mu);
  return shared_->queue.size();
}

}  // namespace warren::waypoint
