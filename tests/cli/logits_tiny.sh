#!/usr/bin/env bash
# logits of the three bytes `"in` (34, 105, 110) for every tiny FP32 model against the reference
# expected-logits-*.bin (max abs diff <= $TINY_FP32_LOGIT_TOL, 1e-5; all five versions must be there);
# --text equals --tokens; RNN mode (--chunk 1) agrees; a native conversion gives the same logits. Float
# files are compared with od + awk only.
# usage: logits_tiny.sh RWKV_LITE SHARED_DIR BUILD_DIR
. "$(dirname "$0")/lib/common.bash" "$@"
DIR=$SHARED/reference/tiny-rwkv
need_shared "$DIR"
make_work logits

# maxdiff A B: prints the largest |a - b| over two little-endian float32 files, or "bad ..." when the
# sizes differ or a value is not finite.
maxdiff() {
  local na nb
  na=$(wc -c <"$1")
  nb=$(wc -c <"$2")
  if [ "$na" -ne "$nb" ] || [ "$na" -eq 0 ]; then
    echo "bad: sizes $na and $nb"
    return
  fi
  paste -d' ' <(od -An -v -w4 --endian=little -t f4 "$1") <(od -An -v -w4 --endian=little -t f4 "$2") |
    awk '
      function finite(s) { return s ~ /^[-+]?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?$/ }
      { if (!finite($1) || !finite($2)) { print "bad: non-finite value at " NR; bad = 1; exit }
        d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d }
      END { if (!bad) printf "%.3g\n", m }'
}

# within A B TOL WHAT
within() {
  local d
  d=$(maxdiff "$1" "$2")
  if [[ $d == bad* ]]; then
    fail "$4: $d"
  elif awk -v d="$d" -v t="$3" 'BEGIN { exit !(d <= t) }'; then
    echo "ok   $4 (max abs diff $d)"
  else
    fail "$4: max abs diff $d > $3"
  fi
}

checked=0
for model in "$DIR"/tiny-rwkv-*-FP32.bin; do
  [ -f "$model" ] || continue
  version=$(basename "$model" -FP32.bin)
  version=${version#tiny-rwkv-}
  expected=$DIR/expected-logits-$version.bin
  [ -f "$expected" ] || continue
  checked=$((checked + 1))
  out=$WORK/$version.bin
  if ! "$CLI" logits -m "$model" --tokens 34,105,110 -o "$out" 2>"$WORK/err"; then
    fail "$version: logits failed: $(cat "$WORK/err")"
    continue
  fi
  n=$(wc -c <"$out")
  [ "$n" -eq 1024 ] || fail "$version: $n bytes of logits, expected 1024 (256 float32)"
  within "$out" "$expected" "$TINY_FP32_LOGIT_TOL" "$version logits vs reference"

  if "$CLI" logits -m "$model" --text '"in' -o "$WORK/$version-text.bin" 2>"$WORK/err"; then
    if cmp -s "$out" "$WORK/$version-text.bin"; then echo "ok   $version --text equals --tokens"
    else fail "$version: --text '\"in' differs from --tokens 34,105,110"; fi
  else
    fail "$version: logits --text failed: $(cat "$WORK/err")"
  fi

  if "$CLI" logits -m "$model" --tokens 34,105,110 --chunk 1 -t 1 -o "$WORK/$version-rnn.bin" 2>"$WORK/err"; then
    within "$WORK/$version-rnn.bin" "$expected" "$TINY_FP32_LOGIT_TOL" "$version RNN mode (--chunk 1, 1 thread) vs reference"
  else
    fail "$version: logits --chunk 1 failed: $(cat "$WORK/err")"
  fi
done
[ $checked -eq 5 ] || fail "$checked tiny FP32 models with expected logits in $DIR, expected 5 (v4, v5.1, v5.2, v6, v7)"

# convert to the native format (same dtype): the logits must not move.
M=$DIR/tiny-rwkv-7v0-834K-FP32.bin
if [ -f "$M" ] && [ -f "$WORK/7v0-834K.bin" ]; then
  if "$CLI" convert -m "$M" -o "$WORK/native.rwkvl" 2>"$WORK/err" &&
    "$CLI" logits -m "$WORK/native.rwkvl" --tokens 34,105,110 -o "$WORK/native-logits.bin" 2>"$WORK/err"; then
    within "$WORK/native-logits.bin" "$WORK/7v0-834K.bin" 1e-6 "convert to native keeps the logits"
  else
    fail "convert / logits on the native file failed: $(cat "$WORK/err")"
  fi
fi

finish "all logits checks passed ($checked models)"
