#!/usr/bin/env bash
# The whole test suite: Release build + ctest, ASan/UBSan build + ctest, the aarch64 build under
# qemu-user, and short libFuzzer runs of the loaders. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
JOBS=$(nproc)

echo "== Release build + tests"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DRWKVL_WERROR=ON
cmake --build build -j"$JOBS"
ctest --test-dir build --output-on-failure -j"$JOBS"

echo "== ASan + UBSan build + tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRWKVL_SANITIZE=ON -DRWKVL_BUILD_BENCH=OFF
cmake --build build-asan -j"$JOBS"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j"$JOBS"

if [[ -f scripts/test-aarch64.sh && "${RWKVL_SKIP_AARCH64:-0}" != "1" ]]; then
  echo "== aarch64 (cross build, tests under qemu-user)"
  bash scripts/test-aarch64.sh
fi

if [[ -f scripts/fuzz.sh && "${RWKVL_SKIP_FUZZ:-0}" != "1" ]]; then
  echo "== libFuzzer (short runs)"
  bash scripts/fuzz.sh 20
fi
echo "== all tests passed"
