// The fake API server's REST surface: authentication, routing to the store,
// watch streams and TokenReview.
#include <openssl/ssl.h>

#include "fake_internal.h"

namespace warren::fakes {

namespace {

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string pct_decode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
      out += static_cast<char>(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
      i += 2;
    } else {
      out += s[i] == '+' ? ' ' : s[i];
    }
  }
  return out;
}

std::vector<std::string> split_path(const std::string& p) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string::npos) j = p.size();
    if (j > i) out.push_back(pct_decode(p.substr(i, j - i)));
    i = j + 1;
  }
  return out;
}

struct Route {
  const ResourceType* type = nullptr;
  std::string ns, name, sub;
};

// /api/v1/..., /apis/<g>/<v>/..., then [namespaces/<ns>/]<plural>[/<name>[/<sub>]].
bool route(const std::string& path, Route* r) {
  auto seg = split_path(path);
  std::string group, version;
  size_t i;
  if (seg.size() >= 2 && seg[0] == "api") {
    version = seg[1];
    i = 2;
  } else if (seg.size() >= 3 && seg[0] == "apis") {
    group = seg[1];
    version = seg[2];
    i = 3;
  } else {
    return false;
  }
  if (i >= seg.size()) return false;
  if (seg[i] == "namespaces" && seg.size() >= i + 3) {
    const ResourceType* t = find_type(group, version, seg[i + 2]);
    if (t && t->namespaced) {
      r->ns = seg[i + 1];
      i += 2;
    }
  }
  r->type = find_type(group, version, seg[i]);
  if (!r->type) return false;
  if (!r->type->namespaced && !r->ns.empty()) return false;
  if (i + 1 < seg.size()) r->name = seg[i + 1];
  if (i + 2 < seg.size()) r->sub = seg[i + 2];
  return i + 3 >= seg.size();
}

nlohmann::json not_found() {
  return make_status(404, "NotFound", "the server could not find the requested resource");
}

std::string chunk(const std::string& data) {
  char len[32];
  snprintf(len, sizeof len, "%zx\r\n", data.size());
  return len + data + "\r\n";
}

}  // namespace

std::string query_param(const std::string& query, const std::string& name) {
  size_t i = 0;
  while (i <= query.size()) {
    size_t amp = query.find('&', i);
    if (amp == std::string::npos) amp = query.size();
    std::string part = query.substr(i, amp - i);
    size_t eq = part.find('=');
    if (pct_decode(part.substr(0, eq)) == name)
      return eq == std::string::npos ? "" : pct_decode(part.substr(eq + 1));
    i = amp + 1;
  }
  return {};
}

void FakeApiServer::Impl::handle(Conn* c, HttpReq& req) {
  RecordedRequest rec{req.method, req.path, req.query, 0};
  auto reply = [&](int code, const nlohmann::json& body) {
    rec.status = code;
    c->respond(code, body);
  };
  std::string auth = req.header("authorization");
  bool ok = c->client_cert_ok ||
            (auth.rfind("Bearer ", 0) == 0 && tokens.count(auth.substr(7)) > 0);
  if (!ok) {
    reply(401, make_status(401, "Unauthorized", "Unauthorized"));
    requests.push_back(rec);
    return;
  }
  for (auto it = injected.begin(); it != injected.end(); ++it) {
    if (it->method != req.method || it->path != req.path) continue;
    int code = it->status;
    if (--it->times <= 0) injected.erase(it);
    const char* reason = code == 409 ? "Conflict" : code == 410 ? "Expired" : code == 404 ? "NotFound"
                         : code == 403 ? "Forbidden" : "InternalError";
    reply(code, make_status(code, reason, "injected failure"));
    requests.push_back(rec);
    return;
  }
  auto body = req.body.empty() ? nlohmann::json() : nlohmann::json::parse(req.body, nullptr, false);
  if (req.method == "POST" && req.path == "/apis/authentication.k8s.io/v1/tokenreviews") {
    std::string token = body.is_object() && body["spec"].is_object()
                            ? body["spec"].value("token", "")
                            : "";
    nlohmann::json status;
    auto it = reviews.find(token);
    if (it != reviews.end()) {
      status = {{"authenticated", true},
                {"user", it->second},
                {"audiences", nlohmann::json::array({"https://kubernetes.default.svc.cluster.local"})}};
    } else {
      status = {{"authenticated", false},
                {"error", "[invalid bearer token, service account token has been invalidated]"}};
    }
    reply(201, {{"kind", "TokenReview"},
                {"apiVersion", "authentication.k8s.io/v1"},
                {"metadata", {{"creationTimestamp", nullptr}}},
                {"spec", body.is_object() ? body.value("spec", nlohmann::json::object())
                                          : nlohmann::json::object()},
                {"status", status}});
    requests.push_back(rec);
    return;
  }
  Route r;
  if (!route(req.path, &r) || !store.served(*r.type)) {
    reply(404, not_found());
    requests.push_back(rec);
    return;
  }
  const ResourceType& t = *r.type;
  Outcome out;
  bool has_body = req.method == "POST" || req.method == "PUT" || req.method == "PATCH";
  if (has_body && !body.is_object()) {
    out = {400, make_status(400, "BadRequest", "the request body is not a JSON object")};
  } else if (req.method == "GET" && r.name.empty()) {
    std::string w = query_param(req.query, "watch");
    if (w == "1" || w == "true") {
      start_watch(c, t, r.ns, req, rec);
      requests.push_back(rec);
      return;
    }
    std::string limit = query_param(req.query, "limit");
    out = store.list(t, r.ns, limit.empty() ? 0 : std::stoul(limit),
                     query_param(req.query, "continue"));
  } else if (req.method == "GET" && r.sub.empty()) {
    out = store.get(t, r.ns, r.name);
  } else if (req.method == "POST" && r.name.empty()) {
    out = store.create(t, std::move(body), r.ns);
  } else if (req.method == "PUT" && !r.name.empty() && r.sub.empty()) {
    body["metadata"]["name"] = r.name;
    if (t.namespaced) body["metadata"]["namespace"] = r.ns;
    if (auto old = store.find(t, r.ns, r.name); old && old->contains("status")) {
      body["status"] = (*old)["status"];  // the status subresource is written apart
    }
    out = store.update(t, std::move(body));
  } else if (req.method == "PATCH" && !r.name.empty() && (r.sub.empty() || r.sub == "status")) {
    std::string ct = req.header("content-type");
    if (ct.rfind("application/merge-patch+json", 0) != 0 &&
        ct.rfind("application/strategic-merge-patch+json", 0) != 0) {
      out = {415, make_status(415, "UnsupportedMediaType",
                              "the body of the request was in an unknown format")};
    } else {
      bool status_only = r.sub == "status";
      out = store.patch(t, r.ns, r.name, body, status_only);
      if (status_only && out.ok()) patches.push_back({t.kind, r.ns, r.name, ct, body});
    }
  } else if (req.method == "DELETE" && !r.name.empty() && r.sub.empty()) {
    out = store.remove(t, r.ns, r.name);
  } else {
    out = {405, make_status(405, "MethodNotAllowed",
                            "the server does not allow this method on the requested resource")};
  }
  reply(out.code, out.body);
  requests.push_back(rec);
}

// ---- watches ----------------------------------------------------------------------------

void FakeApiServer::Impl::start_watch(Conn* c, const ResourceType& t, const std::string& ns,
                                      const HttpReq& req, RecordedRequest& rec) {
  if (auto it = fail_next.find(t.kind); it != fail_next.end()) {
    int code = it->second;
    fail_next.erase(it);
    rec.status = code;
    c->respond(code, code == 410 ? make_status(410, "Expired", "too old resource version")
                                 : make_status(code, "InternalError", "injected failure"));
    return;
  }
  std::vector<WatchEvent> replay;
  Outcome o = store.events_since(t, ns, query_param(req.query, "resourceVersion"), &replay);
  bool expired_event = o.code == 410 && expired_as_event;
  if (!o.ok() && !expired_event) {
    rec.status = o.code;
    c->respond(o.code, o.body);
    return;
  }
  rec.status = 200;
  c->send(
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-cache, private\r\n"
      "Transfer-Encoding: chunked\r\n\r\n");
  auto w = std::make_unique<Watch>();
  w->conn = c;
  w->type = &t;
  w->ns = ns;
  std::string bm = query_param(req.query, "allowWatchBookmarks");
  w->bookmarks = bm == "true" || bm == "1";
  for (uv_timer_t** tp : {&w->delay_timer, &w->timeout_timer}) {
    *tp = new uv_timer_t;
    uv_timer_init(&loop, *tp);
    (*tp)->data = w.get();
  }
  long long timeout_ms = 0;
  std::string ts = query_param(req.query, "timeoutSeconds");
  if (!ts.empty()) timeout_ms = std::stoll(ts) * 1000;
  if (opts.max_watch.count() > 0 && (timeout_ms == 0 || opts.max_watch.count() < timeout_ms))
    timeout_ms = opts.max_watch.count();
  if (timeout_ms > 0) {
    uv_timer_start(
        w->timeout_timer,
        [](uv_timer_t* tm) {
          if (auto* wp = static_cast<Watch*>(tm->data)) wp->conn->srv->end_watch(wp);
        },
        static_cast<uint64_t>(timeout_ms), 0);
  }
  Watch* raw = w.get();
  c->watch = std::move(w);
  watches.insert(raw);
  if (expired_event) {
    enqueue(raw, nlohmann::json({{"type", "ERROR"}, {"object", o.body}}).dump() + "\n");
    end_watch(raw);
    return;
  }
  for (auto& ev : replay) {
    enqueue(raw, nlohmann::json({{"type", ev.type}, {"object", ev.object}}).dump() + "\n");
  }
}

void FakeApiServer::Impl::write_event(Watch* w, const std::string& line) {
  w->conn->send(chunk(line));
}

void FakeApiServer::Impl::enqueue(Watch* w, std::string line) {
  if (event_delay.count() == 0 && w->pending.empty()) {
    write_event(w, line);
    return;
  }
  w->pending.push_back(std::move(line));
  if (uv_is_active(reinterpret_cast<uv_handle_t*>(w->delay_timer))) return;
  static const uv_timer_cb tick = [](uv_timer_t* tm) {
    auto* wp = static_cast<Watch*>(tm->data);
    if (!wp) return;
    Impl* srv = wp->conn->srv;
    if (!wp->pending.empty()) {
      srv->write_event(wp, wp->pending.front());
      wp->pending.pop_front();
    }
    if (!wp->pending.empty()) {
      uv_timer_start(tm, tick, static_cast<uint64_t>(srv->event_delay.count()), 0);
    } else if (wp->end_after_pending) {
      srv->end_watch(wp);
    }
  };
  uv_timer_start(w->delay_timer, tick, static_cast<uint64_t>(event_delay.count()), 0);
}

void FakeApiServer::Impl::end_watch(Watch* w) {
  if (!w->pending.empty()) {
    w->end_after_pending = true;
    return;
  }
  Conn* c = w->conn;
  c->send("0\r\n\r\n");
  c->watch.reset();  // the connection takes requests again (keep-alive)
}

void FakeApiServer::Impl::on_store_event(const ResourceType& t, const WatchEvent& ev) {
  std::string line;
  std::vector<Watch*> ws(watches.begin(), watches.end());
  for (Watch* w : ws) {
    if (w->type != &t || w->end_after_pending) continue;
    if (!w->ns.empty() && ev.object["metadata"].value("namespace", "") != w->ns) continue;
    if (line.empty()) line = nlohmann::json({{"type", ev.type}, {"object", ev.object}}).dump() + "\n";
    enqueue(w, line);
  }
}

void FakeApiServer::Impl::for_watches(const std::string& kind,
                                      const std::function<void(Watch*)>& fn) {
  std::vector<Watch*> ws(watches.begin(), watches.end());
  for (Watch* w : ws) {
    if ((kind.empty() || w->type->kind == kind) && watches.count(w)) fn(w);
  }
}

nlohmann::json FakeApiServer::Impl::bookmark(const ResourceType& t) const {
  return {{"type", "BOOKMARK"},
          {"object",
           {{"kind", t.kind},
            {"apiVersion", t.api_version()},
            {"metadata", {{"resourceVersion", std::to_string(store.resource_version())}}}}}};
}

}  // namespace warren::fakes
