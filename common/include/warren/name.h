// Name: an interned, immutable string for the values a large mesh repeats
// across many objects (namespaces, service accounts, node names, SPIFFE
// identities, canonical service names). 100,000 workloads share a few
// thousand distinct values; each Name is one pointer to a shared,
// reference-counted entry in a process-wide table, and an entry is freed when
// its last Name goes (Envoy's symbol table, simplified). Thread-safe: the
// table and the counts are guarded by one mutex, since Names are made and
// dropped when configuration is parsed and applied, never per connection.
//
// It reads as a `const std::string&` wherever one is expected; equality with
// another Name is a pointer compare.
#pragma once

#include <cstddef>
#include <functional>
#include <iosfwd>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

namespace warren {

class Name {
 public:
  Name() = default;
  Name(std::string_view s);  // NOLINT: implicit, as std::string is
  Name(const std::string& s) : Name(std::string_view(s)) {}
  Name(const char* s) : Name(std::string_view(s)) {}
  Name(const Name& o);
  Name(Name&& o) noexcept : e_(o.e_) { o.e_ = nullptr; }
  Name& operator=(const Name& o);
  Name& operator=(Name&& o) noexcept;
  ~Name();

  const std::string& str() const;
  operator const std::string&() const { return str(); }  // NOLINT
  operator std::string_view() const { return str(); }    // NOLINT
  const char* c_str() const { return str().c_str(); }
  size_t size() const { return str().size(); }
  bool empty() const { return e_ == nullptr; }

  friend bool operator==(const Name& a, const Name& b) { return a.e_ == b.e_; }
  friend bool operator!=(const Name& a, const Name& b) { return a.e_ != b.e_; }
  friend bool operator<(const Name& a, const Name& b) { return a.str() < b.str(); }
  friend bool operator==(const Name& a, std::string_view b) { return a.str() == b; }
  friend bool operator!=(const Name& a, std::string_view b) { return a.str() != b; }
  friend bool operator==(std::string_view a, const Name& b) { return a == b.str(); }
  friend bool operator!=(std::string_view a, const Name& b) { return a != b.str(); }
  friend bool operator==(const Name& a, const std::string& b) { return a.str() == b; }
  friend bool operator!=(const Name& a, const std::string& b) { return a.str() != b; }
  friend bool operator==(const std::string& a, const Name& b) { return a == b.str(); }
  friend bool operator!=(const std::string& a, const Name& b) { return a != b.str(); }
  friend bool operator==(const Name& a, const char* b) { return a.str() == b; }
  friend bool operator!=(const Name& a, const char* b) { return a.str() != b; }
  friend std::string operator+(const Name& a, const std::string& b) { return a.str() + b; }
  friend std::string operator+(const std::string& a, const Name& b) { return a + b.str(); }
  friend std::string operator+(std::string&& a, const Name& b) { return std::move(a) + b.str(); }
  friend std::string operator+(const Name& a, const char* b) { return a.str() + b; }
  friend std::string operator+(const char* a, const Name& b) { return a + b.str(); }
  friend std::string operator+(const Name& a, char b) { return a.str() + b; }
  friend std::string operator+(const Name& a, const Name& b) { return a.str() + b.str(); }
  friend std::ostream& operator<<(std::ostream& os, const Name& n);

  // Distinct values alive (tests, /debug).
  static size_t table_size();

  struct Entry;

 private:
  void release();
  Entry* e_ = nullptr;  // null: the empty string
};

void to_json(nlohmann::json& j, const Name& n);

}  // namespace warren

template <>
struct std::hash<warren::Name> {
  size_t operator()(const warren::Name& n) const { return std::hash<std::string_view>()(n.str()); }
};
