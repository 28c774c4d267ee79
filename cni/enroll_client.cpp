#include "enroll_client.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>

namespace warren::cni {

namespace {

using Clock = std::chrono::steady_clock;

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Waits for `events`; false with errno=ETIMEDOUT past the deadline.
bool wait_for(int fd, short events, Clock::time_point deadline) {
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      errno = ETIMEDOUT;
      return false;
    }
    pollfd p{fd, events, 0};
    int rc = poll(&p, 1, static_cast<int>(left.count()));
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) return false;
  }
}

Error io_error(const std::string& what, const std::string& path) {
  if (errno == ETIMEDOUT) return make_error(Errc::kTimeout, what + " " + path + ": timed out");
  return Error::sys(what + " " + path);
}

}  // namespace

Result<EnrollReply> enroll_call(const std::string& path, const EnrollRequest& req, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  sockaddr_un sa{};
  if (path.empty() || path.size() >= sizeof sa.sun_path) {
    return make_error(Errc::kInvalidArgument, "bad socket path: " + path);
  }
  sa.sun_family = AF_UNIX;
  path.copy(sa.sun_path, sizeof sa.sun_path - 1);

  Fd s{socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)};
  if (s.fd < 0) return Error::sys("socket");
  if (connect(s.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    int e = errno;
    if (e == ENOENT || e == ECONNREFUSED || e == ENOTDIR) {
      Error err = Error::sys("connect " + path, e);
      err.code = Errc::kUnavailable;
      return err;
    }
    // A full backlog: a non-blocking Unix connect fails with EAGAIN; retry
    // until the deadline.
    while (e == EAGAIN) {
      if (Clock::now() >= deadline) {
        return make_error(Errc::kTimeout, "connect " + path + ": timed out (backlog full)");
      }
      usleep(10'000);
      e = connect(s.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 ? 0 : errno;
    }
    if (e != 0 && e != EINPROGRESS) return Error::sys("connect " + path, e);
  }

  std::string out = encode_request(req);
  size_t off = 0;
  while (off < out.size()) {
    ssize_t n = send(s.fd, out.data() + off, out.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN) {
      if (!wait_for(s.fd, POLLOUT, deadline)) return io_error("send to", path);
    } else {
      return io_error("send to", path);
    }
  }

  std::string in;
  char buf[4096];
  while (true) {
    size_t nl = in.find('\n');
    if (nl != std::string::npos) {
      auto r = decode_reply(std::string_view(in).substr(0, nl));
      if (!r) return make_error(Errc::kProtocol, "reply from " + path + ": " + r.error().message);
      return r;
    }
    if (in.size() > kMaxLineBytes) {
      return make_error(Errc::kProtocol, "reply from " + path + " longer than " +
                                             std::to_string(kMaxLineBytes) + " bytes");
    }
    ssize_t n = recv(s.fd, buf, sizeof buf, 0);
    if (n > 0) {
      in.append(buf, static_cast<size_t>(n));
    } else if (n == 0) {
      return make_error(Errc::kUnavailable, "node closed " + path + " before replying");
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN) {
      if (!wait_for(s.fd, POLLIN, deadline)) return io_error("receive from", path);
    } else {
      return io_error("receive from", path);
    }
  }
}

}  // namespace warren::cni
