// EnrollServer on a real loop (own thread) and a temporary socket.
#include "enroll_server.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <fstream>
#include <thread>

#include "enroll_client.h"
#include "test_server.h"

using namespace warren;
using namespace warren::cni;
using namespace warren::cni::testing;
namespace fs = std::filesystem;

namespace {

int connect_raw(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  path.copy(sa.sun_path, sizeof sa.sun_path - 1);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  return fd;
}

void send_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return;  // the server may close early on an overlong line
    off += static_cast<size_t>(n);
  }
}

// Reads until EOF or `lines` newlines, with a 5 s bound.
std::string read_lines(int fd, int lines, bool* eof = nullptr) {
  std::string in;
  char buf[4096];
  while (std::count(in.begin(), in.end(), '\n') < lines) {
    pollfd p{fd, POLLIN, 0};
    REQUIRE(poll(&p, 1, 5000) == 1);
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      if (eof) *eof = true;
      break;
    }
    in.append(buf, static_cast<size_t>(n));
  }
  return in;
}

bool closed_by_peer(int fd) {
  char c;
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 5000) != 1) return false;
  return recv(fd, &c, 1, 0) == 0;
}

}  // namespace

TEST_CASE("enroll server answers a request with the handler's result", "[cni][server]") {
  TempDir dir;
  std::string path = (dir.path / "run" / "cni.sock").string();  // parent created
  ServerThread srv(path, [](const EnrollRequest& r) -> Result<void> {
    if (r.name == "unknown") return make_error(Errc::kNotFound, "pod shop/unknown not found");
    return {};
  });
  REQUIRE(srv.start_result().ok());

  struct stat st {};
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 0777) == 0600);

  auto req = sample_request();
  auto reply = enroll_call(path, req, 5000);
  REQUIRE(reply.ok());
  CHECK(reply->ok);
  REQUIRE(srv.seen().size() == 1);
  CHECK(srv.seen()[0] == req);

  req.name = "unknown";
  reply = enroll_call(path, req, 5000);
  REQUIRE(reply.ok());
  CHECK_FALSE(reply->ok);
  CHECK(reply->error == "pod shop/unknown not found");
}

TEST_CASE("enroll server: bad JSON gets an error reply and the connection closes",
          "[cni][server]") {
  TempDir dir;
  std::string path = (dir.path / "cni.sock").string();
  ServerThread srv(path, nullptr);
  REQUIRE(srv.start_result().ok());

  int fd = connect_raw(path);
  send_all(fd, "{not json\n" + encode_request(sample_request()));
  std::string got = read_lines(fd, 1);
  auto reply = decode_reply(got);
  REQUIRE(reply.ok());
  CHECK_FALSE(reply->ok);
  CHECK(reply->error == "request: bad JSON");
  CHECK(closed_by_peer(fd));
  close(fd);
  CHECK(srv.seen().empty());  // the request after the bad line was not served

  fd = connect_raw(path);
  auto bad = sample_request();
  bad.pod_namespace = "Shop";
  send_all(fd, encode_request(bad));
  reply = decode_reply(read_lines(fd, 1));
  REQUIRE(reply.ok());
  CHECK(reply->error.rfind("namespace:", 0) == 0);
  close(fd);
}

TEST_CASE("enroll server: an overlong line is refused", "[cni][server]") {
  TempDir dir;
  std::string path = (dir.path / "cni.sock").string();
  ServerThread srv(path, nullptr);
  REQUIRE(srv.start_result().ok());
  int fd = connect_raw(path);
  send_all(fd, std::string(kMaxLineBytes + 10, 'x'));
  auto reply = decode_reply(read_lines(fd, 1));
  REQUIRE(reply.ok());
  CHECK_FALSE(reply->ok);
  CHECK(reply->error.find("longer than") != std::string::npos);
  CHECK(closed_by_peer(fd));
  close(fd);
}

TEST_CASE("enroll server serves several clients at once, several requests each", "[cni][server]") {
  TempDir dir;
  std::string path = (dir.path / "cni.sock").string();
  ServerThread srv(path, nullptr);
  REQUIRE(srv.start_result().ok());

  // Five connections open together; each sends half a line first, so all
  // are mid-request at the same time.
  std::vector<int> fds;
  std::vector<std::string> lines;
  for (int i = 0; i < 5; ++i) {
    auto r = sample_request();
    r.name = "pod-" + std::to_string(i);
    lines.push_back(encode_request(r));
    fds.push_back(connect_raw(path));
    send_all(fds.back(), lines.back().substr(0, 20));
  }
  for (int i = 4; i >= 0; --i) send_all(fds[i], lines[i].substr(20) + lines[i]);
  for (int fd : fds) {
    std::string got = read_lines(fd, 2);
    CHECK(got == "{\"ok\":true}\n{\"ok\":true}\n");
    close(fd);
  }
  CHECK(srv.seen().size() == 10);

  // And from threads through the client.
  std::vector<std::thread> ts;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    ts.emplace_back([&] {
      auto r = enroll_call(path, sample_request(Op::kCheck), 5000);
      if (r.ok() && r->ok) ++ok;
    });
  }
  for (auto& t : ts) t.join();
  CHECK(ok == 8);
}

TEST_CASE("enroll server closes idle clients", "[cni][server]") {
  TempDir dir;
  std::string path = (dir.path / "cni.sock").string();
  ServerThread srv(path, nullptr, /*idle_timeout_ms=*/200);
  REQUIRE(srv.start_result().ok());
  int fd = connect_raw(path);
  send_all(fd, "{\"op\":");
  CHECK(closed_by_peer(fd));  // within about 1.2 s (sweep once a second)
  close(fd);
}

TEST_CASE("enroll server start: stale socket, live server, not a socket", "[cni][server]") {
  TempDir dir;
  std::string path = (dir.path / "cni.sock").string();

  SECTION("a stale socket file is replaced and removed on close") {
    {
      int fd = socket(AF_UNIX, SOCK_STREAM, 0);
      sockaddr_un sa{};
      sa.sun_family = AF_UNIX;
      path.copy(sa.sun_path, sizeof sa.sun_path - 1);
      REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
      close(fd);  // the file stays, nobody listens
    }
    REQUIRE(fs::exists(path));
    {
      ServerThread srv(path, nullptr);
      REQUIRE(srv.start_result().ok());
      auto r = enroll_call(path, sample_request(), 5000);
      REQUIRE(r.ok());
      CHECK(r->ok);
    }
    CHECK_FALSE(fs::exists(path));
  }
  SECTION("a live server is not taken over") {
    ServerThread first(path, nullptr);
    REQUIRE(first.start_result().ok());
    ServerThread second(path, nullptr);
    REQUIRE_FALSE(second.start_result().ok());
    CHECK(second.start_result().error().message.find("another server") != std::string::npos);
    auto r = enroll_call(path, sample_request(), 5000);
    REQUIRE(r.ok());
    CHECK(first.seen().size() == 1);
  }
  SECTION("a regular file is left alone") {
    std::ofstream(path) << "keep me";
    ServerThread srv(path, nullptr);
    REQUIRE_FALSE(srv.start_result().ok());
    CHECK(srv.start_result().error().message.find("not a socket") != std::string::npos);
    CHECK(fs::file_size(path) == 7);
  }
  SECTION("a path too long for sun_path") {
    ServerThread srv(dir.path.string() + "/" + std::string(120, 'a'), nullptr);
    REQUIRE_FALSE(srv.start_result().ok());
  }
}

TEST_CASE("enroll client: no server, and a server that never answers", "[cni][server]") {
  TempDir dir;
  std::string path = (dir.path / "cni.sock").string();
  auto r = enroll_call(path, sample_request(), 1000);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::kUnavailable);

  int l = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  path.copy(sa.sun_path, sizeof sa.sun_path - 1);
  REQUIRE(bind(l, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  REQUIRE(listen(l, 4) == 0);  // accepts in the kernel, never replies
  auto t0 = std::chrono::steady_clock::now();
  r = enroll_call(path, sample_request(), 300);
  auto took = std::chrono::steady_clock::now() - t0;
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::kTimeout);
  CHECK(took < std::chrono::seconds(2));
  close(l);
}
