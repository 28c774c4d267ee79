#!/usr/bin/env bash
# Runs the L7 benchmark (see bench/README.md). Needs root (nice, chrt); python3 stdlib only.
set -euo pipefail
exec python3 "$(dirname "$0")/run.py" "$@"
