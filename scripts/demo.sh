#!/usr/bin/env bash
# The README's demo command: installs what is needed, builds, and shows the
# mesh at work on this machine.
#
#   ./scripts/demo.sh             (root) warren-demo: warren-controller in local mode on
#                                 the manifests of examples/mesh, two simulated nodes
#                                 (network namespaces) with a warren-node each, and the
#                                 example application as pods: mTLS and identities, an
#                                 ALLOW policy, a DENY policy added as a file, a namespace
#                                 enrolled at run time, metrics, a waypoint (HTTP routing
#                                 and L7 policy), where to look next; then
#                                 the mesh keeps running until Ctrl-C
#                                 (tests/netns/demo_main.cpp, demo_tour.cpp)
#   --exit                        clean up and exit right after the tour
#   --keep                        the default now (accepted for old scripts)
#   ./scripts/demo.sh --loopback  no root needed: two warren-node processes on
#                                 loopback with a SOCKS5 entry and config files, no
#                                 controller (the first demo); --keep leaves it running
#
# WARREN_BUILD_DIR=DIR: build and run from that (configured) build directory
# instead of build/dev. Nothing touches the host's network configuration;
# everything is removed at the end, on failure and on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
KEEP=0
EXIT=0
LOOPBACK=0
for arg in "$@"; do
  case "$arg" in
    --keep) KEEP=1 ;;
    --exit) EXIT=1 ;;
    --loopback) LOOPBACK=1 ;;
    *) echo "usage: $0 [--exit] | --loopback [--keep]" >&2; exit 2 ;;
  esac
done

netns_demo() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "demo: the mesh demo builds network namespaces, cgroups and eBPF programs: run it as root"
    echo "      (sudo ./scripts/demo.sh), or ./scripts/demo.sh --loopback for the demo without root."
    exit 1
  fi
  ./scripts/setup.sh
  echo "== building (first time takes a few minutes) =="
  # WARREN_BUILD_DIR: an already configured build directory to use instead of build/dev.
  local build=$ROOT/build/dev
  if [ -n "${WARREN_BUILD_DIR:-}" ]; then
    build=$(cd "$WARREN_BUILD_DIR" && pwd)
    cmake --build "$build" --target warren-demo >/dev/null
  else
    ./scripts/build.sh dev warren-demo >/dev/null
  fi
  local args=()
  [ "$EXIT" = 1 ] && args+=(--exit)
  # warren-demo cleans up itself (also on failure, Ctrl-C and SIGTERM).
  local rc=0
  "$build/tests/netns/warren-demo" "${args[@]}" || rc=$?
  return "$rc"
}

loopback_demo() {
  ./scripts/setup.sh
  echo "== building (first time takes a few minutes) =="
  ./scripts/build.sh dev warren-node warrenctl >/dev/null
  BIN=$ROOT/build/dev

  # The demo uses fixed loopback addresses; refuse to start over another copy.
  busy=$(ss -Hltn 2>/dev/null | awk '{print $4}' | grep -E '^127\.0\.(0\.2|0\.3|20\.1):' || true)
  if [ -n "$busy" ]; then
    echo "demo: these loopback addresses are already in use (another demo still running?):"
    echo "$busy" | sed 's/^/  /'
    exit 1
  fi

  WORK=$(mktemp -d /tmp/warren-demo.XXXXXX)
  PIDS=()
  cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
  }
  trap cleanup EXIT INT TERM

  say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
  wait_ready() {
    for _ in $(seq 1 100); do
      curl -fs "http://$1/healthz/ready" >/dev/null 2>&1 && return 0
      sleep 0.1
    done
    echo "warren-node at $1 did not become ready; its log:"; cat "$2"; exit 1
  }

  cp examples/standalone/node-a.json examples/standalone/node-b.json "$WORK/"
  cd "$WORK"
  say "1. A development CA issues one SPIFFE certificate per service account"
  "$BIN/cli/warrenctl" dev-ca init --out certs
  "$BIN/cli/warrenctl" dev-ca issue-config --ca certs --config node-a.json

  say "2. Two warren-node processes: node-a (127.0.0.2) hosts sleep and intruder, node-b (127.0.0.3) hosts echo"
  "$BIN/nodeproxy/warren-node" -c node-a.json --access-log access-a.log >node-a.log 2>&1 &
  PIDS+=($!)
  "$BIN/nodeproxy/warren-node" -c node-b.json --access-log access-b.log >node-b.log 2>&1 &
  PIDS+=($!)
  python3 "$ROOT/examples/demo/echo_server.py" 127.0.20.1 8080 &
  PIDS+=($!)
  for _ in $(seq 1 50); do ss -Hltn | grep -q '127.0.20.1:8080' && break; sleep 0.1; done
  wait_ready 127.0.0.2:15021 node-a.log
  wait_ready 127.0.0.3:15021 node-b.log
  echo "  both nodes ready; node-b serves HBONE on 127.0.20.1:15008 with echo's certificate"

  say "3. sleep connects to the echo Service VIP 10.96.0.10:80 (exists only in the mesh config)"
  python3 "$ROOT/examples/demo/socks_client.py" 127.0.10.1 127.0.0.2:15080 10.96.0.10:80 "hello through the mesh" || true
  echo "  node-b's access log shows who called, as proven by the mTLS client certificate:"
  tail -n1 access-b.log | python3 -c 'import json,sys; e=json.loads(sys.stdin.read()); print("   ", e["src_identity"], "->", e["dst_identity"], "bytes", e["bytes_received"], "in /", e["bytes_sent"], "out")'

  say "4. intruder tries the same; the ALLOW policy 'echo-allow-sleep' only admits sa/sleep"
  python3 "$ROOT/examples/demo/socks_client.py" 127.0.10.2 127.0.0.2:15080 10.96.0.10:80 "let me in" || true
  grep -h 'refused stream' node-b.log | tail -n1 | sed 's/^/    node-b: /'

  say "5. An operator adds a DENY policy by editing node-b's config file; no restart"
  python3 - "$ROOT/examples/standalone/deny-policy.json" <<'PY'
import json, sys
cfg = json.load(open("node-b.json"))
cfg["policies"].append(json.load(open(sys.argv[1])))
json.dump(cfg, open("node-b.json.tmp", "w"), indent=2)
PY
  mv node-b.json.tmp node-b.json
  for _ in $(seq 1 50); do grep -q 'applied' node-b.log && break; sleep 0.1; done
  grep -h 'config version' node-b.log | tail -n1 | sed 's/^/    node-b: /'
  python3 "$ROOT/examples/demo/socks_client.py" 127.0.10.1 127.0.0.2:15080 10.96.0.10:80 "hello again" || true

  say "6. Istio-standard metrics on node-b (Prometheus format on :15020/metrics)"
  curl -s http://127.0.0.3:15020/metrics | grep -E '^istio_tcp_connections_opened_total' |
    sed -E 's/.*source_principal="([^"]*)".*destination_workload="([^"]*)".*response_flags="([^"]*)".*connection_security_policy="([^"]*)"\} (.*)/    opened=\5  from \1 to \2  flags=\3  security=\4/'
  curl -s http://127.0.0.3:15020/metrics | grep -E '^warren_connections_rejected_total' | sed 's/^/    /'

  say "Where to look next"
  if [ "$KEEP" = 1 ]; then
    cat <<TXT
  curl http://127.0.0.2:15000/config_dump      # node-a's config, certificates and pool
  curl http://127.0.0.3:15020/metrics          # everything node-b counts
  curl -X POST 'http://127.0.0.2:15000/logging?level=debug'
  files in $WORK: node-*.json (edit them live), node-*.log, access-*.log
TXT
    say "The mesh keeps running; press Ctrl-C to stop and clean up."
    wait
  else
    cat <<TXT
  ./scripts/demo.sh --loopback --keep leaves this mesh running, to curl its admin (:15000), metrics (:15020)
  and to edit node-*.json live. ARCHITECTURE.md explains the pieces; README.md lists the tests.
  Everything the demo started is stopped and its files removed now.
TXT
  fi
}

if [ "$LOOPBACK" = 1 ]; then
  loopback_demo
else
  netns_demo
fi
