#!/usr/bin/env bash
# Installs the Debian packages rwkv-lite needs to build and test (idempotent: apt runs only when
# something is missing). Run as root or with sudo available.
set -euo pipefail

PKGS=(build-essential cmake pkg-config python3 libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev libpcre2-dev
      libeigen3-dev libcpp-httplib-dev clang libclang-rt-14-dev)
# Optional extras: cross toolchain + emulator for the aarch64 tests.
if [[ "${RWKVL_WITH_AARCH64:-1}" == "1" ]]; then
  PKGS+=(g++-aarch64-linux-gnu qemu-user)
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
