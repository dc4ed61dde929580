#!/usr/bin/env bash
# perplexity of the tiny byte-level RWKV-5.2 model on the start of WikiText-2: a sane value, the same
# in RNN mode and with another thread count, JSON output with the documented keys, no progress bar
# when stderr is not a terminal.
# usage: perplexity_tiny.sh RWKV_LITE SHARED_DIR BUILD_DIR
. "$(dirname "$0")/lib/common.bash" "$@"
MODEL=$SHARED/reference/tiny-rwkv/tiny-rwkv-5v2-730K-FP32.bin
TEXT=$SHARED/data/wikitext2-test.txt
need_shared "$MODEL" "$TEXT"
make_work ppl
head -c 3000 "$TEXT" >"$WORK/text.txt"

json_value() { grep -o "\"$2\":[^,}]*" "$1" | head -1 | cut -d: -f2; }

run() {  # run OUT TEXT_FILE ARGS...
  local out=$1 text=$2
  shift 2
  if ! "$CLI" perplexity -m "$MODEL" -f "$text" --json "$@" >"$out" 2>"$out.err"; then
    fail "perplexity $* exited with an error: $(cat "$out.err")"
    return 1
  fi
}

if run "$WORK/a.json" "$WORK/text.txt" -t 2; then
  for key in ppl tokens tok_per_s seconds; do
    if grep -q "\"$key\":" "$WORK/a.json"; then echo "ok   --json has $key"; else fail "--json lacks $key"; fi
  done
  ppl=$(json_value "$WORK/a.json" ppl)
  tokens=$(json_value "$WORK/a.json" tokens)
  # A byte model: 3000 bytes are 3000 tokens. A trained model is far better than uniform (256).
  if [ "$tokens" = 3000 ]; then echo "ok   3000 tokens"; else fail "tokens = $tokens, expected 3000"; fi
  if awk -v p="$ppl" 'BEGIN { exit !(p > 1 && p < 64) }'; then
    echo "ok   ppl = $ppl"
  else
    fail "implausible ppl '$ppl'"
  fi
  if grep -q $'\r' "$WORK/a.json.err"; then fail "progress bar drawn although stderr is not a terminal"; fi

  # RNN mode, another thread count, and the text output agree to rounding.
  if run "$WORK/b.json" "$WORK/text.txt" -t 1 --chunk 1; then
    ppl_b=$(json_value "$WORK/b.json" ppl)
    if awk -v a="$ppl" -v b="$ppl_b" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-4 * a) }'; then
      echo "ok   RNN mode, 1 thread: ppl $ppl_b"
    else
      fail "ppl differs between sequence mode ($ppl) and RNN mode ($ppl_b)"
    fi
  fi
  # --max-tokens limits the stream.
  if run "$WORK/c.json" "$WORK/text.txt" --max-tokens 100; then
    if [ "$(json_value "$WORK/c.json" tokens)" = 100 ]; then
      echo "ok   --max-tokens 100"
    else
      fail "--max-tokens ignored"
    fi
  fi
  if "$CLI" perplexity -m "$MODEL" -f "$WORK/text.txt" >"$WORK/text.out" 2>&1 &&
    grep -q "^perplexity [0-9]" "$WORK/text.out"; then
    echo "ok   text output"
  else
    fail "text output: $(cat "$WORK/text.out")"
  fi
fi

# Independent check of the arithmetic and the token alignment: recompute the NLL of a short sentence
# from the logits after every prefix (logits subcommand) in awk, and compare.
printf 'The cat sat on the mat.' >"$WORK/short.txt"
read -r -a ids <<<"$(od -An -v -tu1 "$WORK/short.txt" | tr '\n' ' ')"
n=${#ids[@]}
total=0
ok=1
for ((i = 1; i < n; i++)); do
  prefix=$(IFS=,; echo "${ids[*]:0:i}")
  if ! "$CLI" logits -m "$MODEL" --tokens "$prefix" -o "$WORK/l.bin" 2>"$WORK/l.err"; then
    fail "logits --tokens $prefix: $(cat "$WORK/l.err")"
    ok=0
    break
  fi
  nll=$(od -An -v -w4 --endian=little -t f4 "$WORK/l.bin" | awk -v t="${ids[i]}" '
    { v[NR - 1] = $1 + 0; if (NR == 1 || $1 + 0 > m) m = $1 + 0 }
    END { for (j in v) s += exp(v[j] - m); printf "%.10f", log(s) + m - v[t] }')
  total=$(awk -v a="$total" -v b="$nll" 'BEGIN { printf "%.10f", a + b }')
done
if [ $ok = 1 ] && run "$WORK/short.json" "$WORK/short.txt" -t 1; then
  ppl_tool=$(json_value "$WORK/short.json" ppl)
  ppl_ref=$(awk -v t="$total" -v n="$n" 'BEGIN { printf "%.8f", exp(t / (n - 1)) }')
  if awk -v a="$ppl_tool" -v b="$ppl_ref" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-4 * b) }'; then
    echo "ok   ppl $ppl_tool matches the prefix-by-prefix recomputation $ppl_ref"
  else
    fail "ppl $ppl_tool differs from the prefix-by-prefix recomputation $ppl_ref"
  fi
fi

finish "all perplexity checks passed"
