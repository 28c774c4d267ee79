#!/usr/bin/env bash
# The README's test command: installs what is needed, builds, runs the whole
# suite with ctest (unit, e2e on loopback, fuzz corpora, and the root-only
# netns tests when run as root), then the same under AddressSanitizer +
# UndefinedBehaviorSanitizer. WARREN_SKIP_ASAN=1 skips the second pass.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/warren-ccache}"

run_preset() {
  local preset="$1"
  echo "=== build ($preset) ==="
  ./scripts/build.sh "$preset"
  echo "=== test ($preset) ==="
  (cd "build/$preset" && ctest --output-on-failure --timeout 600 -j"$(nproc)")
}

status=0
run_preset dev || status=1
if [ "${WARREN_SKIP_ASAN:-0}" != "1" ]; then
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  run_preset asan || status=1
fi
exit $status
