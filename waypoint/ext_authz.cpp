// Envoy ext_authz (HTTP service) semantics for Istio's envoyExtAuthzHttp.
#include "ext_authz.h"

#include <algorithm>
#include <cmath>

#include "authz.h"
#include "warren/ext_authz_fields.h"

namespace warren::waypoint {
namespace {

using nlohmann::json;

bool any_name(const std::vector<std::string>& patterns, std::string_view name) {
  for (const auto& p : patterns)
    if (istio_match(p, name, true)) return true;
  return false;
}

bool hop_by_hop(std::string_view n) {
  for (std::string_view h : {"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                             "te", "upgrade", "trailer", "content-length", "host", ":authority"})
    if (iequals(n, h)) return true;
  return false;
}

using ext_authz_text::clean;
using ext_authz_text::header_name_ok;

}  // namespace

Result<ExtAuthzProvider> parse_ext_authz_provider(const json& entry, const std::string& ptr) {
  std::vector<std::string> errs;
  auto err = [&](const std::string& p, const std::string& why) { errs.push_back(p + ": " + why); };
  ExtAuthzProvider out;
  if (!entry.is_object())
    return make_error(Errc::kInvalidArgument, (ptr.empty() ? "/" : ptr) + ": must be an object");
  if (auto n = entry.find("name");
      n != entry.end() && n->is_string() && !n->get_ref<const std::string&>().empty())
    out.name = n->get<std::string>();
  else
    err(ptr + "/name", "is required");
  auto h = entry.find("envoyExtAuthzHttp");
  std::string hp = ptr + "/envoyExtAuthzHttp";
  if (h == entry.end() || !h->is_object()) {
    err(hp, "is required (only the HTTP ext-authz provider is supported)");
    h = entry.end();
  }
  if (h != entry.end()) {
    const json& o = *h;
    auto str = [&](const char* k, std::string& v) {
      auto it = o.find(k);
      if (it == o.end() || it->is_null()) return;
      if (!it->is_string()) return err(hp + "/" + k, "must be a string");
      v = it->get<std::string>();
    };
    auto names = [&](const char* k, std::vector<std::string>& v) {
      auto it = o.find(k);
      if (it == o.end() || it->is_null()) return;
      if (!it->is_array()) return err(hp + "/" + k, "must be a list of strings");
      for (size_t i = 0; i < it->size(); ++i) {
        const json& e = (*it)[i];
        if (!e.is_string() || e.get_ref<const std::string&>().empty())
          err(hp + "/" + k + "/" + std::to_string(i), "must be a non-empty string");
        else
          v.push_back(e.get<std::string>());
      }
    };
    for (auto it = o.begin(); it != o.end(); ++it) {
      if (std::none_of(std::begin(kExtAuthzHttpFields), std::end(kExtAuthzHttpFields),
                       [&](const char* k) { return it.key() == k; }))
        err(hp + "/" + it.key(), "unknown field");
    }
    str("service", out.service);
    if (out.service.empty() || !clean(out.service) || out.service.find(' ') != std::string::npos)
      err(hp + "/service", "is required (a host name)");
    if (auto it = o.find("port"); it != o.end() && it->is_number_integer() &&
                                  it->get<int64_t>() >= 1 && it->get<int64_t>() <= 65535)
      out.port = static_cast<uint16_t>(it->get<int64_t>());
    else
      err(hp + "/port", "is required (1-65535)");
    str("pathPrefix", out.path_prefix);
    if (!out.path_prefix.empty() && (out.path_prefix[0] != '/' || !clean(out.path_prefix) ||
                                     out.path_prefix.find_first_of(" ?#") != std::string::npos))
      err(hp + "/pathPrefix", "must start with / and hold no space, ? or #");
    std::string t;
    str("timeout", t);
    if (!t.empty()) {
      if (auto d = ext_authz_text::duration(t)) out.timeout = *d;
      else err(hp + "/timeout", "\"" + t + "\" is not a duration");
    }
    if (auto it = o.find("failOpen"); it != o.end() && !it->is_null()) {
      if (it->is_boolean())
        out.fail_open = it->get<bool>();
      else
        err(hp + "/failOpen", "must be true or false");
    }
    if (auto it = o.find("statusOnError"); it != o.end() && !it->is_null()) {
      std::string s = it->is_string()           ? it->get<std::string>()
                      : it->is_number_integer() ? it->dump()
                                                : "";
      int code = s.size() == 3 && std::all_of(s.begin(), s.end(), ::isdigit) ? std::stoi(s) : 0;
      if (code < 200 || code > 599)
        err(hp + "/statusOnError", "must be an HTTP status (200-599)");
      else
        out.status_on_error = code;
    }
    names("includeRequestHeadersInCheck", out.include_request_headers);
    names("includeHeadersInCheck", out.include_request_headers);  // deprecated name
    names("headersToUpstreamOnAllow", out.headers_to_upstream_on_allow);
    names("headersToDownstreamOnDeny", out.headers_to_downstream_on_deny);
    names("headersToDownstreamOnAllow", out.headers_to_downstream_on_allow);
    if (auto it = o.find("includeAdditionalHeadersInCheck"); it != o.end() && !it->is_null()) {
      std::string ap = hp + "/includeAdditionalHeadersInCheck";
      if (!it->is_object()) {
        err(ap, "must be an object of header: value");
      } else {
        for (auto kv = it->begin(); kv != it->end(); ++kv) {
          if (!header_name_ok(kv.key()) || !kv->is_string() ||
              !clean(kv->get_ref<const std::string&>()))
            err(ap + "/" + kv.key(),
                "must be a header name with a string value without control characters");
          else
            out.additional_headers[to_lower(kv.key())] = kv->get<std::string>();
        }
      }
    }
    if (auto it = o.find("includeRequestBodyInCheck"); it != o.end() && !it->is_null())
      err(hp + "/includeRequestBodyInCheck", "not supported (the check request has no body)");
  }
  if (!errs.empty()) {
    std::string all;
    for (const auto& e : errs) all += (all.empty() ? "" : "\n") + e;
    return make_error(Errc::kInvalidArgument, all);
  }
  return out;
}

std::string build_check_request(const ExtAuthzProvider& p, std::string_view method,
                                std::string_view path_and_query, std::string_view host,
                                const Headers& request_headers, std::string_view forwarded_for) {
  std::string out;
  out.reserve(256);
  out.append(method)
      .append(" ")
      .append(p.path_prefix)
      .append(path_and_query)
      .append(" HTTP/1.1\r\n");
  out.append("Host: ").append(host).append("\r\n");
  for (const auto& h : request_headers) {
    if (hop_by_hop(h.name) || h.name.empty() || h.name[0] == ':' || !clean(h.value)) continue;
    if (!header_name_ok(h.name) || p.additional_headers.count(to_lower(h.name))) continue;
    if (iequals(h.name, "x-forwarded-for") && !forwarded_for.empty()) continue;
    if (iequals(h.name, "authorization") || any_name(p.include_request_headers, h.name))
      out.append(h.name).append(": ").append(h.value).append("\r\n");
  }
  for (const auto& [n, v] : p.additional_headers)
    out.append(n).append(": ").append(v).append("\r\n");
  if (!forwarded_for.empty() && clean(forwarded_for))
    out.append("x-forwarded-for: ").append(forwarded_for).append("\r\n");
  out.append("x-forwarded-proto: http\r\n");
  out.append("Content-Length: 0\r\n\r\n");
  return out;
}

ExtAuthzVerdict interpret(const ExtAuthzProvider& p, int status, const Headers& resp,
                          std::string body) {
  ExtAuthzVerdict v;
  if (status == 200) {
    v.allow = true;
    for (const auto& h : resp) {
      if (hop_by_hop(h.name) || !clean(h.value)) continue;
      if (iequals(h.name, "x-envoy-auth-headers-to-remove")) {
        std::string_view s = h.value;
        while (!s.empty()) {
          auto c = s.find(',');
          std::string n = to_lower(s.substr(0, c));
          n.erase(0, n.find_first_not_of(" \t"));
          n.erase(n.find_last_not_of(" \t") + 1);
          if (!n.empty() && n[0] != ':' && !iequals(n, "host")) v.upstream_remove.push_back(n);
          s = c == std::string_view::npos ? std::string_view() : s.substr(c + 1);
        }
        continue;
      }
      if (any_name(p.headers_to_upstream_on_allow, h.name)) v.upstream_set.push_back(h);
      if (any_name(p.headers_to_downstream_on_allow, h.name)) v.downstream.push_back(h);
    }
    return v;
  }
  // Envoy: a 5xx (or no valid status) is an error of the service, like a
  // failed connection: statusOnError, or allow with failOpen.
  if (status < 200 || status > 499) return on_failure(p);
  v.status = status;
  // Envoy: with a list, Path, Status, Content-Length, WWW-Authenticate and
  // Location come too (Content-Length is the proxy's to compute).
  static const std::vector<std::string> kAlways = {"path", "status", "www-authenticate",
                                                   "location"};
  for (const auto& h : resp) {
    if (hop_by_hop(h.name) || !clean(h.value)) continue;
    if (p.headers_to_downstream_on_deny.empty() ||
        any_name(p.headers_to_downstream_on_deny, h.name) || any_name(kAlways, h.name))
      v.downstream.push_back(h);
  }
  v.body = std::move(body);
  return v;
}

ExtAuthzVerdict on_failure(const ExtAuthzProvider& p) {
  ExtAuthzVerdict v;
  v.allow = p.fail_open;
  if (!v.allow) v.status = p.status_on_error;
  return v;
}

}  // namespace warren::waypoint
