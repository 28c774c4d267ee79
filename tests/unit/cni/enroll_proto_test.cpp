#include "enroll_proto.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "test_server.h"

using namespace warren;
using namespace warren::cni;
using warren::cni::testing::sample_request;

namespace {

std::string decode_error(const std::string& line) {
  auto r = decode_request(line);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::kInvalidArgument);
  return r.error().message;
}

const char* kGood =
    R"({"op":"add","namespace":"shop","name":"sleep-1","uid":"u-1","netns":"/var/run/netns/x",)"
    R"("containerId":"c1","ips":["10.1.0.2"]})";

std::string with(const std::string& key, const std::string& json_value) {
  auto j = nlohmann::json::parse(kGood);
  if (json_value.empty()) {
    j.erase(key);
  } else {
    j[key] = nlohmann::json::parse(json_value);
  }
  return j.dump();
}

}  // namespace

TEST_CASE("enroll request round-trips through one line", "[cni][proto]") {
  for (Op op : {Op::kAdd, Op::kDel, Op::kCheck}) {
    auto req = sample_request(op);
    std::string line = encode_request(req);
    REQUIRE(line.back() == '\n');
    REQUIRE(line.find('\n') == line.size() - 1);
    auto back = decode_request(line);
    REQUIRE(back.ok());
    CHECK(*back == req);
  }
}

TEST_CASE("enroll request decodes the documented example", "[cni][proto]") {
  auto r = decode_request(std::string(kGood) + "\r\n");
  REQUIRE(r.ok());
  CHECK(r->op == Op::kAdd);
  CHECK(r->pod_namespace == "shop");
  CHECK(r->name == "sleep-1");
  CHECK(r->uid == "u-1");
  CHECK(r->netns == "/var/run/netns/x");
  CHECK(r->container_id == "c1");
  REQUIRE(r->ips.size() == 1);
  CHECK(r->ips[0].to_string() == "10.1.0.2");
}

TEST_CASE("enroll request errors name the field", "[cni][proto]") {
  CHECK(decode_error("not json") == "request: bad JSON");
  CHECK(decode_error("[1]") == "request: not a JSON object");
  CHECK(decode_error(with("op", "")) == "op: missing");
  CHECK(decode_error(with("op", R"("create")")).rfind("op: must be", 0) == 0);
  CHECK(decode_error(with("op", "1")) == "op: must be a string, got number");
  CHECK(decode_error(with("namespace", "")) == "namespace: missing");
  CHECK(decode_error(with("namespace", R"("Shop")")).rfind("namespace: must be a DNS-1123", 0) ==
        0);
  CHECK(decode_error(with("namespace", R"("a.b")")).rfind("namespace:", 0) == 0);
  CHECK(decode_error(with("name", R"("")")).rfind("name: must be a DNS-1123", 0) == 0);
  CHECK(decode_error(with("name", R"("-x")")).rfind("name:", 0) == 0);
  CHECK(decode_error(with("name", "null")) == "name: must be a string, got null");
  CHECK(decode_error(with("uid", "7")) == "uid: must be a string, got number");
  CHECK(decode_error(with("uid", R"("a\u0001b")")).rfind("uid:", 0) == 0);
  CHECK(decode_error(with("netns", "")) == "netns: missing (required for add)");
  CHECK(decode_error(with("netns", R"("relative/x")")).rfind("netns: must be an absolute", 0) == 0);
  CHECK(decode_error(with("containerId", "")) == "containerId: missing");
  CHECK(decode_error(with("containerId", R"("")")) == "containerId: must not be empty");
  CHECK(decode_error(with("ips", R"("10.1.0.2")")) == "ips: must be an array, got string");
  CHECK(decode_error(with("ips", "[]")) == "ips: must not be empty for add");
  CHECK(decode_error(with("ips", "")) == "ips: must not be empty for add");
  CHECK(decode_error(with("ips", R"(["10.1.0.2", 5])")) == "ips[1]: must be a string, got number");
  CHECK(decode_error(with("ips", R"(["10.1.0.2/24"])")).rfind("ips[0]: not an IP address", 0) == 0);
  CHECK(decode_error(with("extra", "1")) == "extra: unknown field");
  std::string many = "[";
  for (int i = 0; i < 65; ++i)
    many += std::string(i ? "," : "") + "\"10.0.0." + std::to_string(i) + "\"";
  CHECK(decode_error(with("ips", many + "]")) == "ips: more than 64 entries");
}

TEST_CASE("enroll del may omit netns and ips", "[cni][proto]") {
  auto j = nlohmann::json::parse(kGood);
  j["op"] = "del";
  j.erase("netns");
  j.erase("ips");
  j.erase("uid");
  auto r = decode_request(j.dump());
  REQUIRE(r.ok());
  CHECK(r->op == Op::kDel);
  CHECK(r->netns.empty());
  CHECK(r->ips.empty());
}

TEST_CASE("enroll request longer than the line limit is refused", "[cni][proto]") {
  std::string huge = with("uid", "\"" + std::string(kMaxLineBytes, 'a') + "\"");
  CHECK(decode_error(huge).find("longer than") != std::string::npos);
}

TEST_CASE("enroll reply encodes and decodes", "[cni][proto]") {
  CHECK(encode_reply(EnrollReply::success()) == "{\"ok\":true}\n");
  CHECK(encode_reply(EnrollReply::failure("pod unknown")) ==
        "{\"error\":\"pod unknown\",\"ok\":false}\n");
  auto ok = decode_reply("{\"ok\":true}\n");
  REQUIRE(ok.ok());
  CHECK(ok->ok);
  auto no = decode_reply(R"({"ok":false,"error":"x"})");
  REQUIRE(no.ok());
  CHECK_FALSE(no->ok);
  CHECK(no->error == "x");

  auto err = [](const std::string& s) {
    auto r = decode_reply(s);
    REQUIRE_FALSE(r.ok());
    return r.error().message;
  };
  CHECK(err("{}") == "ok: missing");
  CHECK(err(R"({"ok":"yes"})") == "ok: must be a boolean, got string");
  CHECK(err(R"({"ok":false})") == "error: missing");
  CHECK(err(R"({"ok":false,"error":""})") == "error: must not be empty when ok is false");
  CHECK(err(R"({"ok":true,"error":"x"})") == "error: not allowed when ok is true");
  CHECK(err(R"({"ok":true,"more":1})") == "more: unknown field");
  CHECK(err("nope") == "reply: bad JSON");
}
