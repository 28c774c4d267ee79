// Catch2 main for the BPF tests: they load programs, make cgroups and
// network namespaces, so without root every test exits 77 (ctest: skipped).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <unistd.h>

#include <iostream>

int main(int argc, char** argv) {
  if (::geteuid() != 0) {
    std::cerr << "bpf tests need root: skipped\n";
    return 77;
  }
  int rc = Catch::Session().run(argc, argv);
  return rc == 77 ? 1 : rc;  // 77 failed assertions must not read as "skipped"
}
