// Catch2's implementation, compiled once for every test program (it is the
// slowest translation unit of the tree). Runners with their own main
// (netns_main.cpp, bpf_main.cpp) and programs that use the harness's Catch
// macros without being test runners (warren-netns, warren-demo) link it as
// warren_catch_impl; the plain unit and e2e runners link warren_catch_main.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "catch_run.h"

int warren_catch_run(int argc, char** argv) { return Catch::Session().run(argc, argv); }
