#include "k8s/api.h"

#include <array>
#include <ctime>
#include <fstream>
#include <sstream>

#include "source.h"

namespace warren::controller::k8s {

namespace {

// Order matters only for watched_kinds(), which follows source.h kKinds.
constexpr KindInfo kTable[] = {
    {"Namespace", "", "v1", "namespaces", false, false},
    {"Pod", "", "v1", "pods", true, false},
    {"Service", "", "v1", "services", true, false},
    {"EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", true, false},
    {"ServiceAccount", "", "v1", "serviceaccounts", true, false},
    {"Node", "", "v1", "nodes", false, false},
    {"AuthorizationPolicy", "security.istio.io", "v1", "authorizationpolicies", true, true},
    {"PeerAuthentication", "security.istio.io", "v1", "peerauthentications", true, true},
    {"RequestAuthentication", "security.istio.io", "v1", "requestauthentications", true, true},
    {"VirtualService", "networking.istio.io", "v1", "virtualservices", true, true},
    {"DestinationRule", "networking.istio.io", "v1", "destinationrules", true, true},
    {"Gateway", "gateway.networking.k8s.io", "v1", "gateways", true, true},
    {"HTTPRoute", "gateway.networking.k8s.io", "v1", "httproutes", true, true},
    // Not watched.
    {"Lease", "coordination.k8s.io", "v1", "leases", true, false},
    {"Secret", "", "v1", "secrets", true, false},
    {"TokenReview", "authentication.k8s.io", "v1", "tokenreviews", false, false},
    // Written for waypoints (waypoint_deployer.h).
    {"Deployment", "apps", "v1", "deployments", true, false},
    {"ConfigMap", "", "v1", "configmaps", true, false},
};

}  // namespace

std::string KindInfo::api_version() const {
  return group[0] == '\0' ? std::string(version) : std::string(group) + "/" + version;
}

const KindInfo* find_kind(std::string_view kind) {
  for (const auto& k : kTable) {
    if (kind == k.kind) return &k;
  }
  return nullptr;
}

std::vector<const KindInfo*> watched_kinds() {
  std::vector<const KindInfo*> out;
  for (const char* k : kKinds) {
    if (const KindInfo* info = find_kind(k)) out.push_back(info);
  }
  return out;
}

std::string group_prefix(const KindInfo& k) {
  return k.group[0] == '\0' ? std::string("/api/v1") : "/apis/" + k.api_version();
}

std::string collection_path(const KindInfo& k, std::string_view ns) {
  std::string p = group_prefix(k);
  if (k.namespaced && !ns.empty()) {
    p += "/namespaces/";
    p += url_encode(ns);
  }
  p += "/";
  p += k.plural;
  return p;
}

std::string object_path(const KindInfo& k, std::string_view ns, std::string_view name) {
  return collection_path(k, k.namespaced ? ns : std::string_view{}) + "/" + url_encode(name);
}

ApiStatus parse_status(const nlohmann::json& j) {
  ApiStatus s;
  if (!j.is_object()) return s;
  if (auto it = j.find("code"); it != j.end() && it->is_number_integer()) s.code = it->get<int>();
  if (auto it = j.find("reason"); it != j.end() && it->is_string()) s.reason = it->get<std::string>();
  if (auto it = j.find("message"); it != j.end() && it->is_string())
    s.message = it->get<std::string>();
  return s;
}

ApiStatus parse_status_body(std::string_view body) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded()) return {};
  return parse_status(j);
}

Error http_error(const std::string& what, int http_status, std::string_view body) {
  ApiStatus s = parse_status_body(body);
  std::string msg = what + ": HTTP " + std::to_string(http_status);
  if (!s.reason.empty()) msg += " " + s.reason;
  if (!s.message.empty()) {
    msg += ": " + s.message;
  } else if (s.code == 0 && !body.empty()) {
    msg += ": " + std::string(body.substr(0, 200));
  }
  Errc c = Errc::kProtocol;
  if (http_status == 404) {
    c = Errc::kNotFound;
  } else if (http_status == 401 || http_status == 403) {
    c = Errc::kPermissionDenied;
  } else if (http_status == 409 || http_status == 400 || http_status == 422) {
    c = Errc::kInvalidArgument;
  } else if (http_status >= 500 || http_status == 429) {
    c = Errc::kUnavailable;
  }
  return make_error(c, std::move(msg));
}

namespace {
constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int b64_val(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}
}  // namespace

Result<std::string> base64_decode(std::string_view in) {
  std::string out;
  out.reserve(in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  size_t pad = 0;
  for (unsigned char c : in) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '=') {
      ++pad;
      continue;
    }
    if (pad) return make_error(Errc::kInvalidArgument, "base64: data after padding");
    int v = b64_val(c);
    if (v < 0) return make_error(Errc::kInvalidArgument, "base64: invalid character");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  if (pad > 2 || bits >= 6) return make_error(Errc::kInvalidArgument, "base64: truncated input");
  return out;
}

std::string base64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::string url_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

namespace {
std::string format_time(std::chrono::system_clock::time_point t, bool micro) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
  time_t secs = static_cast<time_t>(us / 1000000);
  struct tm tm {};
  gmtime_r(&secs, &tm);
  char buf[64];
  size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string out(buf, n);
  if (micro) {
    char frac[16];
    snprintf(frac, sizeof frac, ".%06lld", static_cast<long long>(us % 1000000));
    out += frac;
  }
  out += 'Z';
  return out;
}
}  // namespace

std::string micro_time(std::chrono::system_clock::time_point t) { return format_time(t, true); }
std::string rfc3339(std::chrono::system_clock::time_point t) { return format_time(t, false); }

Result<std::string> read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error::sys("open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return Error::sys("read " + path);
  return ss.str();
}

std::string meta_string(const nlohmann::json& obj, const char* field) {
  if (!obj.is_object()) return {};
  auto md = obj.find("metadata");
  if (md == obj.end() || !md->is_object()) return {};
  auto it = md->find(field);
  return it != md->end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace warren::controller::k8s
