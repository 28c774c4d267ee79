// Driving a test's libuv loop until something holds, with a deadline (never
// a fixed sleep), and a certificate request through the push client.
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include "warren/controller_client.h"
#include "warren/csr.h"

namespace warren::test {

// Runs `loop` until cond() holds or `ms` pass; returns cond().
inline bool spin(uv_loop_t* loop, const std::function<bool()>& cond, int ms = 10000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    uv_run(loop, UV_RUN_NOWAIT);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// A CSR for `id` (fresh P-256 key) through `c`, run until answered: the chain
// PEM or the refusal (an error "no answer" when none came in time).
inline Result<std::string> ask_certificate(uv_loop_t* loop, push::ControllerClient& c, const std::string& id) {
  auto key = certs::generate_p256_key();
  if (!key) return key.error();
  auto csr = certs::make_csr_pem(key->get(), id);
  if (!csr) return csr.error();
  std::optional<Result<std::string>> got;
  c.request_certificate(id, *csr, [&](Result<std::string> r) { got = std::move(r); });
  if (!spin(loop, [&] { return got.has_value(); })) return make_error(Errc::kUnavailable, "no answer");
  return std::move(*got);
}

}  // namespace warren::test
