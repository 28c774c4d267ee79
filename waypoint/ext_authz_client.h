// One ext-authz check over plain HTTP/1.1 (Envoy's ext_authz HTTP service):
// connect, send the check request built by ext_authz.h, read the response,
// report once. A timeout or a connection error reports `err`; destroying the
// call cancels it (no report).
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "headers.h"
#include "warren/ip.h"

namespace warren::waypoint {

class ExtAuthzCall {
 public:
  using Done = std::function<void(int status, Headers headers, std::string body, const std::string& err)>;
  static std::unique_ptr<ExtAuthzCall> start(uv_loop_t* loop, const SockAddr& addr, std::string request,
                                             std::chrono::milliseconds timeout, Done done);
  ~ExtAuthzCall();

  struct Impl;

 private:
  explicit ExtAuthzCall(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

}  // namespace warren::waypoint
