#!/usr/bin/env bash
# Memory options of the run commands on a synthetic model (RWKV-5, 2 layers, embd 256, vocab 4096, f16):
#  - logits are byte-identical without a budget, under budgets from "everything resident" down to the
#    planner's minimum (layers and head streamed), with and without prefetch, with an embedding cache
#    and with simulated storage;
#  - --print-plan prints the plan; a budget below the minimum is refused naming the minimum, and the
#    minimum it names works;
#  - peak RSS of a budgeted run (the reference model, when present) stays within the budget;
#  - bad values (--io-throttle 0, --io-latency without a throttle, --head-mode cluster without a cluster
#    head, --print-plan or --mem-baseline without a budget) are usage errors (exit 2) with a message;
#  - --mem-baseline is the plan's starting figure.
# usage: memory_budget.sh RWKV_LITE SHARED_DIR BUILD_DIR
. "$(dirname "$0")/lib/common.bash" "$@"
make_work membudget

# Sanitizer builds use several times the memory (shadow pages), so RSS moves more between runs: wider
# slack above the minimum there, and the reference model's peak-RSS check only in Release builds.
if "$CLI" --version 2>/dev/null | grep -q "| Release |"; then
  RELEASE=1 SLACK=1048576  # the baseline RSS the planner measures moves by up to ~0.5 MiB between runs
else
  RELEASE=0 SLACK=16777216
fi
M=$WORK/synth.rwkvl
"$CLI" synth --arch 5 --layers 2 --embd 256 --vocab 4096 --dtype f16 -o "$M" >/dev/null 2>&1 || fail "synth"
TOKS=1,2,3,4000,17,99,2048,5,6,7,8,9
"$CLI" logits -m "$M" --tokens $TOKS --chunk 4 -o "$WORK/ref.bin" 2>/dev/null || fail "logits without a budget"

# The planner's minimum for this model, from the refusal of a 1 MiB budget.
out=$("$CLI" logits -m "$M" --tokens $TOKS --chunk 4 --mem-budget 1M -o "$WORK/x.bin" 2>&1)
rc=$?
[ $rc -eq 1 ] || fail "budget below the minimum: exit $rc, want 1"
echo "$out" | grep -q "below the minimum" || fail "budget below the minimum: no minimum named: $out"
MIN=$(echo "$out" | sed -n 's/.*give --mem-budget \([0-9]*\) or more.*/\1/p')
[ -n "$MIN" ] || fail "no minimum in: $out"
[ -e "$WORK/x.bin" ] && fail "a refused run left an output file"

i=0
for budget in 1G $((MIN + SLACK * 4)) $((MIN + SLACK)); do
  for extra in "" "--no-prefetch" "--emb-cache 7" "--io-throttle 2000 --io-latency 20" "--storage ufs --io-queue 3"; do
    i=$((i + 1))
    # shellcheck disable=SC2086
    if ! "$CLI" logits -m "$M" --tokens $TOKS --chunk 4 --mem-budget "$budget" $extra -o "$WORK/b$i.bin" 2>"$WORK/err$i"; then
      fail "budget $budget $extra: $(cat "$WORK/err$i")"
      continue
    fi
    cmp -s "$WORK/ref.bin" "$WORK/b$i.bin" || fail "budget $budget $extra: logits differ from the unbudgeted run"
  done
done
"$CLI" logits -m "$M" --tokens $TOKS --chunk 4 --emb-cache 3 -o "$WORK/e.bin" 2>/dev/null || fail "emb cache"
cmp -s "$WORK/ref.bin" "$WORK/e.bin" || fail "--emb-cache changed the logits"

out=$("$CLI" logits -m "$M" --tokens $TOKS --chunk 4 --mem-budget $((MIN + SLACK)) --print-plan -o "$WORK/p.bin" 2>&1)
echo "$out" | grep -q "memory plan: budget" || fail "--print-plan printed no plan: $out"
echo "$out" | grep -q "streamed" || fail "--print-plan: nothing streamed near the minimum: $out"

# --mem-baseline: the plan starts from the given figure instead of the measured one (the same plan every run).
out=$("$CLI" logits -m "$M" --tokens $TOKS --chunk 4 --mem-budget 1G --mem-baseline 5M --print-plan -o "$WORK/p.bin" 2>&1)
echo "$out" | grep -Eq "process \(at planning\) +5\.00 MiB" || fail "--mem-baseline 5M not the plan's process row: $out"
cmp -s "$WORK/ref.bin" "$WORK/p.bin" || fail "--mem-baseline changed the logits"

# bench --budgets: one row per budget and prefetch setting.
out=$("$CLI" bench -m "$M" --budgets "$((MIN + SLACK + 4194304)),1G" --gen-tokens 4 --json 2>/dev/null)
n=$(echo "$out" | python3 -c 'import json,sys; j=json.load(sys.stdin); print(sum(1 for r in j["budget_sweep"] if r["tok_per_s"] and r["tok_per_s"] > 0))' 2>/dev/null)
[ "$n" = "4" ] || fail "bench --budgets: want 4 timed rows, got '$n': $out"

expect_usage() {
  local what=$1
  shift
  local o rc
  o=$("$@" 2>&1)
  rc=$?
  [ $rc -eq 2 ] || fail "$what: exit $rc, want 2 ($o)"
  [ -n "$o" ] || fail "$what: no message"
}
expect_usage "--io-throttle 0" "$CLI" logits -m "$M" --tokens 1 --io-throttle 0 -o "$WORK/u.bin"
expect_usage "--io-latency alone" "$CLI" logits -m "$M" --tokens 1 --io-latency 100 -o "$WORK/u.bin"
expect_usage "--io-queue alone" "$CLI" logits -m "$M" --tokens 1 --io-queue 4 -o "$WORK/u.bin"
expect_usage "--io-queue 0" "$CLI" logits -m "$M" --tokens 1 --storage emmc --io-queue 0 -o "$WORK/u.bin"
expect_usage "--storage floppy" "$CLI" logits -m "$M" --tokens 1 --storage floppy -o "$WORK/u.bin"
expect_usage "--head-mode cluster" "$CLI" logits -m "$M" --tokens 1 --head-mode cluster -o "$WORK/u.bin"
expect_usage "--print-plan alone" "$CLI" logits -m "$M" --tokens 1 --print-plan -o "$WORK/u.bin"
expect_usage "--head-p 0" "$CLI" logits -m "$M" --tokens 1 --head-p 0 -o "$WORK/u.bin"
expect_usage "--mem-budget junk" "$CLI" logits -m "$M" --tokens 1 --mem-budget 12X -o "$WORK/u.bin"
expect_usage "--mem-baseline alone" "$CLI" logits -m "$M" --tokens 1 --mem-baseline 5M -o "$WORK/u.bin"

# Peak RSS within the budget on the reference model (converted to native f16): eval at 50% and 25% of
# its fp16 bytes, with the same perplexity as without a budget.
REF=$SHARED/reference/models/rwkv5-world-l8-d256/model.pth
TEXT=$SHARED/data/wikitext2-test.txt
if [ $RELEASE -eq 1 ] && have_shared "$REF" "$TEXT"; then
  "$CLI" convert -m "$REF" -o "$WORK/ref16.rwkvl" --dtype f16 >/dev/null 2>&1 || fail "convert"
  base=$("$CLI" eval -m "$WORK/ref16.rwkvl" --text "$TEXT" --max-tokens 600 --chunk 8 --json 2>/dev/null)
  for pct in 50 25; do
    j=$("$CLI" eval -m "$WORK/ref16.rwkvl" --text "$TEXT" --max-tokens 600 --chunk 8 --mem-budget "$pct%" --json 2>"$WORK/everr")
    if [ -z "$j" ]; then
      fail "eval --mem-budget $pct%: $(cat "$WORK/everr")"
      continue
    fi
    python3 - "$base" "$j" "$pct" <<'EOF' || fail "eval --mem-budget $pct%"
import json, sys
base, j, pct = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
ok = True
if j["peak_rss_bytes"] > j["mem_budget"]:
    print(f"{pct}%: peak RSS {j['peak_rss_bytes']} above the budget {j['mem_budget']}"); ok = False
if abs(j["ppl"] - base["ppl"]) > 1e-9 * base["ppl"]:
    print(f"{pct}%: perplexity {j['ppl']!r} != {base['ppl']!r} without a budget"); ok = False
print(f"{pct}%: budget {j['mem_budget']/2**20:.2f} MiB, peak {j['peak_rss_bytes']/2**20:.2f} MiB, ppl {j['ppl']:.6f}, "
      f"{j['tok_per_s']:.0f} tok/s, layers loaded {j.get('layer_loads')}")
sys.exit(0 if ok else 1)
EOF
  done
fi

finish "ok"
