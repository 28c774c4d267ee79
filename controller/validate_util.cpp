#include "validate_util.h"

#include "warren/ip.h"

namespace warren::controller::detail {

std::string show(const json& v) {
  if (v.is_object()) return "an object";
  if (v.is_array()) return "an array";
  return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

bool dns_label(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  return s.front() != '-' && s.back() != '-';
}

bool dns_subdomain(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  while (true) {
    auto dot = s.find('.');
    if (!dns_label(s.substr(0, dot))) return false;
    if (dot == std::string_view::npos) return true;
    s = s.substr(dot + 1);
  }
}

bool port_name(std::string_view s) {
  if (s.empty() || s.size() > 15 || s.front() == '-' || s.back() == '-') return false;
  bool letter = false;
  for (size_t i = 0; i < s.size(); i++) {
    char c = s[i];
    if (c >= 'a' && c <= 'z') letter = true;
    else if (c == '-' && i > 0 && s[i - 1] == '-') return false;
    else if (!((c >= '0' && c <= '9') || c == '-')) return false;
  }
  return letter;
}

bool duration(std::string_view s) {
  if (s.empty()) return false;
  if (s == "0") return true;
  size_t i = 0;
  while (i < s.size()) {
    size_t start = i;
    bool dot = false;
    for (; i < s.size() && ((s[i] >= '0' && s[i] <= '9') || (s[i] == '.' && !dot)); i++)
      if (s[i] == '.') dot = true;
    if (i == start || (i == start + 1 && dot)) return false;
    static constexpr std::string_view units[] = {"ns", "us", "\xC2\xB5s", "ms", "s", "m", "h"};
    bool found = false;
    for (auto u : units) {
      if (s.substr(i, u.size()) == u && !(u == "m" && s.substr(i, 2) == "ms")) {
        i += u.size();
        found = true;
        break;
      }
    }
    if (!found) return false;
  }
  return true;
}

const json* Checker::object(const json& parent, const std::string& path, std::string_view key,
                            bool required) {
  const json* v = get(parent, key);
  auto p = [&] { return field_path(path, key); };
  if (!v) {
    if (required) err(p(), "is required");
    return nullptr;
  }
  if (!v->is_object()) {
    err(p(), "must be an object, got " + show(*v));
    return nullptr;
  }
  return v;
}

std::optional<std::string> Checker::string(const json& parent, const std::string& path,
                                           std::string_view key, bool required) {
  const json* v = get(parent, key);
  auto p = [&] { return field_path(path, key); };
  if (!v) {
    if (required) err(p(), "is required");
    return std::nullopt;
  }
  if (!v->is_string()) {
    err(p(), "must be a string, got " + show(*v));
    return std::nullopt;
  }
  if (required && v->get_ref<const std::string&>().empty()) err(p(), "must not be empty");
  return v->get<std::string>();
}

void Checker::boolean(const json& parent, const std::string& path, std::string_view key) {
  const json* v = get(parent, key);
  if (v && !v->is_boolean()) err(field_path(path, key), "must be true or false, got " + show(*v));
}

std::optional<int64_t> Checker::integer(const json& parent, const std::string& path, std::string_view key,
                                        int64_t lo, int64_t hi, bool required) {
  const json* v = get(parent, key);
  auto p = [&] { return field_path(path, key); };
  if (!v) {
    if (required) err(p(), "is required");
    return std::nullopt;
  }
  if (!v->is_number_integer() || (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX))) {
    err(p(), "must be an integer, got " + show(*v));
    return std::nullopt;
  }
  int64_t n = v->get<int64_t>();
  if (n < lo || n > hi) {
    err(p(), std::to_string(n) + " is not within " + std::to_string(lo) + ".." + std::to_string(hi));
    return std::nullopt;
  }
  return n;
}

std::optional<uint16_t> Checker::port(const json& parent, const std::string& path, std::string_view key,
                                      bool required) {
  const json* v = get(parent, key);
  auto p = [&] { return field_path(path, key); };
  if (!v) {
    if (required) err(p(), "is required");
    return std::nullopt;
  }
  if (v->is_number_integer()) {
    int64_t n = v->is_number_unsigned() && v->get<uint64_t>() > 65535 ? 0 : v->get<int64_t>();
    if (n >= 1 && n <= 65535) return static_cast<uint16_t>(n);
  }
  err(p(), show(*v) + " is not a port");
  return std::nullopt;
}

void Checker::enumeration(const json& parent, const std::string& path, std::string_view key,
                          std::initializer_list<std::string_view> names, bool required) {
  const json* v = get(parent, key);
  if (!v) {
    if (required) err(field_path(path, key), "is required");
    return;
  }
  if (v->is_string())
    for (auto n : names)
      if (v->get_ref<const std::string&>() == n) return;
  std::string all;
  for (auto n : names) all += (all.empty() ? "" : ", ") + std::string(n);
  err(field_path(path, key), show(*v) + " is not one of " + all);
}

void Checker::duration_field(const json& parent, const std::string& path, std::string_view key) {
  const json* v = get(parent, key);
  if (v && !(v->is_string() && duration(v->get_ref<const std::string&>())))
    err(field_path(path, key), show(*v) + " is not a duration (like \"1s\", \"500ms\", \"1h30m\")");
}

void Checker::string_map(const json& parent, const std::string& path, std::string_view key) {
  const json* m = object(parent, path, key);
  if (!m) return;
  auto p = [&] { return field_path(path, key); };
  for (auto it = m->begin(); it != m->end(); ++it)
    if (!it->is_string()) err(field_path(p(), it.key()), "must be a string, got " + show(*it));
}

void Checker::strings(const json& parent, const std::string& path, std::string_view key) {
  each(parent, path, key, [&](const json& e, const std::string& p, size_t) {
    if (!e.is_string()) err(p, "must be a string, got " + show(e));
    else if (e.get_ref<const std::string&>().empty()) err(p, "must not be empty");
  });
}

void Checker::ip(const json& parent, const std::string& path, std::string_view key, bool required) {
  const json* v = get(parent, key);
  if (!v) {
    if (required) err(field_path(path, key), "is required");
    return;
  }
  if (!v->is_string() || !IpAddr::parse(v->get_ref<const std::string&>()))
    err(field_path(path, key), show(*v) + " is not an IP address");
}

void Checker::workload_selector(const json& parent, const std::string& path, std::string_view key) {
  if (const json* s = object(parent, path, key)) string_map(*s, field_path(path, key), "matchLabels");
}

void Checker::target_ref(const json& ref, const std::string& path) {
  if (!ref.is_object()) return err(path, "must be an object, got " + show(ref));
  string(ref, path, "group");
  string(ref, path, "kind", true);
  string(ref, path, "name", true);
  string(ref, path, "namespace");
}

}  // namespace warren::controller::detail
