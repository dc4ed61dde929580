#!/usr/bin/env bash
# eval's perplexity part on tiny models: the same value as the perplexity command, bits per byte equal to
# the mean NLL in bits for a byte-level model (one byte a token) and to an independent byte count for a
# World model, RNN mode and thread counts agree, --max-tokens, the JSON keys (LAMBADA ones null without
# --lambada), file_bytes / weight_bytes against wc and info, the text table, no progress bar off a terminal.
# usage: eval_ppl.sh RWKV_LITE SHARED_DIR BUILD_DIR
. "$(dirname "$0")/lib/common.bash" "$@"
MODEL=$SHARED/reference/tiny-rwkv/tiny-rwkv-5v2-730K-FP32.bin
TEXT=$SHARED/data/wikitext2-test.txt
VOCAB=$SHARED/reference/tokenizers/rwkv_vocab_v20230424.txt
PY=/usr/bin/python3
need_shared "$MODEL" "$TEXT"
make_work eval-ppl
ok() { echo "ok   $*"; }
head -c 2000 "$TEXT" >"$WORK/text.txt"

json_value() { grep -o "\"$2\":[^,}]*" "$1" | head -1 | cut -d: -f2; }
# close A B REL: |A - B| <= REL * |B|
close() { awk -v a="$1" -v b="$2" -v r="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; if (b < 0) b = -b; exit !(d <= r * b) }'; }

run_eval() {  # run_eval OUT ARGS...
  local out=$1
  shift
  if ! "$CLI" eval "$@" --json >"$out" 2>"$out.err"; then
    fail "eval $* exited with an error: $(cat "$out.err")"
    return 1
  fi
}

# ---- byte-level model: eval = perplexity; bpb = mean NLL / ln 2
if run_eval "$WORK/e.json" -m "$MODEL" --text "$WORK/text.txt" -t 2 &&
  "$CLI" perplexity -m "$MODEL" -f "$WORK/text.txt" -t 2 --json >"$WORK/p.json" 2>"$WORK/p.err"; then
  for key in ppl bpb tokens lambada_acc lambada_ppl lambada_n file_bytes weight_bytes peak_rss_bytes tok_per_s \
    seconds model threads isa; do
    if grep -q "\"$key\":" "$WORK/e.json"; then ok "--json has $key"; else fail "--json lacks $key"; fi
  done
  for key in lambada_acc lambada_ppl lambada_n; do
    [ "$(json_value "$WORK/e.json" $key)" = null ] || fail "$key is not null without --lambada"
  done
  if [ "$(grep -c . "$WORK/e.json")" = 1 ]; then ok "one line of JSON"; else fail "stdout is not one line"; fi
  ppl_e=$(json_value "$WORK/e.json" ppl)
  ppl_p=$(json_value "$WORK/p.json" ppl)
  if close "$ppl_e" "$ppl_p" 1e-9; then ok "eval ppl $ppl_e = perplexity ppl $ppl_p"; else fail "eval ppl $ppl_e != perplexity $ppl_p"; fi
  [ "$(json_value "$WORK/e.json" tokens)" = 2000 ] || fail "tokens != 2000"
  [ "$(json_value "$WORK/e.json" predicted_bytes)" = 1999 ] || fail "predicted_bytes != 1999 for a byte model"
  mean=$(json_value "$WORK/e.json" mean_nll)
  bpb=$(json_value "$WORK/e.json" bpb)
  bpb_ref=$(awk -v m="$mean" 'BEGIN { printf "%.12f", m / log(2) }')
  if close "$bpb" "$bpb_ref" 1e-9; then ok "bpb $bpb = mean NLL / ln 2"; else fail "bpb $bpb != $bpb_ref"; fi
  size=$(wc -c <"$MODEL")
  [ "$(json_value "$WORK/e.json" file_bytes)" = "$size" ] && ok "file_bytes = $size" || fail "file_bytes != $size"
  "$CLI" info -m "$MODEL" --json >"$WORK/info.json"
  wb=$(json_value "$WORK/info.json" weight_bytes)
  [ "$(json_value "$WORK/e.json" weight_bytes)" = "$wb" ] && ok "weight_bytes = info's $wb" || fail "weight_bytes != $wb"
  rss=$(json_value "$WORK/e.json" peak_rss_bytes)
  if awk -v r="$rss" -v w="$wb" 'BEGIN { exit !(r > w) }'; then ok "peak RSS $rss > weights"; else fail "peak RSS $rss"; fi
  if awk -v t="$(json_value "$WORK/e.json" tok_per_s)" 'BEGIN { exit !(t > 0) }'; then ok "tok/s > 0"; else fail "tok/s"; fi
  grep -q $'\r' "$WORK/e.json.err" && fail "progress bar drawn although stderr is not a terminal"
fi

# ---- RNN mode with one thread, and --max-tokens (= perplexity --max-tokens)
if run_eval "$WORK/r.json" -m "$MODEL" --text "$WORK/text.txt" -t 1 --chunk 1; then
  close "$(json_value "$WORK/r.json" ppl)" "$ppl_e" 1e-4 && ok "RNN mode, 1 thread agrees" || fail "RNN mode differs"
fi
if run_eval "$WORK/m.json" -m "$MODEL" --text "$WORK/text.txt" --max-tokens 300 &&
  "$CLI" perplexity -m "$MODEL" -f "$WORK/text.txt" --max-tokens 300 --json >"$WORK/pm.json" 2>/dev/null; then
  [ "$(json_value "$WORK/m.json" tokens)" = 300 ] && ok "--max-tokens 300" || fail "--max-tokens ignored"
  close "$(json_value "$WORK/m.json" ppl)" "$(json_value "$WORK/pm.json" ppl)" 1e-9 || fail "--max-tokens ppl differs"
fi

# ---- text output: a table
if "$CLI" eval -m "$MODEL" --text "$WORK/text.txt" >"$WORK/text.out" 2>&1 &&
  grep -q "^perplexity  *[0-9]" "$WORK/text.out" && grep -q "^bits per byte  *[0-9]" "$WORK/text.out" &&
  grep -q "^peak RSS" "$WORK/text.out" && ! grep -q "^lambada" "$WORK/text.out"; then
  ok "text output"
else
  fail "text output: $(cat "$WORK/text.out")"
fi

# ---- a World-vocabulary model (synthetic weights): bits per byte counts the UTF-8 bytes of tokens 1..n-1,
# checked against the byte lengths in the vocabulary file.
if have_shared "$VOCAB" && [ -x "$PY" ]; then
  "$CLI" synth -o "$WORK/w.rwkvl" --arch 5 --layers 1 --embd 32 --head-size 16 --vocab 65536 >/dev/null 2>&1 ||
    fail "synth World-size model"
  printf 'Caf\xc3\xa9 \xe2\x80\x94 na\xc3\xafve r\xc3\xa9sum\xc3\xa9s, 12345 <unk> tokens.\n\n = Heading = \n' >"$WORK/u.txt"
  if run_eval "$WORK/w.json" -m "$WORK/w.rwkvl" --tokenizer "$VOCAB" --text "$WORK/u.txt" &&
    "$CLI" tokenize --tokenizer-kind world --tokenizer "$VOCAB" -f "$WORK/u.txt" >"$WORK/u.ids" 2>/dev/null; then
    want=$("$PY" - "$VOCAB" "$WORK/u.ids" <<'EOF'
import sys
lens = {}
for line in open(sys.argv[1], encoding="utf-8"):
    f = line.split(" ")
    lens[int(f[0])] = int(f[-1])
ids = [int(x) for x in open(sys.argv[2]).read().strip().split(",")]
print(sum(lens[i] for i in ids[1:]), len(ids))
EOF
)
    read -r want_bytes want_tokens <<<"$want"
    got_bytes=$(json_value "$WORK/w.json" predicted_bytes)
    got_tokens=$(json_value "$WORK/w.json" tokens)
    if [ "$got_bytes" = "$want_bytes" ] && [ "$got_tokens" = "$want_tokens" ]; then
      ok "World model: $got_tokens tokens, $got_bytes predicted bytes"
    else
      fail "World model: tokens $got_tokens / bytes $got_bytes, expected $want_tokens / $want_bytes"
    fi
    total=$(awk -v m="$(json_value "$WORK/w.json" mean_nll)" -v n="$got_tokens" 'BEGIN { printf "%.12f", m * (n - 1) }')
    bpb_ref=$(awk -v t="$total" -v b="$want_bytes" 'BEGIN { printf "%.12f", t / log(2) / b }')
    close "$(json_value "$WORK/w.json" bpb)" "$bpb_ref" 1e-9 && ok "World bpb = total NLL in bits / bytes" ||
      fail "World bpb $(json_value "$WORK/w.json" bpb) != $bpb_ref"
  fi
else
  [ -x "$PY" ] || echo "skip: $PY not found (World bpb check not run)"
fi

finish "all eval perplexity checks passed"
