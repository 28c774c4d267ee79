// warren::Name: interned strings.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <map>
#include <thread>
#include <vector>

#include "warren/name.h"

using warren::Name;

TEST_CASE("Name interns equal strings and frees them with the last copy", "[common]") {
  size_t before = Name::table_size();
  {
    Name a("shop"), b(std::string("shop")), c = a;
    CHECK(a == b);
    CHECK(&a.str() == &b.str());
    CHECK(Name::table_size() == before + 1);
    Name d("cart");
    CHECK(a != d);
    CHECK((a < d) == (std::string("shop") < std::string("cart")));
    CHECK(Name::table_size() == before + 2);
    c = d;  // shop still held by a and b
    CHECK(Name::table_size() == before + 2);
    Name e(std::move(c));
    CHECK(c.empty());
    CHECK(e == "cart");
  }
  CHECK(Name::table_size() == before);
}

TEST_CASE("Name reads as a string", "[common]") {
  Name n("ns-1");
  const std::string& s = n;
  CHECK(s == "ns-1");
  CHECK("spiffe://td/ns/" + n + "/sa/" + Name("default") == "spiffe://td/ns/ns-1/sa/default");
  CHECK(n == std::string("ns-1"));
  CHECK(std::string("ns-1") == n);
  CHECK(n.size() == 4);
  Name empty, empty2("");
  CHECK(empty.empty());
  CHECK(empty == empty2);
  CHECK(empty.str().empty());
  nlohmann::json j = {{"namespace", n}};
  CHECK(j.dump() == R"({"namespace":"ns-1"})");
  std::map<Name, int> m{{Name("b"), 2}, {Name("a"), 1}};
  CHECK(m.begin()->first == "a");
}

TEST_CASE("Name is safe to make and drop from several threads", "[common]") {
  size_t before = Name::table_size();
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([] {
      for (int i = 0; i < 20000; ++i) {
        Name a("n-" + std::to_string(i % 50));
        Name b = a;
        Name c("n-" + std::to_string((i + 1) % 50));
        b = c;
      }
    });
  for (auto& t : ts) t.join();
  CHECK(Name::table_size() == before);
}
