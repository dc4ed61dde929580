#!/usr/bin/env bash
# Short libFuzzer runs of every loader (rwkv.cpp + native via fuzz_model, .pth, safetensors).
# usage: scripts/fuzz.sh [seconds-per-target]   (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-30}
command -v clang++ >/dev/null || { echo "fuzz: clang++ not installed, skipping"; exit 0; }
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRWKVL_FUZZ=ON \
  -DRWKVL_BUILD_TESTS=OFF -DRWKVL_BUILD_BENCH=OFF > build-fuzz.log 2>&1 || { cat build-fuzz.log; exit 1; }
# The fuzz build holds only the fuzz targets, the seed-corpus writer and the library layers under them.
cmake --build build-fuzz -j"$(nproc)" >> build-fuzz.log 2>&1 || { tail -50 build-fuzz.log; exit 1; }

# The seed corpus: valid files of every format made from the tiny reference models (rwkv.cpp, native,
# .pth, safetensors) and small synthesized models, each loaded back (tests/fuzz/seed_corpus.cpp).
# Without ../shared it fails unless RWKVL_ALLOW_NO_SHARED=1 (then synthesized seeds only, exit 77).
SEEDS=build-fuzz/seeds
rm -rf "$SEEDS"
rc=0
build-fuzz/tests/fuzz/seed_corpus ../shared "$SEEDS" > build-fuzz/seed_corpus.log 2>&1 || rc=$?
if [[ $rc -ne 0 && $rc -ne 77 ]]; then
  cat build-fuzz/seed_corpus.log
  exit 1
fi
tail -1 build-fuzz/seed_corpus.log
status=0
for t in fuzz_model fuzz_pth fuzz_safetensors; do
  [[ -x build-fuzz/tests/fuzz/$t ]] || continue
  dir=$SEEDS/model
  [[ $t == fuzz_pth ]] && dir=$SEEDS/pth
  [[ $t == fuzz_safetensors ]] && dir=$SEEDS/safetensors
  echo "fuzz: $t for ${SECS}s"
  if ! build-fuzz/tests/fuzz/$t -max_total_time="$SECS" -max_len=4000000 -rss_limit_mb=4096 -print_final_stats=1 \
      "$dir" > "build-fuzz/$t.log" 2>&1; then
    tail -40 "build-fuzz/$t.log"
    status=1
  else
    grep -E "stat::number_of_executed_units|Done" "build-fuzz/$t.log" | head -2 || true
  fi
done
exit $status
