#include "warren/name.h"

#include <nlohmann/json.hpp>

#include <mutex>
#include <ostream>
#include <unordered_map>

namespace warren {

struct Name::Entry {
  std::string s;
  size_t refs = 0;
};

namespace {

// Keys view the entry's own string. Leaked on purpose: Names in static
// objects may outlive any destructor order.
struct Table {
  std::mutex mu;
  std::unordered_map<std::string_view, Name::Entry*> map;
};
Table& table() {
  static Table* t = new Table;
  return *t;
}
const std::string& empty_string() {
  static const std::string* e = new std::string;
  return *e;
}

}  // namespace

Name::Name(std::string_view s) {
  if (s.empty()) return;
  Table& t = table();
  std::lock_guard<std::mutex> lock(t.mu);
  auto it = t.map.find(s);
  if (it == t.map.end()) {
    auto* e = new Entry{std::string(s), 0};
    it = t.map.emplace(std::string_view(e->s), e).first;
  }
  e_ = it->second;
  ++e_->refs;
}

Name::Name(const Name& o) : e_(o.e_) {
  if (!e_) return;
  std::lock_guard<std::mutex> lock(table().mu);
  ++e_->refs;
}

Name& Name::operator=(const Name& o) {
  if (this != &o) {
    Name copy(o);
    *this = std::move(copy);
  }
  return *this;
}

Name& Name::operator=(Name&& o) noexcept {
  if (this != &o) {
    release();
    e_ = o.e_;
    o.e_ = nullptr;
  }
  return *this;
}

Name::~Name() { release(); }

void Name::release() {
  if (!e_) return;
  Table& t = table();
  std::lock_guard<std::mutex> lock(t.mu);
  if (--e_->refs == 0) {
    t.map.erase(std::string_view(e_->s));
    delete e_;
  }
  e_ = nullptr;
}

const std::string& Name::str() const { return e_ ? e_->s : empty_string(); }

size_t Name::table_size() {
  Table& t = table();
  std::lock_guard<std::mutex> lock(t.mu);
  return t.map.size();
}

std::ostream& operator<<(std::ostream& os, const Name& n) { return os << n.str(); }

void to_json(nlohmann::json& j, const Name& n) { j = n.str(); }

}  // namespace warren

#include "warren/text.h"

namespace warren {
std::ostream& operator<<(std::ostream& os, const Text& t) { return os << t.view(); }
void to_json(nlohmann::json& j, const Text& t) { j = std::string(t.view()); }
}  // namespace warren
