#include "jwks_resolver.h"

#include <spdlog/spdlog.h>
#include <uv.h>

#include <algorithm>

#include "k8s/http_client.h"

namespace warren::controller {

using nlohmann::json;

namespace {

// "https://idp.example.com:8443/a/b?c" -> {"https://idp.example.com:8443", "/a/b?c"}.
bool split_uri(const std::string& uri, std::string& origin, std::string& path) {
  size_t scheme = uri.rfind("https://", 0) == 0 ? 8 : uri.rfind("http://", 0) == 0 ? 7 : 0;
  if (scheme == 0) return false;
  size_t slash = uri.find('/', scheme);
  origin = uri.substr(0, slash);
  path = slash == std::string::npos ? "/" : uri.substr(slash);
  return origin.size() > scheme;
}

// An answer's body as a JWKS: "" when fine, else why not.
std::string check_jwks(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) return "the answer is not JSON";
  if (!j.is_object() || !j.contains("keys") || !j["keys"].is_array())
    return "the answer is not a JWKS (an object with a \"keys\" list)";
  return "";
}

}  // namespace

struct JwksResolver::Impl {
  struct Fetch {
    Entry entry;
    std::chrono::milliseconds backoff{0};
    uv_timer_t* timer = nullptr;
    bool in_flight = false;
    k8s::Client::CallId call = 0;
    std::string origin;
  };
  uv_loop_t* loop;
  JwksResolverOptions opts;
  std::function<void()> on_change;
  std::map<std::string, Fetch> fetches;  // by URI
  std::map<std::string, std::unique_ptr<k8s::Client>> clients;  // by origin

  Impl(uv_loop_t* l, JwksResolverOptions o) : loop(l), opts(o) {}

  ~Impl() {
    for (auto& [uri, f] : fetches) drop_timer(f);
    // The clients drop their calls without callbacks.
  }

  void drop_timer(Fetch& f) {
    if (!f.timer) return;
    uv_timer_stop(f.timer);
    uv_close(reinterpret_cast<uv_handle_t*>(f.timer),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    f.timer = nullptr;
  }

  void schedule(const std::string& uri, Fetch& f, std::chrono::milliseconds after) {
    if (!f.timer) {
      f.timer = new uv_timer_t;
      uv_timer_init(loop, f.timer);
    }
    // The timer carries the URI's key (the map node is stable while wanted).
    f.timer->data = this;
    struct Key {
      static void fire(uv_timer_t* t) {
        auto* self = static_cast<Impl*>(t->data);
        for (auto& [u, x] : self->fetches)
          if (x.timer == t) return self->start(u, x);
      }
    };
    uv_timer_start(f.timer, &Key::fire, static_cast<uint64_t>(after.count()), 0);
  }

  void start(const std::string& uri, Fetch& f) {
    if (f.in_flight) return;
    std::string origin, path;
    if (!split_uri(uri, origin, path)) return fail(uri, f, "not an http:// or https:// URI", false);
    auto& client = clients[origin];
    if (!client) {
      k8s::ClusterConfig cfg;
      cfg.server = origin;
      k8s::ClientOptions co;
      co.request_timeout = opts.timeout;
      co.connect_timeout = opts.timeout;
      auto c = k8s::Client::create(loop, cfg, co);
      if (!c) {
        clients.erase(origin);
        return fail(uri, f, c.error().message, false);
      }
      client = std::move(*c);
    }
    f.in_flight = true;
    f.origin = origin;
    k8s::HttpRequest req;
    req.path = path;
    req.timeout = opts.timeout;
    f.call = client->start(std::move(req), [this, uri](Result<k8s::HttpResponse> r) { done(uri, std::move(r)); });
  }

  void done(const std::string& uri, Result<k8s::HttpResponse> r) {
    auto it = fetches.find(uri);
    if (it == fetches.end()) return;
    Fetch& f = it->second;
    f.in_flight = false;
    f.entry.fetches++;
    if (!r) return fail(uri, f, r.error().message, true);
    if (r->status < 200 || r->status > 299) return fail(uri, f, "HTTP status " + std::to_string(r->status), true);
    if (r->body.size() > opts.max_size)
      return fail(uri, f, "the answer is larger than " + std::to_string(opts.max_size) + " bytes", true);
    if (auto why = check_jwks(r->body); !why.empty()) return fail(uri, f, why, true);
    bool changed = f.entry.jwks != r->body;
    bool first = f.entry.jwks.empty();
    if (!f.entry.error.empty() && !first) spdlog::info("jwks {}: fetched again", uri);
    f.entry.jwks = std::move(r->body);
    f.entry.error.clear();
    f.backoff = std::chrono::milliseconds(0);
    schedule(uri, f, opts.refresh);
    if (changed) {
      spdlog::info("jwks {}: keys {}", uri, first ? "fetched" : "changed");
      if (on_change) on_change();
    }
  }

  void fail(const std::string& uri, Fetch& f, const std::string& why, bool retry) {
    f.entry.failures++;
    if (f.entry.error != why)
      spdlog::warn("jwks {}: {}{}", uri, why,
                   f.entry.jwks.empty() ? " (tokens of its issuer are refused until keys arrive)"
                                        : " (the last keys stay in force)");
    f.entry.error = why;
    if (!retry) return;
    f.backoff = f.backoff.count() == 0 ? opts.retry : std::min(f.backoff * 2, opts.refresh);
    schedule(uri, f, f.backoff);
  }
};

JwksResolver::JwksResolver(uv_loop_t* loop, JwksResolverOptions opts)
    : impl_(std::make_unique<Impl>(loop, opts)) {}
JwksResolver::~JwksResolver() = default;

void JwksResolver::set_uris(const std::set<std::string>& uris) {
  auto& fs = impl_->fetches;
  for (auto it = fs.begin(); it != fs.end();) {
    if (uris.count(it->first)) {
      ++it;
      continue;
    }
    impl_->drop_timer(it->second);
    if (it->second.in_flight)
      if (auto c = impl_->clients.find(it->second.origin); c != impl_->clients.end())
        c->second->cancel(it->second.call);
    it = fs.erase(it);
  }
  for (const auto& u : uris) {
    auto [it, fresh] = fs.try_emplace(u);
    if (fresh) impl_->start(u, it->second);
  }
  // Clients of origins nothing uses any more (never inside a client callback:
  // set_uris is not called from one).
  for (auto c = impl_->clients.begin(); c != impl_->clients.end();) {
    bool used = std::any_of(fs.begin(), fs.end(), [&](const auto& f) {
      std::string origin, path;
      return split_uri(f.first, origin, path) && origin == c->first;
    });
    c = used ? std::next(c) : impl_->clients.erase(c);
  }
}

void JwksResolver::set_on_change(std::function<void()> fn) { impl_->on_change = std::move(fn); }

const JwksResolver::Entry* JwksResolver::find(const std::string& uri) const {
  auto it = impl_->fetches.find(uri);
  return it == impl_->fetches.end() ? nullptr : &it->second.entry;
}

std::map<std::string, JwksResolver::Entry> JwksResolver::entries() const {
  std::map<std::string, Entry> out;
  for (const auto& [u, f] : impl_->fetches) out.emplace(u, f.entry);
  return out;
}

std::set<std::string> jwks_uris(const json& ra) {
  std::set<std::string> out;
  const json* rules = ra.is_object() && ra.contains("spec") && ra["spec"].is_object() && ra["spec"].contains("jwtRules")
                          ? &ra["spec"]["jwtRules"]
                          : nullptr;
  if (!rules || !rules->is_array()) return out;
  for (const auto& r : *rules) {
    if (!r.is_object()) continue;
    auto u = r.find("jwksUri");
    auto inline_keys = r.find("jwks");
    if (u != r.end() && u->is_string() && !u->get<std::string>().empty() &&
        (inline_keys == r.end() || inline_keys->is_null()))
      out.insert(u->get<std::string>());
  }
  return out;
}

json inline_jwks(const json& ra, const JwksResolver& r) {
  json out = ra;
  if (!out.is_object() || !out.contains("spec") || !out["spec"].is_object()) return out;
  auto rules = out["spec"].find("jwtRules");
  if (rules == out["spec"].end() || !rules->is_array()) return out;
  for (auto& rule : *rules) {
    if (!rule.is_object()) continue;
    auto u = rule.find("jwksUri");
    if (u == rule.end() || !u->is_string()) continue;
    if (auto k = rule.find("jwks"); k != rule.end() && !k->is_null()) continue;  // inline wins, as in Istio
    const auto* e = r.find(u->get<std::string>());
    if (e && !e->jwks.empty()) rule["jwks"] = e->jwks;
  }
  return out;
}

}  // namespace warren::controller
