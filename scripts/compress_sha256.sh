#!/usr/bin/env bash
# SHA-256 of the files `rwkv-lite compress` writes for a fixed set of recipes (issue #14, item 9: the same
# inputs must give the same bytes before and after a refactor). Prints "sha256  name" per file
# ("failed  name: message" for a recipe the command refuses: that must stay the same too).
# usage: compress_sha256.sh RWKV_LITE SHARED_DIR WORK_DIR [--reference]
#   --reference also runs the reference-model recipe (a few minutes).
set -uo pipefail
CLI=$1 SHARED=$2 WORK=$3
mkdir -p "$WORK"
TINY=$SHARED/reference/tiny-rwkv
head -c 20000 "$SHARED/data/wikitext2-valid.txt" >"$WORK/calib.txt"
run() {  # run NAME ARGS...
  local name=$1
  shift
  "$CLI" compress -o "$WORK/$name.rwkvl" --threads 2 "$@" >"$WORK/$name.log" 2>&1 ||
    { echo "failed  $name: $(tail -1 "$WORK/$name.log")"; return 0; }
  sha256sum "$WORK/$name.rwkvl" | awk -v n="$name" '{print $1 "  " n}'
}
C=(--calib "$WORK/calib.txt")
for mb in 4v0-660K:2000K 5v1-730K:2400K 5v2-730K:2400K 6v0-1m:3500K 7v0-834K:2900K; do
  m=${mb%%:*} budget=${mb#*:}
  M=(-m "$TINY/tiny-rwkv-$m-FP32.bin")
  run "$m-svd" "${M[@]}" --lowrank svd --rank-frac 0.25
  run "$m-svd-calib-rank8-f16" "${M[@]}" --lowrank svd --rank 8 --targets all "${C[@]}" --calib-tokens 2048 --dtype f16
  run "$m-asvd-all-diag-int8" "${M[@]}" --lowrank asvd --rank-frac 0.25 "${C[@]}" --calib-tokens 4096 --targets all --diag --quant int8
  run "$m-q4-emb-head" "${M[@]}" --quant int4 --quant-emb --quant-head
  run "$m-budget-asvd" "${M[@]}" --lowrank asvd --budget "$budget" "${C[@]}" --calib-tokens 2048
  run "$m-sparse-cluster" "${M[@]}" --sparse-ffn "${C[@]}" --calib-tokens 2048 --cluster-head 16 --epochs 3 --head-epochs 3
  run "$m-asvd-q8-sparse-cluster" "${M[@]}" --lowrank asvd --rank-frac 0.25 --quant int8 --quant-emb --quant-head \
    --sparse-ffn --cluster-head 16 "${C[@]}" --calib-tokens 2048 --epochs 3 --head-epochs 3 --head-prior uniform
  run "$m-sparse-predf16-cluster-emb" "${M[@]}" --sparse-ffn --pred-dtype f16 "${C[@]}" --calib-tokens 2048 --epochs 3 \
    --cluster-head 8 --cluster-source emb --head-epochs 2 --targets all
  run "$m-cluster-only" "${M[@]}" --cluster-head 16 "${C[@]}" --calib-tokens 2048 --head-epochs 3 --cluster-cap 20
  run "$m-sparse-nopred-i8" "${M[@]}" --sparse-ffn --no-predictor --ffn-dtype i8 "${C[@]}" --calib-tokens 1024
done
run "5v2-fp16-asvd-q4" -m "$TINY/tiny-rwkv-5v2-730K-FP16.bin" --lowrank asvd --rank-frac 0.5 "${C[@]}" --calib-tokens 2048 --quant int4
if [ "${4:-}" = "--reference" ]; then
  run "reference-asvd-q8-sparse-cluster" -m "$SHARED/reference/models/rwkv5-world-l8-d256/model.pth" \
    --lowrank asvd --rank-frac 0.25 --quant int8 --quant-emb --quant-head --sparse-ffn --cluster-head 200 \
    --calib "$SHARED/data/wikitext2-valid.txt"
fi
