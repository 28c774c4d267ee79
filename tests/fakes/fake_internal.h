// Internals of the fake API server shared by its .cpp files: the server
// state owned by its thread, connections (TLS + HTTP/1.1) and watch streams.
// Everything here runs on the server thread.
#pragma once

#include <http_parser.h>
#include <uv.h>

#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "fake_apiserver.h"
#include "fake_store.h"
#include "fake_tls.h"
#include "warren/tls_session.h"

namespace warren::fakes {

struct Conn;

struct HttpReq {
  std::string method, path, query, body;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string header(const std::string& n) const {
    auto it = headers.find(n);
    return it == headers.end() ? std::string() : it->second;
  }
};

std::string query_param(const std::string& query, const std::string& name);

// One watch stream on a connection.
struct Watch {
  Conn* conn = nullptr;
  const ResourceType* type = nullptr;
  std::string ns;
  bool bookmarks = false;
  std::deque<std::string> pending;  // event lines held back by the event delay
  bool end_after_pending = false;
  uv_timer_t* delay_timer = nullptr;    // heap: closed asynchronously
  uv_timer_t* timeout_timer = nullptr;  // heap
  ~Watch();
};

struct Conn {
  FakeApiServer::Impl* srv = nullptr;
  uv_tcp_t tcp;
  std::unique_ptr<tls::Session> tls;
  http_parser parser;
  // The request being parsed.
  HttpReq req;
  std::string url, field, value;
  bool in_value = false;
  bool client_cert_ok = false;
  std::unique_ptr<Watch> watch;
  bool closed = false;

  void on_data(const char* data, size_t n);
  void parse(const char* data, size_t n);
  void send(std::string data);
  void flush_tls();
  void respond(int code, const nlohmann::json& body);
  void close();
};

struct FakeApiServer::Impl {
  FakeApiServerOptions opts;
  FakePki pki;
  SSL_CTX* ssl_ctx = nullptr;
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_async_t wake;
  uv_timer_t bookmark_timer;
  std::thread thread;
  uint16_t port = 0;

  std::mutex mu;
  std::deque<std::function<void()>> tasks;

  Store store;
  std::set<std::string> tokens;
  std::map<std::string, nlohmann::json> reviews;
  std::set<Conn*> conns;
  std::set<Watch*> watches;
  std::map<std::string, int> fail_next;  // kind -> HTTP status for its next watch
  std::chrono::milliseconds event_delay{0};
  bool expired_as_event = false;
  struct Injected {
    std::string method, path;
    int status;
    int times;
  };
  std::vector<Injected> injected;
  std::vector<RecordedRequest> requests;
  std::vector<StatusPatch> patches;

  explicit Impl(FakeApiServerOptions o) : opts(std::move(o)), store(opts.first_resource_version) {}

  // Runs f on the server thread and waits for its result.
  template <typename F>
  auto run(F&& f) -> decltype(f()) {
    using R = decltype(f());
    std::packaged_task<R()> task(std::forward<F>(f));
    auto fut = task.get_future();
    {
      std::lock_guard<std::mutex> l(mu);
      tasks.push_back([&task] { task(); });
    }
    uv_async_send(&wake);
    return fut.get();
  }

  void handle(Conn* c, HttpReq& req);  // fake_routes.cpp
  void on_store_event(const ResourceType& t, const WatchEvent& ev);
  void start_watch(Conn* c, const ResourceType& t, const std::string& ns, const HttpReq& req,
                   RecordedRequest& rec);
  void enqueue(Watch* w, std::string line);
  void write_event(Watch* w, const std::string& line);
  void end_watch(Watch* w);  // clean end: the final chunk, the connection stays open
  void for_watches(const std::string& kind, const std::function<void(Watch*)>& fn);
  nlohmann::json bookmark(const ResourceType& t) const;
  void shutdown();
};

}  // namespace warren::fakes
