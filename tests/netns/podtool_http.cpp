// warren-podtool's HTTP/1.1 pair for the waypoint tests:
//   http-serve --port P --name NAME [--fail-every N] [--fail-while FILE]
//              [--fail-status S] [--delay-ms D] [--echo-headers] [--body-file F]
//       answers every request 200 "NAME <method> <path>\n" with
//       x-backend: NAME (keep-alive, Content-Length and chunked bodies read
//       and dropped); prints {"listening": P} once bound.
//         --fail-every N   request 1, N+1, 2N+1, ... (one counter for the
//                          server) answered --fail-status (503) instead
//         --fail-while F   every request answered --fail-status while file F exists
//         --delay-ms D     every answer delayed D ms; a request header
//                          x-delay-ms: D delays that one request instead
//         request header x-status: S answers that request with status S
//         --echo-headers   the body also lists the request's header lines
//                          ("name: value\n" each, names lower-cased)
//         --body-file F    the body is the content of F (application/json),
//                          read at each request
//         --require-header "NAME: VALUE"
//                          a request without that header and value is
//                          answered --fail-status (an ext-authz service
//                          that allows on a header and denies otherwise)
//   http-get --to IP:PORT [--path /p] [--header "name: value"] [--count N]
//            [--timeout-ms T] [--method M] [--keepalive] [--concurrency C]
//            [--summary] [--show-body] [--slow-ms S]
//       N requests (default 1); one connection each unless --keepalive (one
//       connection per worker, reopened when the server closes it); C
//       workers (default 1) share the N requests. --header may hold several
//       headers separated by newlines. Prints one JSON line
//       {"ok": <every request answered>, "statuses": [...], "backends": [...]}
//       (backends: the x-backend header, "" when none; "bodies": [...] with
//       --show-body) or with --summary
//       {"ok", "count", "status_counts": {"200": n, ...},
//        "backend_counts": {"NAME": n, ...}, "slow": n, "latency_ms_hist": {...}}
//       (slow: answers that took at least --slow-ms, when given;
//       latency_ms_hist: answers by time taken in 10 ms buckets, "90": 90-99 ms).
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

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

// Reads more bytes into buf; false on EOF or error.
bool read_more(int fd, std::string& buf) {
  char tmp[16384];
  ssize_t n = ::read(fd, tmp, sizeof tmp);
  if (n <= 0) return false;
  buf.append(tmp, static_cast<size_t>(n));
  return true;
}

// Reads one whole message (head plus a Content-Length or chunked body) from
// the front of `buf`, reading more as needed. On success the head is
// head_out, the decoded body body_out, and the message is erased from buf.
bool read_message(int fd, std::string& buf, std::string* head_out, std::string* body_out) {
  size_t h;
  while ((h = buf.find("\r\n\r\n")) == std::string::npos)
    if (!read_more(fd, buf)) return false;
  std::string head = buf.substr(0, h + 2);
  size_t pos = h + 4;
  std::string body;
  if (lower(header_of(head, "transfer-encoding")).find("chunked") != std::string::npos) {
    while (true) {
      size_t eol;
      while ((eol = buf.find("\r\n", pos)) == std::string::npos)
        if (!read_more(fd, buf)) return false;
      size_t len = std::strtoul(buf.c_str() + pos, nullptr, 16);
      pos = eol + 2;
      if (len == 0) {  // trailers up to an empty line
        while (true) {
          while ((eol = buf.find("\r\n", pos)) == std::string::npos)
            if (!read_more(fd, buf)) return false;
          bool empty = eol == pos;
          pos = eol + 2;
          if (empty) break;
        }
        break;
      }
      while (buf.size() < pos + len + 2)
        if (!read_more(fd, buf)) return false;
      body.append(buf, pos, len);
      pos += len + 2;
    }
  } else {
    std::string cl = header_of(head, "content-length");
    size_t len = cl.empty() ? 0 : std::stoul(cl);
    while (buf.size() < pos + len)
      if (!read_more(fd, buf)) return false;
    body = buf.substr(pos, len);
    pos += len;
  }
  buf.erase(0, pos);
  if (head_out) *head_out = std::move(head);
  if (body_out) *body_out = std::move(body);
  return true;
}

struct ServeOptions {
  std::string name;
  long long fail_every = 0;
  std::string fail_while;
  int fail_status = 503;
  long long delay_ms = 0;
  bool echo_headers = false;
  std::string body_file;
  std::string require_name, require_value;  // --require-header
};

std::atomic<long long> g_requests{0};

const char* reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
  }
}

bool file_exists(const std::string& p) {
  struct stat st {};
  return !p.empty() && ::stat(p.c_str(), &st) == 0;
}

void serve_conn(int fd, const ServeOptions& o) {
  std::string buf, head, body;
  while (read_message(fd, buf, &head, &body)) {
    long long n = g_requests++;
    std::string first = head.substr(0, head.find("\r\n"));
    auto sp1 = first.find(' '), sp2 = first.rfind(' ');
    std::string method = first.substr(0, sp1);
    std::string path = sp2 > sp1 ? first.substr(sp1 + 1, sp2 - sp1 - 1) : "";
    bool close = lower(header_of(head, "connection")) == "close";
    int status = 200;
    if (o.fail_every > 0 && n % o.fail_every == 0) status = o.fail_status;
    if (file_exists(o.fail_while)) status = o.fail_status;
    if (!o.require_name.empty() && header_of(head, o.require_name) != o.require_value) status = o.fail_status;
    std::string want = header_of(head, "x-status");
    if (!want.empty()) status = std::atoi(want.c_str());
    long long delay = o.delay_ms;
    std::string d = header_of(head, "x-delay-ms");
    if (!d.empty()) delay = std::atoll(d.c_str());
    if (delay > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    std::string text, type = "text/plain";
    if (!o.body_file.empty()) {
      std::ifstream f(o.body_file);
      std::stringstream ss;
      ss << f.rdbuf();
      text = ss.str();
      type = "application/json";
    } else {
      text = o.name + " " + method + " " + path + "\n";
      if (o.echo_headers) {
        size_t pos = head.find("\r\n");
        while (pos != std::string::npos && pos + 2 < head.size()) {
          size_t end = head.find("\r\n", pos + 2);
          std::string line = head.substr(pos + 2, end - pos - 2);
          auto colon = line.find(':');
          if (colon != std::string::npos) text += lower(line.substr(0, colon)) + line.substr(colon) + "\n";
          pos = end;
        }
      }
    }
    std::string resp = "HTTP/1.1 " + std::to_string(status) + " " + reason(status) + "\r\ncontent-type: " + type +
                       "\r\nx-backend: " + o.name + "\r\ncontent-length: " + std::to_string(text.size()) +
                       "\r\n\r\n" + text;
    if (!send_all(fd, resp.data(), resp.size()) || close) break;
  }
  ::close(fd);
}

// One answer as the client saw it.
struct Result {
  int status = 0;
  std::string backend, body;
  double seconds = 0;
};

}  // namespace

int cmd_http_serve(const Args& a) {
  int port = static_cast<int>(a.num("port", -1));
  if (port < 0) fail("http-serve needs --port");
  static ServeOptions o;
  o.name = a.str("name", "backend");
  o.fail_every = a.num("fail-every", 0);
  o.fail_while = a.str("fail-while");
  o.fail_status = static_cast<int>(a.num("fail-status", 503));
  o.delay_ms = a.num("delay-ms", 0);
  o.echo_headers = a.has("echo-headers");
  o.body_file = a.str("body-file");
  if (std::string rh = a.str("require-header"); !rh.empty()) {
    auto colon = rh.find(':');
    if (colon == std::string::npos) fail("--require-header needs \"name: value\"");
    o.require_name = lower(rh.substr(0, colon));
    o.require_value = rh.substr(rh.find_first_not_of(' ', colon + 1) == std::string::npos ? rh.size() : rh.find_first_not_of(' ', colon + 1));
  }
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa = parse_addr(a.str("address", "0.0.0.0") + ":" + std::to_string(port));
  if (bind(ls, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || listen(ls, 1024) != 0)
    fail("listen on port " + std::to_string(port) + ": " + std::strerror(errno));
  emit({{"listening", port}});
  while (true) {
    int fd = accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      fail(std::string("accept: ") + std::strerror(errno));
    }
    std::thread(serve_conn, fd, std::cref(o)).detach();
  }
}

int cmd_http_get(const Args& a) {
  std::string to_s = a.need("to");
  sockaddr_in to = parse_addr(to_s);
  std::string path = a.str("path", "/");
  std::string method = a.str("method", "GET");
  std::string extra;
  {
    std::istringstream in(a.str("header"));
    std::string line;
    while (std::getline(in, line))
      if (!line.empty()) extra += line + "\r\n";
  }
  long long count = a.num("count", 1);
  int timeout = static_cast<int>(a.num("timeout-ms", 3000));
  bool keepalive = a.has("keepalive");
  bool summary = a.has("summary");
  bool show_body = a.has("show-body");
  long long slow_ms = a.num("slow-ms", -1);
  int workers = static_cast<int>(std::max<long long>(1, std::min(a.num("concurrency", 1), count)));
  std::string req = method + " " + path + " HTTP/1.1\r\nhost: " + to_s + "\r\n" + extra +
                    (keepalive ? "" : "connection: close\r\n") +
                    (method == "POST" || method == "PUT" ? "content-length: 0\r\n" : "") + "\r\n";
  std::vector<Result> results(static_cast<size_t>(count));
  std::atomic<long long> next{0};

  auto worker = [&] {
    int fd = -1;
    std::string buf;
    bool reused = false;
    while (true) {
      long long i = next++;
      if (i >= count) break;
      Result& r = results[static_cast<size_t>(i)];
      double t0 = now_s();
      for (int attempt = 0; attempt < 2; attempt++) {
        if (fd < 0) {
          fd = tcp_connect(to, timeout);
          buf.clear();
          reused = false;
          if (fd < 0) break;
          set_timeouts(fd, timeout);
        }
        std::string head;
        bool got = send_all(fd, req.data(), req.size()) && read_message(fd, buf, &head, &r.body);
        if (got) {
          std::string first = head.substr(0, head.find("\r\n"));
          if (first.size() > 12) r.status = std::atoi(first.c_str() + 9);
          r.backend = header_of(head, "x-backend");
          if (!keepalive || lower(header_of(head, "connection")) == "close") {
            ::close(fd);
            fd = -1;
          } else {
            reused = true;
          }
          break;
        }
        // A kept-alive connection the server closed meanwhile: once more on a new one.
        bool retry = reused && buf.empty();
        ::close(fd);
        fd = -1;
        if (!retry) break;
      }
      r.seconds = now_s() - t0;
    }
    if (fd >= 0) ::close(fd);
  };
  std::vector<std::thread> threads;
  for (int w = 0; w < workers; w++) threads.emplace_back(worker);
  for (auto& t : threads) t.join();

  bool ok = true;
  for (const auto& r : results) ok = ok && r.status != 0;
  if (summary) {
    nlohmann::json sc = nlohmann::json::object(), bc = nlohmann::json::object(), hist = nlohmann::json::object();
    long long slow = 0;
    for (const auto& r : results) {
      std::string s = std::to_string(r.status);
      sc[s] = sc.value(s, 0) + 1;
      bc[r.backend] = bc.value(r.backend, 0) + 1;
      if (slow_ms >= 0 && r.seconds * 1000 >= static_cast<double>(slow_ms)) slow++;
      std::string b = std::to_string(std::min(10000LL, static_cast<long long>(r.seconds * 100) * 10));
      hist[b] = hist.value(b, 0) + 1;
    }
    emit({{"ok", ok}, {"count", count}, {"status_counts", sc}, {"backend_counts", bc}, {"slow", slow},
          {"latency_ms_hist", hist}});
  } else {
    nlohmann::json statuses = nlohmann::json::array(), backends = nlohmann::json::array(),
                   bodies = nlohmann::json::array();
    for (const auto& r : results) {
      statuses.push_back(r.status);
      backends.push_back(r.backend);
      bodies.push_back(r.body);
    }
    nlohmann::json out = {{"ok", ok}, {"statuses", statuses}, {"backends", backends}};
    if (show_body) out["bodies"] = bodies;
    emit(out);
  }
  return ok ? 0 : 1;
}

}  // namespace warren::podtool
