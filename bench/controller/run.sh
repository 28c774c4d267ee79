#!/bin/sh
# Controller scale benchmark (issue 4): see run.py --help. Builds nothing:
#   cmake -S . -B build/benchrel -G Ninja -DCMAKE_BUILD_TYPE=Release
#   nice cmake --build build/benchrel --target warren-controller warren-node warrenctl warren-push-bench
exec python3 "$(dirname "$0")/run.py" "$@"
