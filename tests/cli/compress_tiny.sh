#!/usr/bin/env bash
# rwkv-lite compress on the tiny byte-level RWKV-5.2 model: svd / asvd / int8 / int4 files are written,
# every command runs them, asvd's calibration error is below svd's on every matrix, and every bad
# request fails with a message, a non-zero exit and no output file left behind.
# usage: compress_tiny.sh RWKV_LITE SHARED_DIR BUILD_DIR
. "$(dirname "$0")/lib/common.bash" "$@"
MODEL=$SHARED/reference/tiny-rwkv/tiny-rwkv-5v2-730K-FP32.bin
TEXT=$SHARED/data/wikitext2-valid.txt
need_shared "$MODEL" "$TEXT"
if ! command -v python3 >/dev/null; then
  echo "skip: python3 not found"
  exit 77
fi
make_work compress
head -c 20000 "$TEXT" >"$WORK/calib.txt"
head -c 3000 "$SHARED/data/wikitext2-test.txt" >"$WORK/test.txt"

ok_run() {  # ok_run NAME CMD... : must succeed
  local name=$1
  shift
  if "$@" >"$WORK/out.txt" 2>"$WORK/err.txt"; then
    echo "ok   $name"
  else
    fail "$name exited with an error: $(tail -3 "$WORK/err.txt")"
  fi
}

# ---- files every command runs
ok_run "svd r1/4" "$CLI" compress -m "$MODEL" -o "$WORK/svd.rwkvl" --lowrank svd --rank-frac 0.25
ok_run "asvd r1/4 + int8 + json" "$CLI" compress -m "$MODEL" -o "$WORK/asvd.rwkvl" --lowrank asvd --rank-frac 0.25 \
  --calib "$WORK/calib.txt" --calib-tokens 4096 --targets all --diag --quant int8 --json
cp "$WORK/out.txt" "$WORK/asvd.json"
ok_run "int4 emb+head" "$CLI" compress -m "$MODEL" -o "$WORK/q4.rwkvl" --quant int4 --quant-emb --quant-head
for f in svd asvd q4; do
  [ -f "$WORK/$f.rwkvl" ] || { fail "$f.rwkvl was not written"; continue; }
  ok_run "info $f" "$CLI" info -m "$WORK/$f.rwkvl"
  ok_run "generate $f" "$CLI" generate -m "$WORK/$f.rwkvl" -p "The" -n 8 --seed 1
  ok_run "perplexity $f" "$CLI" perplexity -m "$WORK/$f.rwkvl" -f "$WORK/test.txt" --chunk 16
  ok_run "bench $f" "$CLI" bench -m "$WORK/$f.rwkvl" --prompt-tokens 8 --gen-tokens 4 --no-bandwidth
  ok_run "logits $f" "$CLI" logits -m "$WORK/$f.rwkvl" --tokens 34,105,110 -o "$WORK/$f.logits"
done

# ---- the report: asvd never worse than svd, every target factored with the diagonal term, pass recorded
if [ -f "$WORK/asvd.json" ]; then
  if python3 - "$WORK/asvd.json" <<'EOF'; then echo "ok   asvd report"; else fail "asvd report"; fi
import json, sys
r = json.load(open(sys.argv[1]))
fact = [m for m in r["matrices"] if m["action"] == "factored"]
assert len(fact) > 0, "nothing factored"
for m in fact:
    assert m["err_asvd"] <= m["err_svd"] * (1 + 1e-6) + 1e-12, m
assert r["pass"]["lowrank"]["method"] == "asvd" and r["pass"]["lowrank"]["diag"] is True
assert r["pass"]["calibration"]["tokens"] == 4096
assert r["weight_bytes_after"] < r["weight_bytes_before"]
EOF
  if "$CLI" info -m "$WORK/asvd.rwkvl" --json | grep -q '"passes"'; then echo "ok   info shows passes"; else fail "info --json lacks passes"; fi
fi

# ---- bad requests: message, non-zero exit, no output file
printf '' >"$WORK/empty.txt"
printf 'ab' >"$WORK/short.txt"
bad() {  # bad NAME EXPECTED_SUBSTRING ARGS...
  local name=$1 want=$2
  shift 2
  rm -f "$WORK/bad.rwkvl"
  if "$CLI" compress -o "$WORK/bad.rwkvl" "$@" >"$WORK/out.txt" 2>"$WORK/err.txt"; then
    fail "$name: succeeded"
  elif ! grep -qi -- "$want" "$WORK/err.txt"; then
    fail "$name: message lacks '$want': $(cat "$WORK/err.txt")"
  elif ls "$WORK" | grep -q '^bad\.rwkvl'; then
    fail "$name: left an output file"
  else
    echo "ok   $name: $(head -1 "$WORK/err.txt")"
  fi
}
bad "unknown target" "unknown target" -m "$MODEL" --lowrank svd --rank-frac 0.25 --targets att.kee
bad "no rank" "rank" -m "$MODEL" --lowrank svd
bad "rank 0" "rank" -m "$MODEL" --lowrank svd --rank 0
bad "rank above min" "out of range" -m "$MODEL" --lowrank svd --rank 100000
bad "rank-frac above 1" "rank-frac" -m "$MODEL" --lowrank svd --rank-frac 1.5
bad "asvd without calib" "calib" -m "$MODEL" --lowrank asvd --rank-frac 0.25
bad "empty calib" "empty" -m "$MODEL" --lowrank asvd --rank-frac 0.25 --calib "$WORK/empty.txt"
bad "short calib" "at least" -m "$MODEL" --lowrank asvd --rank-frac 0.25 --calib "$WORK/short.txt"
bad "missing calib" "calib" -m "$MODEL" --lowrank asvd --rank-frac 0.25 --calib "$WORK/nope.txt"
bad "already factored" "already factored" -m "$WORK/svd.rwkvl" --lowrank svd --rank-frac 0.25
bad "already quantised" "already quantised" -m "$WORK/q4.rwkvl" --quant int8
bad "unknown quant" "int4" -m "$MODEL" --quant int3
bad "nothing to do" "nothing to do" -m "$MODEL"
bad "quant-emb alone" "quant" -m "$MODEL" --quant-emb
bad "missing model" "nope" -m "$WORK/nope.bin" --quant int8
bad "fidelities without cluster head" "cluster-head" -m "$MODEL" --quant int8 --quant-head --fidelities int8,int4
bad "fidelities naming another dtype" "will be stored as" -m "$MODEL" --cluster-head 8 --calib "$WORK/calib.txt" \
  --fidelities int8,int4
bad "fidelity below int4" "must be int4" -m "$MODEL" --quant int8 --quant-head --cluster-head 8 --calib "$WORK/calib.txt" \
  --fidelities int8,int2

# ---- fidelities: an int4 version of the head clusters with its profile; the latency target under a budget
ok_run "cluster head + fidelities" "$CLI" compress -m "$MODEL" -o "$WORK/fid.rwkvl" --quant int8 --quant-head \
  --cluster-head 8 --head-epochs 3 --fidelities int8,int4 --calib "$WORK/calib.txt" --calib-tokens 2048
if "$CLI" info -m "$WORK/fid.rwkvl" --json | python3 -c '
import json, sys
j = json.load(sys.stdin)
f = [p["cluster_head"]["fidelities"] for p in j["passes"] if "cluster_head" in p][0]
k = [p["cluster_head"]["k_final"] for p in j["passes"] if "cluster_head" in p][0]
assert f["high"] == "i8" and f["low"] == "q4_g32" and len(f["loss_low"]) == k and f["positions"] > 0, f
assert abs(sum(f["loss_low"]) - f["loss_low_all"]) < 0.5 * abs(f["loss_low_all"]) + 1e-4, f
'; then echo "ok   fidelities recorded"; else fail "fidelities record"; fi
ok_run "perplexity under a latency target" "$CLI" perplexity -m "$WORK/fid.rwkvl" -f "$WORK/test.txt" --chunk 1 \
  --mem-budget 512M --storage emmc --latency-target 1000 --compute-ms 1
# bench counts the head rows the cluster head read, not the whole head: rows x bytes of a row, fewer than the vocabulary
if "$CLI" bench -m "$WORK/fid.rwkvl" --prompt-tokens 8 --gen-tokens 16 --no-bandwidth --json | python3 -c '
import json, sys
j = json.load(sys.stdin)
t, V = j["touched"], j["n_vocab"]
assert 0 < j["head_rows_per_token"] < V and j["head_clusters_per_token"] >= 3, j
assert t["cluster_head"] > 0 and t["head"] > 0, t
row = t["head"] / j["head_rows_per_token"]  # bytes of one head row: int8 values + a 2- or 4-byte scale
assert j["n_embd"] + 2 <= row <= j["n_embd"] + 4, row
assert abs(j["bytes_touched_per_token"] - sum(t.values())) < 1e-6 * j["bytes_touched_per_token"], j
assert j["bytes_touched_per_token"] < j["bytes_per_token"] - (V - j["head_rows_per_token"]) * row * 0.999, j
'; then echo "ok   bench counts the cluster head's rows"; else fail "bench touched bytes of the cluster head"; fi
ok_run "perplexity at int4" "$CLI" perplexity -m "$WORK/fid.rwkvl" -f "$WORK/test.txt" --chunk 1 --mem-budget 512M --fidelity int4
run_bad() {  # run_bad NAME EXPECTED_SUBSTRING ARGS...: a run command that must fail with the message
  local name=$1 want=$2
  shift 2
  if "$CLI" "$@" >"$WORK/out.txt" 2>"$WORK/err.txt"; then
    fail "$name: succeeded"
  elif ! grep -qi -- "$want" "$WORK/err.txt"; then
    fail "$name: message lacks '$want': $(cat "$WORK/err.txt")"
  else
    echo "ok   $name: $(head -1 "$WORK/err.txt")"
  fi
}
run_bad "unmeetable latency target" "the fastest plan predicts 5.000 ms" perplexity -m "$WORK/fid.rwkvl" -f "$WORK/test.txt" \
  --mem-budget 512M --latency-target 1 --compute-ms 5
run_bad "latency target without a budget" "needs --mem-budget" perplexity -m "$WORK/fid.rwkvl" -f "$WORK/test.txt" --latency-target 5
run_bad "int4 without a cluster head" "needs the cluster head" perplexity -m "$WORK/q4.rwkvl" -f "$WORK/test.txt" --mem-budget 512M \
  --fidelity int4

finish
