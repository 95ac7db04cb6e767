#!/usr/bin/env bash
# Installs the Debian packages Tandem builds and tests with. Idempotent: packages already
# present are skipped, and apt-get runs only when something is missing.
# haproxy is the load balancer of the loopback fleet (deploy/, tests/integration/fleet_test.cc).
# `--bench` also installs what the benchmarks' plots need (gnuplot); CI does not need it.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev
  libicu-dev libspdlog-dev libfmt-dev
  libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
  prometheus-cpp-dev libyaml-cpp-dev openssl libssl-dev curl libzstd-dev
  haproxy
)
if [ "${1:-}" = "--bench" ]; then
  PACKAGES+=(gnuplot-nox python3)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install_deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y --no-install-recommends "${missing[@]}"; then
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
