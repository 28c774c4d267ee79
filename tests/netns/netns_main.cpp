// Catch2 main for the netns tests: without root (and CAP_NET_ADMIN,
// CAP_SYS_ADMIN) every test exits kSkipReturnCode, which ctest reports as
// skipped (SKIP_RETURN_CODE), never as passed.
#include "catch_run.h"
#include <iostream>

#include "harness.h"

int main(int argc, char** argv) {
  using namespace warren::netns;
  if (!have_root()) {
    std::cerr << "netns tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN): skipped\n";
    return kSkipReturnCode;
  }
  if (!ensure_bpffs()) std::cerr << "warning: /sys/fs/bpf is not a bpf filesystem\n";
  int rc = warren_catch_run(argc, argv);
  // 77 failed assertions must not read as "skipped".
  return rc == kSkipReturnCode ? 1 : rc;
}
