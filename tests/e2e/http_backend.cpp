#include "http_backend.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>

namespace warren::e2e {

namespace {
std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string find(const std::vector<std::pair<std::string, std::string>>& h, const std::string& n) {
  for (const auto& [k, v] : h)
    if (lower(k) == n) return v;
  return "";
}

// Splits a head into start line and lower-cased header fields.
void parse_head(const std::string& head, std::string& start,
                std::vector<std::pair<std::string, std::string>>& out) {
  size_t pos = head.find("\r\n");
  start = head.substr(0, pos);
  while (pos != std::string::npos && pos + 2 < head.size()) {
    size_t next = head.find("\r\n", pos + 2);
    std::string line = head.substr(pos + 2, next == std::string::npos ? std::string::npos : next - pos - 2);
    pos = next;
    if (line.empty()) break;
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string v = line.substr(colon + 1);
    v.erase(0, v.find_first_not_of(" \t"));
    v.erase(v.find_last_not_of(" \t") + 1);
    out.push_back({lower(line.substr(0, colon)), v});
  }
}
}  // namespace

std::string HttpReq::header(const std::string& n) const { return find(headers, n); }
std::string HttpResp::header(const std::string& n) const { return find(headers, n); }

ThreadedServer::ThreadedServer(const std::string& ip, uint16_t port, const char* what)
    : listen_fd_(tcp_listen(ip, port)) {
  if (!listen_fd_)
    throw std::runtime_error(std::string(what) + ": cannot listen on " + ip + ":" + std::to_string(port));
}

ThreadedServer::~ThreadedServer() { stop(); }

void ThreadedServer::start() { thread_ = std::thread([this] { loop(); }); }

void ThreadedServer::stop() {
  if (stop_.exchange(true)) return;
  ::shutdown(listen_fd_.get(), SHUT_RDWR);
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard<std::mutex> g(mu_);
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
  }
  for (auto& t : workers_) t.join();
}

void ThreadedServer::loop() {
  while (!stop_) {
    pollfd p{listen_fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    int fd = ::accept(listen_fd_.get(), nullptr, nullptr);
    if (fd < 0) continue;
    ++accepted_;
    std::lock_guard<std::mutex> g(mu_);
    fds_.push_back(fd);
    workers_.emplace_back([this, fd] { serve(fd); });
  }
}

void ThreadedServer::finish(int fd) {
  {
    std::lock_guard<std::mutex> g(mu_);
    fds_.erase(std::remove(fds_.begin(), fds_.end(), fd), fds_.end());
  }
  ::close(fd);
}

HttpBackend::HttpBackend(const std::string& ip, uint16_t port, std::string name, Handler h)
    : ThreadedServer(ip, port, "HttpBackend"), name_(std::move(name)), handler_(std::move(h)) {
  start();
}

HttpBackend::~HttpBackend() { stop(); }

std::vector<HttpReq> HttpBackend::seen() {
  std::lock_guard<std::mutex> g(mu_);
  return seen_;
}

void HttpBackend::serve(int fd) {
  std::string buf;
  char tmp[16384];
  auto more = [&]() {
    ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf.append(tmp, static_cast<size_t>(n));
    return true;
  };
  while (!stopping()) {
    size_t end;
    while ((end = buf.find("\r\n\r\n")) == std::string::npos)
      if (!more()) goto done;
    {
      HttpReq req;
      std::string start;
      parse_head(buf.substr(0, end + 2), start, req.headers);
      buf.erase(0, end + 4);
      auto sp1 = start.find(' '), sp2 = start.rfind(' ');
      req.method = start.substr(0, sp1);
      req.target = start.substr(sp1 + 1, sp2 - sp1 - 1);
      if (std::string cl = req.header("content-length"); !cl.empty()) {
        size_t n = std::stoul(cl);
        while (buf.size() < n)
          if (!more()) goto done;
        req.body = buf.substr(0, n);
        buf.erase(0, n);
      } else if (lower(req.header("transfer-encoding")) == "chunked") {
        for (;;) {
          size_t le;
          while ((le = buf.find("\r\n")) == std::string::npos)
            if (!more()) goto done;
          size_t n = std::stoul(buf.substr(0, le), nullptr, 16);
          buf.erase(0, le + 2);
          if (n == 0) {
            while ((le = buf.find("\r\n")) == std::string::npos)
              if (!more()) goto done;
            buf.erase(0, le + 2);  // no trailers expected
            break;
          }
          while (buf.size() < n + 2)
            if (!more()) goto done;
          req.body += buf.substr(0, n);
          buf.erase(0, n + 2);
        }
      }
      ++requests_;
      {
        std::lock_guard<std::mutex> g(mu_);
        seen_.push_back(req);
      }
      HttpResp r;
      if (handler_) r = handler_(req);
      else r.body = name_ + " " + req.method + " " + req.target + "\n";
      if (r.delay.count()) std::this_thread::sleep_for(r.delay);
      if (r.reset) {
        linger l{1, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        goto done;
      }
      bool close = lower(req.header("connection")) == "close";
      std::string out = "HTTP/1.1 " + std::to_string(r.status) + " X\r\nx-backend: " + name_ + "\r\n";
      for (auto& [k, v] : r.headers) out += k + ": " + v + "\r\n";
      out += "content-length: " + std::to_string(r.body.size()) + "\r\n";
      if (close) out += "connection: close\r\n";
      out += "\r\n";
      if (req.method != "HEAD") out += r.body;
      if (!send_all(fd, out.data(), out.size()) || close) goto done;
    }
  }
done:
  finish(fd);
}

bool HttpClientConn::send_raw(const std::string& bytes) { return send_all(fd_.get(), bytes.data(), bytes.size()); }

bool HttpClientConn::fill(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return false;
  pollfd p{fd_.get(), POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
  char tmp[16384];
  ssize_t n = ::recv(fd_.get(), tmp, sizeof tmp, 0);
  if (n <= 0) {
    closed_ = true;
    return false;
  }
  buf_.append(tmp, static_cast<size_t>(n));
  return true;
}

HttpResp HttpClientConn::read_response(bool head_request, std::chrono::milliseconds timeout) {
  HttpResp r;
  r.status = 0;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  size_t end;
  while ((end = buf_.find("\r\n\r\n")) == std::string::npos)
    if (!fill(deadline)) return r;
  std::string start;
  parse_head(buf_.substr(0, end + 2), start, r.headers);
  buf_.erase(0, end + 4);
  int status = std::atoi(start.substr(start.find(' ') + 1).c_str());
  if (head_request || status == 204 || status == 304 || status / 100 == 1) {
    r.status = status;
    return r;
  }
  if (std::string cl = r.header("content-length"); !cl.empty()) {
    size_t n = std::stoul(cl);
    while (buf_.size() < n)
      if (!fill(deadline)) return r;
    r.body = buf_.substr(0, n);
    buf_.erase(0, n);
  } else if (lower(r.header("transfer-encoding")) == "chunked") {
    for (;;) {
      size_t le;
      while ((le = buf_.find("\r\n")) == std::string::npos)
        if (!fill(deadline)) return r;
      size_t n = std::stoul(buf_.substr(0, le), nullptr, 16);
      buf_.erase(0, le + 2);
      if (n == 0) {
        for (;;) {  // trailer fields, then the empty line
          while ((le = buf_.find("\r\n")) == std::string::npos)
            if (!fill(deadline)) return r;
          bool empty = le == 0;
          buf_.erase(0, le + 2);
          if (empty) break;
        }
        break;
      }
      while (buf_.size() < n + 2)
        if (!fill(deadline)) return r;
      r.body += buf_.substr(0, n);
      buf_.erase(0, n + 2);
    }
  } else {
    while (fill(deadline)) {
    }
    r.body = std::move(buf_);
    buf_.clear();
  }
  r.status = status;
  return r;
}

HttpResp HttpClientConn::request(const std::string& method, const std::string& target,
                                 const std::vector<std::pair<std::string, std::string>>& headers,
                                 const std::string& body, std::chrono::milliseconds timeout) {
  std::string out = method + " " + target + " HTTP/1.1\r\n";
  bool host = false;
  for (auto& [k, v] : headers) {
    out += k + ": " + v + "\r\n";
    host |= lower(k) == "host";
  }
  if (!host) out += "host: echo\r\n";
  if (!body.empty() || method == "POST" || method == "PUT")
    out += "content-length: " + std::to_string(body.size()) + "\r\n";
  out += "\r\n" + body;
  if (!send_raw(out)) {
    HttpResp r;
    r.status = 0;
    return r;
  }
  return read_response(method == "HEAD", timeout);
}

}  // namespace warren::e2e
