#include <catch2/catch.hpp>

#include "source.h"

using warren::controller::key_of;

TEST_CASE("key_of reads kind namespace and name", "[controller]") {
  auto k = key_of(nlohmann::json::parse(
      R"({"kind":"AuthorizationPolicy","metadata":{"name":"deny-db","namespace":"shop"}})"));
  CHECK(k.kind == "AuthorizationPolicy");
  CHECK(k.to_string() == "AuthorizationPolicy shop/deny-db");
  CHECK(key_of(nlohmann::json::parse(R"({"kind":"Namespace","metadata":{"name":"shop"}})")).to_string() ==
        "Namespace shop");
  CHECK(key_of(nlohmann::json(3)).kind.empty());
}
