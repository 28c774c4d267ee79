// Catch2 main for the BPF tests: they load programs, make cgroups and
// network namespaces, so without root every test exits 77 (ctest: skipped).
#include "catch_run.h"
#include <unistd.h>

#include <iostream>

int main(int argc, char** argv) {
  if (::geteuid() != 0) {
    std::cerr << "bpf tests need root: skipped\n";
    return 77;
  }
  int rc = warren_catch_run(argc, argv);
  return rc == 77 ? 1 : rc;  // 77 failed assertions must not read as "skipped"
}
