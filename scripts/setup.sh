#!/usr/bin/env bash
# Installs every build, test, demo and benchmark dependency from Debian 12's
# packages. Idempotent; needs root (or sudo).
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build ccache pkg-config git clang lld
  libssl-dev libnghttp2-dev libuv1-dev nlohmann-json3-dev libyaml-cpp-dev
  libspdlog-dev libfmt-dev libcli11-dev libhttp-parser-dev libre2-dev
  catch2 libbenchmark-dev libgoogle-perftools-dev
  libbpf-dev linux-libc-dev bpftool libcurl4-openssl-dev
  python3 curl openssl iproute2 procps psmisc util-linux tcpdump iputils-ping
  prometheus nghttp2-client
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # policy-rc.d keeps package post-install scripts from starting services
  # (prometheus, nginx ...) on this machine; we only need their binaries.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all dependencies present"
fi
