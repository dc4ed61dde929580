#!/usr/bin/env bash
# bench -o md|csv|json: llama-bench's table (pp512 / tg128 rows by default, t/s = mean ± sample sd over -r runs),
# checked for its shape and, from the JSON samples, its arithmetic (recomputed here in Python).
# usage: bench_table.sh RWKV_LITE SHARED_DIR BUILD_DIR
. "$(dirname "$0")/lib/common.bash" "$@"
MODEL=$SHARED/reference/tiny-rwkv/tiny-rwkv-5v2-730K-FP32.bin
need_shared "$MODEL"
command -v python3 >/dev/null || { echo "skip: python3 missing"; exit 77; }
make_work bench_table
"$CLI" bench -m "$MODEL" -t 1 -o md -r 2 --no-bandwidth >"$WORK/md" 2>&1 || fail "bench -o md exited with $?"
grep -q '^| model | size | params | backend | threads | test | t/s | bytes/token | bandwidth % |$' "$WORK/md" \
  && echo "ok   markdown header" || fail "markdown header: $(head -1 "$WORK/md")"
grep -Eq '^\| rwkv5\.2 0\.0B F32 \| 2\.79 MiB \| 0\.73 M \| CPU \| 1 \| pp512 \| [0-9.]+ ± [0-9.]+ \| - \| - \|$' "$WORK/md" \
  && echo "ok   pp512 row" || fail "pp512 row: $(grep pp512 "$WORK/md")"
grep -Eq '^\| rwkv5\.2 0\.0B F32 \| 2\.79 MiB \| 0\.73 M \| CPU \| 1 \| tg128 \| [0-9.]+ ± [0-9.]+ \| 2\.73 MiB \| - \|$' "$WORK/md" \
  && echo "ok   tg128 row" || fail "tg128 row: $(grep tg128 "$WORK/md")"
"$CLI" bench -m "$MODEL" -t 1 -o json -r 3 -p 64 -n 16 >"$WORK/json" 2>"$WORK/json.err" || fail "bench -o json exited with $?"
"$CLI" bench -m "$MODEL" -t 1 -o csv -r 2 -p 64 -n 16 --no-bandwidth >"$WORK/csv" 2>&1 || fail "bench -o csv exited with $?"
python3 - "$WORK/json" "$WORK/csv" <<'PY' || fail "json/csv figures"
import csv, json, math, sys
rows = json.load(open(sys.argv[1]))
assert [r["test"] for r in rows] == ["pp64", "tg16"], rows
for r in rows:
    s = r["samples_ts"]
    assert len(s) == 3
    mean = sum(s) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in s) / 2)
    assert abs(r["avg_ts"] - mean) <= 1e-9 * mean and abs(r["stddev_ts"] - sd) <= 1e-6 * max(sd, 1), r
assert rows[0]["bandwidth_pct"] is None and 0 < rows[1]["bandwidth_pct"] < 1000, rows
assert rows[1]["bytes_per_token"] == 2862336 and rows[0]["model_n_params"] == 731904
c = list(csv.DictReader(open(sys.argv[2])))
assert [r["test"] for r in c] == ["pp64", "tg16"] and all(float(r["avg_ts"]) > 0 for r in c), c
print("ok   json and csv: mean and sample sd of the runs, bytes per token, params")
PY
"$CLI" bench -m "$MODEL" -o md --json >/dev/null 2>&1
[ $? -eq 2 ] && echo "ok   -o and --json together: usage error" || fail "-o with --json should exit 2"
finish
