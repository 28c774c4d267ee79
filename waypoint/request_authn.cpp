// RequestAuthentication: compile jwtRules, extract and verify tokens, rewrite
// headers as Envoy's jwt_authn does for Istio.
#include "request_authn.h"

#include <algorithm>
#include <optional>

namespace warren::waypoint {
namespace {

using nlohmann::json;

// Audiences compare without scheme and trailing slash, as jwt_verify_lib does.
std::string_view audience_key(std::string_view a) {
  for (std::string_view scheme : {"http://", "https://"})
    if (a.substr(0, scheme.size()) == scheme) a.remove_prefix(scheme.size());
  while (!a.empty() && a.back() == '/') a.remove_suffix(1);
  return a;
}

std::string trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return std::string(s);
}

std::string percent_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    auto hex = [](char c) {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i] == '+' ? ' ' : s[i]);
    }
  }
  return out;
}

// "k1=v1<sep>k2=v2": the values of `name`.
void pairs(std::string_view s, char sep, std::string_view name, bool decode,
           std::vector<std::string>& out) {
  while (!s.empty()) {
    auto e = s.find(sep);
    std::string_view kv = s.substr(0, e);
    s = e == std::string_view::npos ? std::string_view() : s.substr(e + 1);
    while (!kv.empty() && kv.front() == ' ') kv.remove_prefix(1);
    auto eq = kv.find('=');
    if (eq == std::string_view::npos) continue;
    std::string k = decode ? percent_decode(kv.substr(0, eq)) : std::string(kv.substr(0, eq));
    if (k == name)
      out.push_back(decode ? percent_decode(kv.substr(eq + 1)) : trim(kv.substr(eq + 1)));
  }
}

// Where a token was found.
struct Found {
  std::string token;
  int kind;           // 0 header, 1 query parameter, 2 cookie
  std::string where;  // header name (lower case), parameter or cookie name
  std::string prefix;
};

bool rule_has(const JwtRule& r, const Found& f) {
  if (f.kind == 0) {
    for (const auto& h : r.from_headers)
      if (h.name == f.where && h.prefix == f.prefix) return true;
    return false;
  }
  const auto& names = f.kind == 1 ? r.from_params : r.from_cookies;
  for (const auto& n : names)
    if (n == f.where) return true;
  return false;
}

bool safe_value(std::string_view v) {
  for (unsigned char c : v)
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  return true;
}

void set_header(Headers& h, const std::string& name, std::string value) {
  std::erase_if(h, [&](const Header& x) { return iequals(x.name, name); });
  h.push_back({name, std::move(value)});
}

// A claim as a header value: strings, numbers, booleans, lists of strings.
std::optional<std::string> claim_value(const json& claims, std::string_view path) {
  const json* j = &claims;
  while (true) {
    auto dot = path.find('.');
    auto it = j->is_object() ? j->find(std::string(path.substr(0, dot))) : j->end();
    if (!j->is_object() || it == j->end()) {
      auto whole = j->is_object() ? j->find(std::string(path)) : j->end();  // a name with dots
      if (!j->is_object() || whole == j->end()) return std::nullopt;
      j = &*whole;
      break;
    }
    j = &*it;
    if (dot == std::string_view::npos) break;
    path.remove_prefix(dot + 1);
  }
  if (j->is_string()) return j->get<std::string>();
  if (j->is_boolean() || j->is_number()) return j->dump();
  if (j->is_array()) {
    std::string out;
    for (const auto& e : *j) {
      if (!e.is_string()) return std::nullopt;
      out += (out.empty() ? "" : ",") + e.get<std::string>();
    }
    return out;
  }
  return std::nullopt;
}

}  // namespace

RequestAuthn RequestAuthn::build(const std::vector<json>& objects, const AuthzScope& scope,
                                 std::vector<std::string>* errors) {
  RequestAuthn ra;
  for (const json& o : objects) {
    if (!o.is_object()) continue;
    const json md = o.value("metadata", json::object());
    std::string name = md.is_object() ? md.value("name", "") : "";
    std::string ns = md.is_object() ? md.value("namespace", "") : "";
    const json* spec = o.contains("spec") ? &o["spec"] : nullptr;
    Binding b = bind_policy(spec, ns, scope, true);
    if (!b.here || !spec || !spec->is_object()) continue;
    std::string id = ns + "/" + name;
    auto fail = [&](const std::string& ptr, const std::string& why) {
      if (errors) errors->push_back("RequestAuthentication " + id + ": " + ptr + ": " + why);
    };
    auto rules = spec->find("jwtRules");
    if (rules == spec->end() || rules->is_null()) continue;
    if (!rules->is_array()) {
      fail("/spec/jwtRules", "must be a list");
      continue;
    }
    for (size_t i = 0; i < rules->size(); ++i) {
      const json& jr = (*rules)[i];
      std::string p = "/spec/jwtRules/" + std::to_string(i);
      bool ok = true;
      auto bad = [&](const std::string& ptr, const std::string& why) {
        fail(ptr, why);
        ok = false;
      };
      if (!jr.is_object()) {
        bad(p, "must be an object");
        continue;
      }
      JwtRule r;
      r.source = id;
      auto str = [&](const char* k, std::string& out) {
        auto it = jr.find(k);
        if (it == jr.end() || it->is_null()) return;
        if (!it->is_string()) return bad(p + "/" + k, "must be a string");
        out = it->get<std::string>();
      };
      auto strs = [&](const json& obj, const std::string& ptr, const char* k,
                      std::vector<std::string>& out) {
        auto it = obj.find(k);
        if (it == obj.end() || it->is_null()) return;
        if (!it->is_array()) return bad(ptr + "/" + k, "must be a list of strings");
        for (size_t j = 0; j < it->size(); ++j) {
          if (!(*it)[j].is_string() || (*it)[j].get_ref<const std::string&>().empty())
            bad(ptr + "/" + k + "/" + std::to_string(j), "must be a non-empty string");
          else
            out.push_back((*it)[j].get<std::string>());
        }
      };
      auto objects_of = [&](const char* k, auto&& each) {
        auto it = jr.find(k);
        if (it == jr.end() || it->is_null()) return;
        if (!it->is_array()) return bad(p + "/" + k, "must be a list");
        for (size_t j = 0; j < it->size(); ++j) {
          std::string ep = p + "/" + k + "/" + std::to_string(j);
          if (!(*it)[j].is_object())
            bad(ep, "must be an object");
          else
            each((*it)[j], ep);
        }
      };
      for (auto it = jr.begin(); it != jr.end(); ++it) {
        static const char* kKnown[] = {"issuer",
                                       "audiences",
                                       "jwksUri",
                                       "jwks",
                                       "fromHeaders",
                                       "fromParams",
                                       "fromCookies",
                                       "forwardOriginalToken",
                                       "outputPayloadToHeader",
                                       "outputClaimToHeaders",
                                       "timeout"};
        bool known = false;
        for (const char* k : kKnown) known = known || it.key() == k;
        if (!known) bad(p + "/" + it.key(), "unknown field");
      }
      str("issuer", r.issuer);
      if (r.issuer.empty()) bad(p + "/issuer", "is required");
      strs(jr, p, "audiences", r.audiences);
      str("jwksUri", r.jwks_uri);
      std::string inline_jwks;
      str("jwks", inline_jwks);
      objects_of("fromHeaders", [&](const json& h, const std::string& hp) {
        std::string n = h.value("name", ""), pre;
        if (auto pi = h.find("prefix"); pi != h.end() && pi->is_string())
          pre = pi->get<std::string>();
        if (n.empty() || !std::all_of(n.begin(), n.end(), [](char c) { return is_tchar(c); }))
          return bad(hp + "/name", "must be a header name");
        r.from_headers.push_back({to_lower(n), pre});
      });
      strs(jr, p, "fromParams", r.from_params);
      strs(jr, p, "fromCookies", r.from_cookies);
      if (auto f = jr.find("forwardOriginalToken"); f != jr.end() && !f->is_null()) {
        if (!f->is_boolean())
          bad(p + "/forwardOriginalToken", "must be true or false");
        else
          r.forward_original_token = f->get<bool>();
      }
      auto header_ok = [](const std::string& h) {
        return !h.empty() && std::all_of(h.begin(), h.end(), [](char c) { return is_tchar(c); });
      };
      str("outputPayloadToHeader", r.output_payload_to_header);
      if (!r.output_payload_to_header.empty() && !header_ok(r.output_payload_to_header))
        bad(p + "/outputPayloadToHeader", "must be a header name");
      objects_of("outputClaimToHeaders", [&](const json& h, const std::string& hp) {
        std::string hn = h.value("header", ""), cl = h.value("claim", "");
        if (!header_ok(hn)) return bad(hp + "/header", "must be a header name");
        if (cl.empty()) return bad(hp + "/claim", "is required");
        r.output_claim_to_headers.push_back({hn, cl});
      });
      if (r.from_headers.empty() && r.from_params.empty() && r.from_cookies.empty()) {
        r.from_headers.push_back({"authorization", "Bearer "});
        r.from_params.push_back("access_token");
      }
      if (!inline_jwks.empty()) {
        auto k = jwt::parse_jwks(inline_jwks);
        if (k.ok())
          r.jwks = std::make_shared<const jwt::Jwks>(std::move(*k));
        else
          fail(p + "/jwks", r.jwks_error = k.error().message);  // the rule stays and fails closed
      } else if (r.jwks_uri.empty()) {
        fail(p, r.jwks_error =
                    "one of jwks and jwksUri is required (OIDC discovery is not supported)");
      } else {
        r.uses_uri = true;
        r.jwks_error = "jwks of " + r.jwks_uri + " not fetched yet";
      }
      if (!ok) continue;
      ra.rules_.push_back(std::move(r));
      ra.bound_.push_back({b.all_services, b.services});
    }
  }
  return ra;
}

std::vector<std::string> RequestAuthn::jwks_uris() const {
  std::vector<std::string> out;
  for (const auto& r : rules_)
    if (r.uses_uri && std::find(out.begin(), out.end(), r.jwks_uri) == out.end())
      out.push_back(r.jwks_uri);
  return out;
}

Result<void> RequestAuthn::set_jwks(std::string_view uri, std::string_view text) {
  auto k = jwt::parse_jwks(text);
  std::shared_ptr<const jwt::Jwks> keys;
  if (k.ok()) keys = std::make_shared<const jwt::Jwks>(std::move(*k));
  bool used = false;
  for (auto& r : rules_) {
    if (!r.uses_uri || r.jwks_uri != uri) continue;
    used = true;
    r.jwks = keys;
    r.jwks_error = k.ok() ? "" : k.error().message;
  }
  if (!used) return make_error(Errc::kNotFound, "no jwtRule uses jwksUri " + std::string(uri));
  if (!k.ok()) return k.error().wrap(std::string(uri));
  return {};
}

AuthnResult RequestAuthn::authenticate(Headers& headers, std::string_view query,
                                       std::chrono::system_clock::time_point now,
                                       std::string_view service) const {
  std::vector<const JwtRule*> rules;
  for (size_t i = 0; i < rules_.size(); ++i)
    if (bound_[i].all_services || bound_[i].services.count(std::string(service)))
      rules.push_back(&rules_[i]);
  AuthnResult res;
  if (rules.empty()) return res;
  // Every location any rule reads, each token once per location.
  std::vector<Found> found;
  auto add = [&](Found f) {
    for (const auto& g : found)
      if (g.token == f.token && g.kind == f.kind && g.where == f.where && g.prefix == f.prefix)
        return;
    found.push_back(std::move(f));
  };
  for (const JwtRule* r : rules) {
    for (const auto& fh : r->from_headers)
      for (const auto& h : headers)
        if (iequals(h.name, fh.name) && istarts_with(h.value, fh.prefix)) {
          std::string tok = trim(std::string_view(h.value).substr(fh.prefix.size()));
          if (!tok.empty()) add({tok, 0, fh.name, fh.prefix});
        }
    std::vector<std::string> vals;
    for (const auto& name : r->from_params) {
      vals.clear();
      pairs(query, '&', name, true, vals);
      for (auto& v : vals)
        if (!v.empty()) add({v, 1, name, ""});
    }
    for (const auto& name : r->from_cookies)
      for (const auto& h : headers)
        if (iequals(h.name, "cookie")) {
          vals.clear();
          pairs(h.value, ';', name, false, vals);
          for (auto& v : vals)
            if (!v.empty()) add({v, 2, name, ""});
        }
  }
  if (found.empty()) return res;
  auto invalid = [&](std::string why) {
    res.status = AuthnResult::kInvalid;
    res.reason = std::move(why);
    res.info = {};
    return res;
  };
  struct Ok {
    const Found* f;
    const JwtRule* rule;
    jwt::Token t;
  };
  std::vector<Ok> oks;
  for (const Found& f : found) {
    auto t = jwt::parse(f.token);
    if (!t.ok()) return invalid(t.error().message.substr(0, t.error().message.find(':')));
    std::string last = jwt::kUnknownIssuer;
    const JwtRule* good = nullptr;
    for (const JwtRule* r : rules) {
      if (r->issuer != t->issuer || !rule_has(*r, f)) continue;
      if (!r->jwks) {
        last = jwt::kJwksMissing;
        continue;
      }
      auto v = jwt::verify_signature(*t, *r->jwks);
      if (v.ok()) v = jwt::check_time(*t, now);
      if (v.ok() && !r->audiences.empty()) {
        bool hit = false;
        for (const auto& want : r->audiences)
          for (const auto& have : t->audiences)
            hit = hit || audience_key(want) == audience_key(have);
        if (!hit) v = make_error(Errc::kPermissionDenied, jwt::kAudienceNotAllowed);
      }
      if (v.ok()) {
        good = r;
        break;
      }
      last = v.error().message.substr(0, v.error().message.find(':'));
    }
    if (!good) return invalid(last);
    oks.push_back({&f, good, std::move(*t)});
  }
  const jwt::Token& first = oks.front().t;
  res.status = AuthnResult::kValid;
  res.info.issuer = first.issuer;
  res.info.subject = first.subject;
  res.info.principal = first.issuer + "/" + first.subject;
  res.info.audiences = first.audiences;
  res.info.presenter = first.presenter;
  res.info.claims = first.claims;
  for (const Ok& ok : oks) {
    if (ok.f->kind == 0 && !ok.rule->forward_original_token)
      std::erase_if(headers, [&](const Header& h) { return iequals(h.name, ok.f->where); });
    if (!ok.rule->output_payload_to_header.empty())
      set_header(headers, ok.rule->output_payload_to_header, ok.t.payload_b64);
    for (const auto& ch : ok.rule->output_claim_to_headers) {
      auto v = claim_value(ok.t.claims, ch.claim);
      if (v && safe_value(*v))
        set_header(headers, ch.header, std::move(*v));
      else
        std::erase_if(headers, [&](const Header& h) { return iequals(h.name, ch.header); });
    }
  }
  return res;
}

}  // namespace warren::waypoint
