// An EnrollServer on its own loop thread, and a temporary directory, for the
// cni unit tests.
#pragma once

#include <uv.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "enroll_server.h"

namespace warren::cni::testing {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string tmpl = "/tmp/warren-cni-XXXXXX";  // short: sun_path is 108 bytes
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

class ServerThread {
 public:
  // The handler runs on the loop thread; requests are recorded before it runs.
  ServerThread(std::string path, EnrollServer::Handler handler, uint64_t idle_timeout_ms = 0)
      : handler_(std::move(handler)) {
    uv_loop_init(&loop_);
    uv_async_init(&loop_, &stop_, [](uv_async_t* a) {
      auto* self = static_cast<ServerThread*>(a->data);
      self->server_->close();
      uv_close(reinterpret_cast<uv_handle_t*>(a), nullptr);
    });
    stop_.data = this;
    server_ =
        std::make_unique<EnrollServer>(&loop_, std::move(path), [this](const EnrollRequest& r) {
          {
            std::lock_guard<std::mutex> lk(mu_);
            seen_.push_back(r);
          }
          return handler_ ? handler_(r) : Result<void>();
        });
    if (idle_timeout_ms) server_->set_idle_timeout_ms(idle_timeout_ms);
    start_result_ = server_->start();
    thread_ = std::thread([this] { uv_run(&loop_, UV_RUN_DEFAULT); });
  }
  ~ServerThread() {
    uv_async_send(&stop_);
    thread_.join();
    server_.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);  // close callbacks queued by the destructor
    uv_loop_close(&loop_);
  }

  const Result<void>& start_result() const { return start_result_; }
  std::vector<EnrollRequest> seen() {
    std::lock_guard<std::mutex> lk(mu_);
    return seen_;
  }

 private:
  uv_loop_t loop_{};
  uv_async_t stop_{};
  EnrollServer::Handler handler_;
  std::unique_ptr<EnrollServer> server_;
  Result<void> start_result_;
  std::mutex mu_;
  std::vector<EnrollRequest> seen_;
  std::thread thread_;
};

inline EnrollRequest sample_request(Op op = Op::kAdd) {
  EnrollRequest r;
  r.op = op;
  r.pod_namespace = "shop";
  r.name = "sleep-1";
  r.uid = "0b7a4b32-6f8e-4c1e-9d7e-2f3a1d2c4b5a";
  r.netns = "/var/run/netns/cni-1234";
  r.container_id = "f00dcafe";
  r.ips = {*IpAddr::parse("10.1.0.2"), *IpAddr::parse("fd00::2")};
  return r;
}

}  // namespace warren::cni::testing
