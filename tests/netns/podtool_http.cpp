// warren-podtool's HTTP/1.1 pair for the waypoint tests:
//   http-serve --port P --name NAME
//       answers every request 200 "NAME <method> <path>\n" with
//       x-backend: NAME (keep-alive, Content-Length bodies read and dropped);
//       prints {"listening": P} once bound.
//   http-get --to IP:PORT [--path /p] [--header "name: value"] [--count N]
//            [--timeout-ms T]
//       N requests (default 1), one connection each; prints one JSON line
//       {"ok": <every request answered>, "statuses": [...], "backends": [...]}
//       (backends: the x-backend header, "" when none).
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>

#include "podtool.h"

namespace warren::podtool {

namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The value of a header in a head ("" when absent).
std::string header_of(const std::string& head, const std::string& name) {
  size_t pos = head.find("\r\n");
  while (pos != std::string::npos && pos + 2 < head.size()) {
    size_t end = head.find("\r\n", pos + 2);
    std::string line = head.substr(pos + 2, end == std::string::npos ? std::string::npos : end - pos - 2);
    auto colon = line.find(':');
    if (colon != std::string::npos && lower(line.substr(0, colon)) == name) {
      size_t v = line.find_first_not_of(' ', colon + 1);
      return v == std::string::npos ? "" : line.substr(v);
    }
    pos = end;
  }
  return "";
}

// Reads until a whole head plus `Content-Length` body is in `buf`; returns
// the head length (0: connection closed or error).
size_t read_message(int fd, std::string& buf, size_t* body_len) {
  char tmp[16384];
  while (true) {
    size_t h = buf.find("\r\n\r\n");
    if (h != std::string::npos) {
      std::string cl = header_of(buf.substr(0, h + 2), "content-length");
      *body_len = cl.empty() ? 0 : std::stoul(cl);
      if (buf.size() >= h + 4 + *body_len) return h + 4;
    }
    ssize_t n = ::read(fd, tmp, sizeof tmp);
    if (n <= 0) return 0;
    buf.append(tmp, static_cast<size_t>(n));
  }
}

void serve_conn(int fd, std::string name) {
  std::string buf;
  while (true) {
    size_t body = 0;
    size_t head = read_message(fd, buf, &body);
    if (!head) break;
    std::string first = buf.substr(0, buf.find("\r\n"));
    auto sp1 = first.find(' '), sp2 = first.rfind(' ');
    std::string method = first.substr(0, sp1);
    std::string path = sp2 > sp1 ? first.substr(sp1 + 1, sp2 - sp1 - 1) : "";
    bool close = lower(header_of(buf.substr(0, head), "connection")) == "close";
    buf.erase(0, head + body);
    std::string text = name + " " + method + " " + path + "\n";
    std::string resp = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-backend: " + name +
                       "\r\ncontent-length: " + std::to_string(text.size()) + "\r\n\r\n" + text;
    if (!send_all(fd, resp.data(), resp.size()) || close) break;
  }
  ::close(fd);
}

}  // namespace

int cmd_http_serve(const Args& a) {
  int port = static_cast<int>(a.num("port", -1));
  if (port < 0) fail("http-serve needs --port");
  std::string name = a.str("name", "backend");
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa = parse_addr("0.0.0.0:" + std::to_string(port));
  if (bind(ls, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || listen(ls, 1024) != 0)
    fail("listen on port " + std::to_string(port) + ": " + std::strerror(errno));
  emit({{"listening", port}});
  while (true) {
    int fd = accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      fail(std::string("accept: ") + std::strerror(errno));
    }
    std::thread(serve_conn, fd, name).detach();
  }
}

int cmd_http_get(const Args& a) {
  sockaddr_in to = parse_addr(a.need("to"));
  std::string path = a.str("path", "/");
  std::string extra = a.str("header");
  long long count = a.num("count", 1);
  int timeout = static_cast<int>(a.num("timeout-ms", 3000));
  nlohmann::json statuses = nlohmann::json::array(), backends = nlohmann::json::array();
  bool ok = true;
  for (long long i = 0; i < count; i++) {
    int status = 0;
    std::string backend;
    int fd = tcp_connect(to, timeout);
    if (fd >= 0) {
      set_timeouts(fd, timeout);
      std::string req = "GET " + path + " HTTP/1.1\r\nhost: " + a.need("to") + "\r\n";
      if (!extra.empty()) req += extra + "\r\n";
      req += "connection: close\r\n\r\n";
      std::string buf;
      size_t body = 0;
      if (send_all(fd, req.data(), req.size()) && read_message(fd, buf, &body)) {
        std::string first = buf.substr(0, buf.find("\r\n"));
        if (first.size() > 12) status = std::atoi(first.c_str() + 9);
        backend = header_of(buf.substr(0, buf.find("\r\n\r\n") + 2), "x-backend");
      }
      ::close(fd);
    }
    ok = ok && status != 0;
    statuses.push_back(status);
    backends.push_back(backend);
  }
  emit({{"ok", ok}, {"statuses", statuses}, {"backends", backends}});
  return ok ? 0 : 1;
}

}  // namespace warren::podtool
