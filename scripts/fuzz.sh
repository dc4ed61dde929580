#!/usr/bin/env bash
# Short libFuzzer runs of every loader (rwkv.cpp + native via fuzz_model, .pth, safetensors).
# usage: scripts/fuzz.sh [seconds-per-target]   (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-30}
command -v clang++ >/dev/null || { echo "fuzz: clang++ not installed, skipping"; exit 0; }
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRWKVL_FUZZ=ON \
  -DRWKVL_BUILD_TESTS=OFF -DRWKVL_BUILD_BENCH=OFF > build-fuzz.log 2>&1 || { cat build-fuzz.log; exit 1; }
cmake --build build-fuzz -j"$(nproc)" >> build-fuzz.log 2>&1 || { tail -50 build-fuzz.log; exit 1; }

SEEDS=build-fuzz/seeds
rm -rf "$SEEDS" && mkdir -p "$SEEDS"/{model,pth,safetensors}
TINY=../shared/reference/tiny-rwkv
if [[ -d $TINY ]]; then
  for f in 4v0-660K-FP16 5v1-730K-Q5_1 6v0-1m-FP16 7v0-834K-Q5_1; do cp "$TINY/tiny-rwkv-$f.bin" "$SEEDS/model/"; done
fi
# small synthesized models as native seeds, and their official-layout exports as .pth / safetensors seeds
if [[ -x build/rwkv-lite ]]; then
  for a in 4 5 6 7; do
    build/rwkv-lite synth -o "$SEEDS/model/s$a.rwkvl" --arch "$a" --layers 1 --embd 32 --vocab 16 --head-size 16 >/dev/null
  done
fi
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
