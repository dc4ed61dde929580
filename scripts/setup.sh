#!/usr/bin/env bash
# One command from a fresh Debian machine: install dependencies, build (Release), and generate text
# with the tiny reference model in ../shared (or a synthesized model where that folder is absent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"

TINY=../shared/reference/tiny-rwkv/tiny-rwkv-5v2-730K-FP32.bin
if [[ -f "$TINY" ]]; then
  MODEL=$TINY
else
  echo "setup: $TINY not found; synthesizing a small random model instead"
  ./build/rwkv-lite synth -o build/synth-tiny.rwkvl --arch 7 --layers 2 --embd 64 --vocab 256
  MODEL=build/synth-tiny.rwkvl
fi
./build/rwkv-lite generate -m "$MODEL" -p "In the beginning" -n 64 --temp 0.8 --top-p 0.9 --seed 42
echo
