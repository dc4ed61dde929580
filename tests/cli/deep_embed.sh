#!/usr/bin/env bash
# RWKV-7a (DeepEmbed) through the command line: synth --arch 7a, the tables on storage behind the row cache (the
# same perplexity as the tables read in place, bytes read per token within one row per layer, the plan under a
# budget, bench's side by side), compress --deep-embed (hot tokens pinned) and the errors.
# usage: deep_embed.sh RWKV_LITE SHARED_DIR BUILD_DIR
. "$(dirname "$0")/lib/common.bash" "$@"
need_shared "$SHARED/data/wikitext2-test.txt" "$SHARED/data/wikitext2-valid.txt"
make_work deep-embed
M=$WORK/s7a.rwkvl
TEXT=$SHARED/data/wikitext2-test.txt
"$CLI" synth -o "$M" --arch 7a --de-rank 8 --layers 2 --embd 64 --vocab 65536 --dtype bf16 >/dev/null 2>"$WORK/err" ||
  { echo "FAIL synth --arch 7a: $(cat "$WORK/err")"; exit 1; }
"$CLI" info -m "$M" --json >"$WORK/info.json" 2>&1 && grep -q '"arch":"v7a"' "$WORK/info.json" && echo "ok   info: v7a" ||
  fail "info: $(cat "$WORK/info.json")"

# One value of a JSON object on stdout.
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

# Tables in place (0) and behind caches of 2 and 512 tokens: the same perplexity to the last digit.
for n in 0 2 512; do
  "$CLI" perplexity -m "$M" -f "$TEXT" --max-tokens 600 -t 2 --de-cache $n --json >"$WORK/ppl$n.json" 2>"$WORK/err" ||
    fail "perplexity --de-cache $n: $(cat "$WORK/err")"
done
p0=$(field "$WORK/ppl0.json" ppl)
for n in 2 512; do
  pn=$(field "$WORK/ppl$n.json" ppl)
  [ "$pn" = "$p0" ] && echo "ok   perplexity with a cache of $n tokens = in place ($pn)" || fail "perplexity $pn with --de-cache $n, $p0 in place"
  # a token reads at most one 128-byte row (R = 8, bf16) per layer
  b=$(field "$WORK/ppl$n.json" de_bytes_read_per_token)
  python3 -c "import sys; sys.exit(0 if 0 < float('$b') <= 2 * 128 else 1)" && echo "ok   $b bytes of table read per token" ||
    fail "de_bytes_read_per_token $b with --de-cache $n (at most 256)"
done
grep -q de_cache_tokens "$WORK/ppl0.json" && fail "tables in place reported a cache" || echo "ok   --de-cache 0: no cache"

# bench: the DeepEmbed line and the side by side with the tables resident; under a budget the plan counts the cache.
if "$CLI" bench -m "$M" -t 2 --prompt-tokens 16 --gen-tokens 16 --de-cache 64 --de-rounds 1 --no-bandwidth --json >"$WORK/bench.json" 2>"$WORK/err"; then
  [ "$(field "$WORK/bench.json" de_cache_tokens)" = 64 ] && echo "ok   bench: 64-token cache" || fail "bench: $(cat "$WORK/bench.json")"
  grep -q '"de_compare"' "$WORK/bench.json" && echo "ok   bench: tables on storage against resident" || fail "bench lacks de_compare"
else
  fail "bench: $(cat "$WORK/err")"
fi
if "$CLI" bench -m "$M" -t 2 --prompt-tokens 8 --gen-tokens 8 --mem-budget 512M --print-plan --no-bandwidth >"$WORK/out" 2>"$WORK/plan"; then
  grep -q "DeepEmbed cache .*tables: 16.00 MiB in the file, never resident" "$WORK/plan" && echo "ok   the plan keeps the tables in the file" ||
    fail "plan: $(cat "$WORK/plan")"
  grep -q "^DeepEmbed cache" "$WORK/out" && echo "ok   bench under a budget reports the cache" || fail "bench output: $(cat "$WORK/out")"
else
  fail "bench --mem-budget: $(cat "$WORK/plan")"
fi

# compress --deep-embed records hot tokens; the runtime pins them (half of a 64-token cache).
H=$WORK/s7a-hot.rwkvl
if "$CLI" compress -m "$M" -o "$H" --deep-embed --calib "$SHARED/data/wikitext2-valid.txt" --calib-tokens 4000 --de-hot 100 -t 2 >"$WORK/out" 2>"$WORK/err"; then
  grep -q "100 hot tokens recorded" "$WORK/out" && echo "ok   compress --deep-embed: 100 hot tokens" || fail "compress: $(cat "$WORK/out")"
  "$CLI" perplexity -m "$H" -f "$TEXT" --max-tokens 300 -t 2 --de-cache 64 --json >"$WORK/hot.json" 2>"$WORK/err" || fail "perplexity: $(cat "$WORK/err")"
  [ "$(field "$WORK/hot.json" de_cache_pinned)" = 32 ] && echo "ok   32 of 64 slots pinned" || fail "pinned: $(cat "$WORK/hot.json")"
else
  fail "compress --deep-embed: $(cat "$WORK/err")"
fi

# Errors: clear messages, exit codes 1 (the library) and 2 (usage).
V7=$WORK/v7.rwkvl
"$CLI" synth -o "$V7" --arch 7 --layers 1 --embd 64 --vocab 256 >/dev/null 2>&1 || fail "synth v7"
check_err() {
  local want=$1 word=$2
  shift 2
  "$CLI" "$@" >"$WORK/stdout" 2>"$WORK/stderr" </dev/null
  local rc=$?
  if [ $rc -eq "$want" ] && grep -qi -- "$word" "$WORK/stderr"; then echo "ok   $word (exit $rc)"; else fail "rwkv-lite $* -> $rc: $(cat "$WORK/stderr")"; fi
}
check_err 1 "needs an RWKV-7a model" compress -m "$V7" -o "$WORK/x.rwkvl" --deep-embed
check_err 2 "de-rank needs --arch 7a" synth -o "$WORK/y.rwkvl" --arch 6 --de-rank 4
check_err 2 "de-hot needs --deep-embed" compress -m "$M" -o "$WORK/z.rwkvl" --quant int8 --de-hot 5
check_err 2 "de-cache must be in" perplexity -m "$M" -f "$TEXT" --de-cache -2
check_err 1 "a memory budget does not allow" bench -m "$M" --mem-budget 512M --de-cache 0
finish
