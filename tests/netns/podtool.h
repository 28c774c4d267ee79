// Shared pieces of warren-podtool: argument parsing, the deterministic byte
// streams, SHA-256, addresses and JSON output.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace warren::podtool {

// --key value pairs and bare --flags after the subcommand.
struct Args {
  std::map<std::string, std::string> kv;
  bool has(const std::string& k) const { return kv.count(k) != 0; }
  std::string str(const std::string& k, const std::string& def = "") const;
  long long num(const std::string& k, long long def) const;
  std::string need(const std::string& k) const;  // fails when missing
};
Args parse_args(int argc, char** argv, int first);

// Streams: byte p of stream `seed` is a fixed function of (seed, p), so a
// reader checks order and content, not just counts. Client to server uses
// kClientSeed, server to client kServerSeed.
constexpr uint64_t kClientSeed = 1, kServerSeed = 2;
void gen_fill(uint64_t seed, uint64_t pos, char* buf, size_t n);
// Index of the first byte of buf that differs from the stream, or -1.
long long gen_mismatch(uint64_t seed, uint64_t pos, const char* buf, size_t n);

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* p, size_t n);
  std::string hex();  // finalises

 private:
  void* ctx_;
};

sockaddr_in parse_addr(const std::string& ip_port);  // fails on bad input
std::string addr_str(const sockaddr_in& a);
std::string peer_of(int fd);
std::string local_of(int fd);

// One JSON line on stdout (serialised across threads, flushed).
void emit(const nlohmann::json& j);
// Message on stderr, exit 1.
[[noreturn]] void fail(const std::string& msg);

bool send_all(int fd, const char* p, size_t n);
// Connects (timeout in ms); -1 with errno on failure.
int tcp_connect(const sockaddr_in& to, int timeout_ms);
void set_timeouts(int fd, int ms);
double now_s();
double percentile(std::vector<double>& v, double q);  // sorts v

int cmd_serve(const Args& a);
int cmd_udp_echo_serve(const Args& a);
int cmd_connect(const Args& a);
int cmd_transfer(const Args& a);
int cmd_udp_echo(const Args& a);
int cmd_long_lived(const Args& a);
int cmd_rr(const Args& a);
int cmd_tput(const Args& a);
int cmd_cps(const Args& a);
int cmd_http_serve(const Args& a);  // podtool_http.cpp
int cmd_http_get(const Args& a);

}  // namespace warren::podtool
