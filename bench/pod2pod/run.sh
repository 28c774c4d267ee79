#!/usr/bin/env bash
# Runs the pod-to-pod benchmark (see bench/README.md). Needs root; python3 stdlib only.
set -euo pipefail
exec python3 "$(dirname "$0")/run.py" "$@"
