// Text: an owned, immutable string in 8 bytes (one pointer to a block holding
// the length and the characters), for the per-object strings a node keeps a
// hundred thousand of (workload uids and names): std::string takes 32 bytes
// before its heap block. Reads as a std::string_view; str() copies.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <iosfwd>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

namespace warren {

class Text {
 public:
  Text() = default;
  Text(std::string_view s) { assign(s); }  // NOLINT: implicit, as std::string is
  Text(const std::string& s) { assign(s); }
  Text(const char* s) { assign(s); }
  Text(const Text& o) { assign(o.view()); }
  Text(Text&& o) noexcept : p_(o.p_) { o.p_ = nullptr; }
  Text& operator=(const Text& o) {
    if (this != &o) assign(o.view());
    return *this;
  }
  Text& operator=(Text&& o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  ~Text() { delete[] p_; }

  std::string_view view() const {
    if (!p_) return {};
    uint32_t n;
    std::memcpy(&n, p_, sizeof n);
    return {p_ + sizeof n, n};
  }
  operator std::string_view() const { return view(); }  // NOLINT
  std::string str() const { return std::string(view()); }
  const char* c_str() const { return p_ ? p_ + sizeof(uint32_t) : ""; }
  size_t size() const { return view().size(); }
  bool empty() const { return p_ == nullptr; }

  friend bool operator==(const Text& a, const Text& b) { return a.view() == b.view(); }
  friend bool operator!=(const Text& a, const Text& b) { return a.view() != b.view(); }
  friend bool operator<(const Text& a, const Text& b) { return a.view() < b.view(); }
  friend bool operator==(const Text& a, std::string_view b) { return a.view() == b; }
  friend bool operator!=(const Text& a, std::string_view b) { return a.view() != b; }
  friend bool operator<(const Text& a, std::string_view b) { return a.view() < b; }
  friend bool operator<(std::string_view a, const Text& b) { return a < b.view(); }
  friend bool operator==(const Text& a, const std::string& b) { return a.view() == b; }
  friend bool operator!=(const Text& a, const std::string& b) { return a.view() != b; }
  friend bool operator==(const Text& a, const char* b) { return a.view() == b; }
  friend bool operator!=(const Text& a, const char* b) { return a.view() != b; }
  friend std::string operator+(const Text& a, std::string_view b) { return a.str().append(b); }
  friend std::string operator+(const Text& a, const char* b) { return a.str().append(b); }
  friend std::string operator+(const Text& a, const std::string& b) { return a.str().append(b); }
  friend std::string operator+(const std::string& a, const Text& b) { return std::string(a).append(b.view()); }
  friend std::string operator+(std::string&& a, const Text& b) { return std::move(a.append(b.view())); }
  friend std::string operator+(const char* a, const Text& b) { return std::string(a).append(b.view()); }
  friend std::ostream& operator<<(std::ostream& os, const Text& t);

 private:
  void assign(std::string_view s) {
    char* p = nullptr;
    if (!s.empty()) {
      uint32_t n = static_cast<uint32_t>(s.size());
      p = new char[sizeof n + s.size() + 1];
      std::memcpy(p, &n, sizeof n);
      std::memcpy(p + sizeof n, s.data(), s.size());
      p[sizeof n + s.size()] = '\0';
    }
    delete[] p_;
    p_ = p;
  }
  char* p_ = nullptr;  // null: empty
};

void to_json(nlohmann::json& j, const Text& t);

}  // namespace warren

template <>
struct std::hash<warren::Text> {
  size_t operator()(const warren::Text& t) const { return std::hash<std::string_view>()(t.view()); }
};
