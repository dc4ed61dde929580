#!/usr/bin/env bash
# Installs the Debian packages rwkv-lite needs to build and test (idempotent: apt runs only when
# something is missing). Run as root or with sudo available.
#   --test   also the test-only clients: Node.js + npm (Debian's, unless a node is already installed) and the
#            npm packages of tests/node (npm ci: the openai client, autocannon), python3-pytest and what
#            `pip install bindings/python` needs offline (pip, setuptools, wheel), NumPy.
set -euo pipefail

PKGS=(build-essential cmake pkg-config python3 libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev libpcre2-dev
      libeigen3-dev libcpp-httplib-dev clang libclang-rt-14-dev)
# Optional extras: cross toolchain + emulator for the aarch64 tests.
if [[ "${RWKVL_WITH_AARCH64:-1}" == "1" ]]; then
  PKGS+=(g++-aarch64-linux-gnu qemu-user)
fi

WITH_TEST=0
[[ "${1:-}" == "--test" ]] && WITH_TEST=1
if ((WITH_TEST)); then
  PKGS+=(python3-pytest python3-numpy python3-pip python3-setuptools python3-wheel)
  command -v node >/dev/null && command -v npm >/dev/null || PKGS+=(nodejs npm)
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The npm packages of the client tests (tests/node/package-lock.json), into tests/node/node_modules.
if ((WITH_TEST)); then
  NODE_DIR="$(cd "$(dirname "$0")/.." && pwd)/tests/node"
  if [[ ! -f "$NODE_DIR/node_modules/.package-lock.json" || "$NODE_DIR/package-lock.json" -nt "$NODE_DIR/node_modules/.package-lock.json" ]]; then
    echo "install-deps: npm ci in tests/node"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
