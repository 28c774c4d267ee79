// Catch2's implementation without a main, for programs that link the e2e
// harness (it reports through Catch macros) but are not test runners.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
