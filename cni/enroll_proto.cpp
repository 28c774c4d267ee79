#include "enroll_proto.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace warren::cni {

namespace {

using nlohmann::json;

constexpr size_t kMaxIps = 64;
constexpr size_t kMaxUid = 128;
constexpr size_t kMaxContainerId = 1024;
constexpr size_t kMaxPath = 4096;

Error bad(const std::string& field, const std::string& why) {
  return make_error(Errc::kInvalidArgument, field + ": " + why);
}

// Shown in errors: long or binary values are cut and escaped by json::dump.
std::string shown(std::string_view s) {
  std::string cut(s.substr(0, 80));
  if (s.size() > 80) cut += "...";
  return json(cut).dump(-1, ' ', false, json::error_handler_t::replace);
}

bool is_alnum_lower(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

// [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63.
bool is_dns_label(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  if (!is_alnum_lower(s.front()) || !is_alnum_lower(s.back())) return false;
  for (char c : s) {
    if (!is_alnum_lower(c) && c != '-') return false;
  }
  return true;
}

// Dot-separated labels as above, at most 253.
bool is_dns_subdomain(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  size_t start = 0;
  while (true) {
    size_t dot = s.find('.', start);
    if (!is_dns_label(s.substr(start, dot == std::string_view::npos ? dot : dot - start))) {
      return false;
    }
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

bool printable(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

std::string_view trim_newline(std::string_view line) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

Result<json> parse_object(std::string_view line, const char* what) {
  line = trim_newline(line);
  if (line.size() > kMaxLineBytes) {
    return make_error(Errc::kInvalidArgument,
                      std::string(what) + " longer than " + std::to_string(kMaxLineBytes));
  }
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return make_error(Errc::kInvalidArgument, std::string(what) + ": bad JSON");
  if (!j.is_object()) {
    return make_error(Errc::kInvalidArgument, std::string(what) + ": not a JSON object");
  }
  return j;
}

Result<std::string> get_string(const json& j, const char* key, bool required) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (required) return bad(key, "missing");
    return std::string();
  }
  if (!it->is_string()) return bad(key, std::string("must be a string, got ") + it->type_name());
  return it->get<std::string>();
}

Result<Op> parse_op(std::string_view s) {
  if (s == "add") return Op::kAdd;
  if (s == "del") return Op::kDel;
  if (s == "check") return Op::kCheck;
  return bad("op", "must be \"add\", \"del\" or \"check\", got " + shown(s));
}

}  // namespace

const char* op_name(Op op) {
  switch (op) {
    case Op::kAdd:
      return "add";
    case Op::kDel:
      return "del";
    case Op::kCheck:
      return "check";
  }
  return "?";
}

Result<void> validate(const EnrollRequest& r) {
  if (!is_dns_label(r.pod_namespace)) {
    return bad("namespace", "must be a DNS-1123 label, got " + shown(r.pod_namespace));
  }
  if (!is_dns_subdomain(r.name)) {
    return bad("name", "must be a DNS-1123 subdomain, got " + shown(r.name));
  }
  if (r.uid.size() > kMaxUid || !printable(r.uid)) {
    return bad("uid", "must be printable and at most " + std::to_string(kMaxUid) + " bytes");
  }
  if (r.netns.empty()) {
    if (r.op != Op::kDel)
      return bad("netns", "missing (required for " + std::string(op_name(r.op)) + ")");
  } else if (r.netns.front() != '/' || r.netns.size() > kMaxPath || !printable(r.netns)) {
    return bad("netns", "must be an absolute path, got " + shown(r.netns));
  }
  if (r.container_id.empty()) return bad("containerId", "must not be empty");
  if (r.container_id.size() > kMaxContainerId || !printable(r.container_id)) {
    return bad("containerId",
               "must be printable and at most " + std::to_string(kMaxContainerId) + " bytes");
  }
  if (r.ips.size() > kMaxIps)
    return bad("ips", "more than " + std::to_string(kMaxIps) + " entries");
  if (r.op == Op::kAdd && r.ips.empty()) return bad("ips", "must not be empty for add");
  return {};
}

std::string encode_request(const EnrollRequest& r) {
  json ips = json::array();
  for (const auto& ip : r.ips) ips.push_back(ip.to_string());
  json j = {{"op", op_name(r.op)},  {"namespace", r.pod_namespace},
            {"name", r.name},       {"uid", r.uid},
            {"netns", r.netns},     {"containerId", r.container_id},
            {"ips", std::move(ips)}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string encode_reply(const EnrollReply& r) {
  json j = {{"ok", r.ok}};
  if (!r.ok) j["error"] = r.error.empty() ? "unknown error" : r.error;
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

Result<EnrollRequest> decode_request(std::string_view line) {
  auto parsed = parse_object(line, "request");
  if (!parsed) return parsed.error();
  const json& j = *parsed;
  static const char* const kKeys[] = {"op",    "namespace",   "name", "uid",
                                      "netns", "containerId", "ips"};
  for (const auto& [key, _] : j.items()) {
    if (std::find(std::begin(kKeys), std::end(kKeys), key) == std::end(kKeys)) {
      return bad(key, "unknown field");
    }
  }
  EnrollRequest r;
  auto op = get_string(j, "op", true);
  if (!op) return op.error();
  auto op_val = parse_op(*op);
  if (!op_val) return op_val.error();
  r.op = *op_val;

  struct Field {
    const char* key;
    std::string* out;
    bool required;
  };
  const Field fields[] = {{"namespace", &r.pod_namespace, true},
                          {"name", &r.name, true},
                          {"uid", &r.uid, false},
                          {"netns", &r.netns, false},
                          {"containerId", &r.container_id, true}};
  for (const auto& f : fields) {
    auto v = get_string(j, f.key, f.required);
    if (!v) return v.error();
    *f.out = std::move(*v);
  }

  if (auto it = j.find("ips"); it != j.end()) {
    if (!it->is_array()) return bad("ips", std::string("must be an array, got ") + it->type_name());
    if (it->size() > kMaxIps)
      return bad("ips", "more than " + std::to_string(kMaxIps) + " entries");
    for (size_t i = 0; i < it->size(); ++i) {
      const json& e = (*it)[i];
      std::string field = "ips[" + std::to_string(i) + "]";
      if (!e.is_string()) return bad(field, std::string("must be a string, got ") + e.type_name());
      auto ip = IpAddr::parse(e.get<std::string>());
      if (!ip) return bad(field, "not an IP address: " + shown(e.get<std::string>()));
      r.ips.push_back(*ip);
    }
  }
  auto ok = validate(r);
  if (!ok) return ok.error();
  return r;
}

Result<EnrollReply> decode_reply(std::string_view line) {
  auto parsed = parse_object(line, "reply");
  if (!parsed) return parsed.error();
  const json& j = *parsed;
  for (const auto& [key, _] : j.items()) {
    if (key != "ok" && key != "error") return bad(key, "unknown field");
  }
  auto it = j.find("ok");
  if (it == j.end()) return bad("ok", "missing");
  if (!it->is_boolean()) return bad("ok", std::string("must be a boolean, got ") + it->type_name());
  EnrollReply r;
  r.ok = it->get<bool>();
  auto err = get_string(j, "error", !r.ok);
  if (!err) return err.error();
  r.error = std::move(*err);
  if (!r.ok && r.error.empty()) return bad("error", "must not be empty when ok is false");
  if (r.ok && j.contains("error")) return bad("error", "not allowed when ok is true");
  return r;
}

}  // namespace warren::cni
