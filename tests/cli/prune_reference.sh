#!/usr/bin/env bash
# Pruning on the trained reference model (issue #16): 50 % unstructured sparsity on every projection, calibrated on
# WikiText-2 valid, perplexity on WikiText-2 test in one run: DSnoT < Wanda < magnitude (the issue's check; the
# figures of docs/PRUNING.md); every matrix exactly half zeros.
# usage: prune_reference.sh RWKV_LITE SHARED_DIR BUILD_DIR
. "$(dirname "$0")/lib/common.bash" "$@"
MODEL=$SHARED/reference/models/rwkv5-world-l8-d256/model.pth
need_shared "$MODEL" "$SHARED/data/wikitext2-valid.txt" "$SHARED/data/wikitext2-test.txt"
export RWKVL_TOKENIZER_DIR=${RWKVL_TOKENIZER_DIR:-$SHARED/reference/tokenizers}
make_work prune_ref
CALIB=16384 EVAL=20000
release_build || { CALIB=2048; EVAL=3000; }  # sanitizer builds: the same code on less data, order not checked
declare -A ppl
for m in magnitude wanda dsnot; do
  "$CLI" compress -m "$MODEL" -o "$WORK/$m.rwkvl" --prune $m --sparsity 0.5 --calib "$SHARED/data/wikitext2-valid.txt" \
    --calib-tokens $CALIB --json >"$WORK/$m.json" 2>"$WORK/err" || fail "compress --prune $m: $(tail -2 "$WORK/err")"
  grep -q '"zeros": 3407872' "$WORK/$m.json" || fail "$m: not half of the 6,815,744 projection weights zero"
  ppl[$m]=$("$CLI" eval -m "$WORK/$m.rwkvl" --text "$SHARED/data/wikitext2-test.txt" --max-tokens $EVAL --json 2>"$WORK/err" |
    sed -n 's/.*"ppl":\([0-9.e+-]*\).*/\1/p')
  [ -n "${ppl[$m]}" ] || fail "eval of the $m file: $(tail -2 "$WORK/err")"
  echo "$m: perplexity ${ppl[$m]} (WikiText-2 test, first $EVAL tokens)"
done
if release_build && [ -n "${ppl[dsnot]}" ] && [ -n "${ppl[wanda]}" ] && [ -n "${ppl[magnitude]}" ]; then
  awk -v d="${ppl[dsnot]}" -v w="${ppl[wanda]}" -v m="${ppl[magnitude]}" 'BEGIN { exit !(d < w && w < m) }' ||
    fail "expected dsnot < wanda < magnitude, got ${ppl[dsnot]}, ${ppl[wanda]}, ${ppl[magnitude]}"
fi
finish
