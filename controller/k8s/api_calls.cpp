#include "k8s/api_calls.h"

#include <nlohmann/json.hpp>

#include "k8s/api.h"

namespace warren::controller::k8s {

namespace {

std::string first_extra(const TokenReviewResult& r, const char* key) {
  auto it = r.extra.find(key);
  return it == r.extra.end() || it->second.empty() ? std::string() : it->second.front();
}

std::vector<std::string> strings(const nlohmann::json& j) {
  std::vector<std::string> out;
  if (j.is_string()) out.push_back(j.get<std::string>());
  if (!j.is_array()) return out;
  for (const auto& s : j) {
    if (s.is_string()) out.push_back(s.get<std::string>());
  }
  return out;
}

}  // namespace

std::string TokenReviewResult::node_name() const {
  return first_extra(*this, "authentication.kubernetes.io/node-name");
}
std::string TokenReviewResult::pod_name() const {
  return first_extra(*this, "authentication.kubernetes.io/pod-name");
}

Result<TokenReviewResult> parse_token_review(const std::string& body) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (!j.is_object() || !j.contains("status") || !j["status"].is_object())
    return make_error(Errc::kProtocol, "tokenreview: response has no status");
  const auto& st = j["status"];
  TokenReviewResult r;
  r.authenticated = st.value("authenticated", false);
  r.error = st.value("error", "");
  if (st.contains("audiences")) r.audiences = strings(st["audiences"]);
  if (auto u = st.find("user"); u != st.end() && u->is_object()) {
    r.username = u->value("username", "");
    r.uid = u->value("uid", "");
    if (u->contains("groups")) r.groups = strings((*u)["groups"]);
    if (auto ex = u->find("extra"); ex != u->end() && ex->is_object()) {
      for (auto it = ex->begin(); it != ex->end(); ++it) r.extra[it.key()] = strings(it.value());
    }
  }
  return r;
}

Result<std::map<std::string, std::string>> parse_secret_data(const std::string& body) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (!j.is_object()) return make_error(Errc::kProtocol, "secret: response is not an object");
  std::map<std::string, std::string> out;
  if (auto d = j.find("data"); d != j.end() && d->is_object()) {
    for (auto it = d->begin(); it != d->end(); ++it) {
      if (!it.value().is_string()) continue;
      auto v = base64_decode(it.value().get_ref<const std::string&>());
      if (!v) return v.error().wrap("secret: data." + it.key());
      out[it.key()] = std::move(*v);
    }
  }
  if (auto d = j.find("stringData"); d != j.end() && d->is_object()) {
    for (auto it = d->begin(); it != d->end(); ++it) {
      if (it.value().is_string()) out[it.key()] = it.value().get<std::string>();
    }
  }
  return out;
}

Client::CallId token_review(Client& client, std::string token, std::vector<std::string> audiences,
                            TokenReviewFn cb) {
  nlohmann::json spec = {{"token", std::move(token)}};
  if (!audiences.empty()) spec["audiences"] = audiences;
  nlohmann::json review = {{"apiVersion", "authentication.k8s.io/v1"},
                           {"kind", "TokenReview"},
                           {"spec", std::move(spec)}};
  HttpRequest req;
  req.method = "POST";
  req.path = collection_path(*find_kind("TokenReview"));
  req.content_type = "application/json";
  req.body = review.dump();
  return client.start(std::move(req), [cb = std::move(cb)](Result<HttpResponse> r) {
    if (!r) return cb(r.error().wrap("tokenreview"));
    if (r->status != 200 && r->status != 201) return cb(http_error("tokenreview", r->status, r->body));
    cb(parse_token_review(r->body));
  });
}

Client::CallId get_secret(Client& client, const std::string& ns, const std::string& name,
                          SecretFn cb) {
  HttpRequest req;
  req.path = object_path(*find_kind("Secret"), ns, name);
  std::string what = "secret " + ns + "/" + name;
  return client.start(std::move(req), [cb = std::move(cb), what](Result<HttpResponse> r) {
    if (!r) return cb(r.error().wrap(what));
    if (r->status != 200) return cb(http_error(what, r->status, r->body));
    auto d = parse_secret_data(r->body);
    if (!d) return cb(d.error().wrap(what));
    cb(std::move(d));
  });
}

}  // namespace warren::controller::k8s
