#!/usr/bin/env bash
# rwkv-lite compress --prune on the tiny byte-level RWKV-5.2 model: magnitude / wanda / dsnot files run; 2:4 is stored
# packed (f16_2of4, 0.5625x the f16 bytes) and unstructured 50 % masked (f16_masked), each giving the logits of the same
# pruned matrices stored dense; with --quant int8 the kept values of either are stored as i8_masked and give the logits
# of the dense int8 matrices with their zeros (the same row scales); pruning composes with the sparse FFN; every bad
# request fails with a message, a non-zero exit and no output file.
# usage: prune_tiny.sh RWKV_LITE SHARED_DIR BUILD_DIR
. "$(dirname "$0")/lib/common.bash" "$@"
MODEL=$SHARED/reference/tiny-rwkv/tiny-rwkv-5v2-730K-FP32.bin
TEXT=$SHARED/data/wikitext2-valid.txt
need_shared "$MODEL" "$TEXT"
PY=""
for p in /usr/bin/python3 python3; do "$p" -c "import numpy" 2>/dev/null && { PY=$p; break; }; done
[ -n "$PY" ] || { echo "skip: no python3 with numpy"; exit 77; }
make_work prune
head -c 6000 "$TEXT" >"$WORK/calib.txt"  # byte-level: 6,000 calibration tokens

ok_run() {  # ok_run NAME CMD...
  local name=$1
  shift
  if "$@" >"$WORK/out.txt" 2>"$WORK/err.txt"; then echo "ok   $name"; else fail "$name: $(tail -3 "$WORK/err.txt")"; fi
}
bad_run() {  # bad_run NAME OUT NEEDLE CMD...: must fail, say NEEDLE, leave no OUT
  local name=$1 out=$2 needle=$3
  shift 3
  if "$@" >"$WORK/out.txt" 2>"$WORK/err.txt"; then
    fail "$name: accepted"
  elif ! grep -qF -- "$needle" "$WORK/err.txt"; then
    fail "$name: the message does not say '$needle': $(tail -2 "$WORK/err.txt")"
  elif [ -e "$out" ]; then
    fail "$name: left $out behind"
  else
    echo "ok   $name: $(grep -F -- "$needle" "$WORK/err.txt" | head -1)"
  fi
}
C="$CLI compress -m $MODEL -t 2"
for m in magnitude wanda dsnot; do
  ok_run "$m 50%" $C -o "$WORK/$m.rwkvl" --prune $m --sparsity 0.5 --calib "$WORK/calib.txt" --json
  "$PY" - "$WORK/out.txt" $m <<'PY' || fail "$m: report"
import json, sys
j = json.load(open(sys.argv[1]))
p = j["prune"]
assert p["zeros"] * 2 == p["weights"], (p["zeros"], p["weights"])
assert p["pass"]["prune"]["method"] == sys.argv[2]
print(f"ok   {sys.argv[2]}: {p['zeros']} of {p['weights']} weights zero, {len(p['matrices'])} matrices")
PY
  ok_run "$m file runs" "$CLI" logits -m "$WORK/$m.rwkvl" --tokens 72,101,108,108,111 -o "$WORK/$m.f32"
done
# The same pruned values stored packed and dense: from an f16 copy of the model, so only the storage differs.
ok_run "f16 copy" "$CLI" convert -m "$MODEL" -o "$WORK/f16.rwkvl" --dtype f16
ok_run "2:4 packed" "$CLI" compress -m "$WORK/f16.rwkvl" -t 2 -o "$WORK/p24.rwkvl" --prune wanda --pattern 2:4 --calib "$WORK/calib.txt" --json
cp "$WORK/out.txt" "$WORK/p24.json"
ok_run "2:4 dense" "$CLI" compress -m "$WORK/f16.rwkvl" -t 2 -o "$WORK/d24.rwkvl" --prune wanda --pattern 2:4 --prune-store dense \
  --calib "$WORK/calib.txt"
for f in p24 d24; do ok_run "$f logits" "$CLI" logits -m "$WORK/$f.rwkvl" --tokens 72,101,108,108,111,32,119 -o "$WORK/$f.f32"; done
"$PY" - "$WORK/p24.json" "$WORK/p24.f32" "$WORK/d24.f32" "$WORK/p24.rwkvl" "$WORK/d24.rwkvl" <<'PY' || fail "2:4 packed"
import json, os, sys, numpy as np
j = json.load(open(sys.argv[1]))
for m in j["prune"]["matrices"]:
    assert m["dtype"] == "f16_2of4" and m["bytes_after"] * 64 == m["bytes_before"] * 36, m  # 0.5625x f16
a, b = np.fromfile(sys.argv[2], "<f4"), np.fromfile(sys.argv[3], "<f4")
d = float(abs(a - b).max())
assert a.size == b.size and d <= 1e-4 * max(1.0, float(abs(b).max())), d
saved = os.path.getsize(sys.argv[5]) - os.path.getsize(sys.argv[4])
want = sum(m["bytes_before"] - m["bytes_after"] for m in j["prune"]["matrices"])
assert abs(saved - want) < 4096 * len(j["prune"]["matrices"]), (saved, want)
print(f"ok   2:4 packed = the same matrices stored dense: max |logit diff| {d:.2g}; file {saved} bytes smaller "
      f"({len(j['prune']['matrices'])} matrices at 0.5625x their f16 bytes)")
PY
# Unstructured 50 %: masked (a bit per column + the kept f16 values) against dense, then int8 on the kept values against
# int8 with the zeros in place. Wanda keeps exactly half of every row, so the masked bytes are rows * (cols/8 + cols).
ok_run "50% masked" "$CLI" compress -m "$WORK/f16.rwkvl" -t 2 -o "$WORK/pm.rwkvl" --prune wanda --sparsity 0.5 --calib "$WORK/calib.txt" --json
cp "$WORK/out.txt" "$WORK/pm.json"
ok_run "50% dense" "$CLI" compress -m "$WORK/f16.rwkvl" -t 2 -o "$WORK/dm.rwkvl" --prune wanda --sparsity 0.5 --prune-store dense --calib "$WORK/calib.txt"
ok_run "masked + int8" "$CLI" compress -m "$WORK/pm.rwkvl" -t 2 -o "$WORK/pmq.rwkvl" --quant int8 --json
cp "$WORK/out.txt" "$WORK/pmq.json"
ok_run "dense + int8" "$CLI" compress -m "$WORK/dm.rwkvl" -t 2 -o "$WORK/dmq.rwkvl" --quant int8
ok_run "2:4 + int8" $C -o "$WORK/p24q.rwkvl" --prune wanda --pattern 2:4 --calib "$WORK/calib.txt" --quant int8 --json
cp "$WORK/out.txt" "$WORK/p24q.json"
ok_run "masked + int4" "$CLI" compress -m "$WORK/pm.rwkvl" -t 2 -o "$WORK/pmq4.rwkvl" --quant int4
for f in pm dm pmq dmq p24q pmq4; do ok_run "$f logits" "$CLI" logits -m "$WORK/$f.rwkvl" --tokens 72,101,108,108,111,32,119 -o "$WORK/$f.f32"; done
ok_run "info on masked int8" "$CLI" info -m "$WORK/pmq.rwkvl"
grep -q "i8_masked" "$WORK/out.txt" || fail "info does not name i8_masked: $(head -5 "$WORK/out.txt")"
"$PY" - "$WORK" <<'PY' || fail "masked"
import json, os, sys, numpy as np
w = sys.argv[1]
L = lambda f: np.fromfile(f"{w}/{f}.f32", "<f4")
def close(a, b, tol, what):
    d = float(abs(L(a) - L(b)).max())
    assert d <= tol * max(1.0, float(abs(L(b)).max())), (what, d)
    return d
j = json.load(open(f"{w}/pm.json"))
for m in j["prune"]["matrices"]:
    assert m["dtype"] == "f16_masked", m
    assert m["bytes_after"] == m["rows"] * (m["cols"] // 8 + m["cols"]), m  # 9 bits per weight: 0.5625x f16
d1 = close("pm", "dm", 1e-4, "masked vs dense")
q = json.load(open(f"{w}/pmq.json"))
qm = [m for m in q["matrices"] if m.get("dtype") == "i8_masked"]
assert len(qm) == len(j["prune"]["matrices"]), [m.get("dtype") for m in q["matrices"]]
for m in qm:
    assert m["bytes_after"] == m["rows"] * (m["cols"] // 8 + m["cols"] // 2) + 2 * m["rows"], m  # + f16 row scales
d2 = close("pmq", "dmq", 1e-4, "i8_masked vs dense int8")
t = json.load(open(f"{w}/p24q.json"))
assert any(m.get("dtype") == "i8_masked" for m in t["matrices"]), t["matrices"]
d3 = close("pmq4", "dm", 0.5, "int4 kept values vs f16")  # int4 moves logits; the file must still make sense
print(f"ok   50% masked = dense: {d1:.2g}; i8_masked = dense int8: {d2:.2g} (5 bits/weight vs 8); 2:4 + int8 masked; "
      f"q4_masked within {d3:.2g}; file sizes pm {os.path.getsize(f'{w}/pm.rwkvl')} dm {os.path.getsize(f'{w}/dm.rwkvl')} "
      f"pmq {os.path.getsize(f'{w}/pmq.rwkvl')} dmq {os.path.getsize(f'{w}/dmq.rwkvl')}")
PY
ok_run "prune + sparse FFN" $C -o "$WORK/ps.rwkvl" --prune wanda --pattern 2:4 --calib "$WORK/calib.txt" --sparse-ffn --epochs 1
ok_run "prune + sparse FFN runs" "$CLI" logits -m "$WORK/ps.rwkvl" --tokens 72,101,108 -o "$WORK/ps.f32"

O=$WORK/bad.rwkvl
bad_run "sparsity 1" "$O" "(0, 1)" $C -o "$O" --prune magnitude --sparsity 1
bad_run "sparsity 0" "$O" "sparsity" $C -o "$O" --prune magnitude --sparsity 0
bad_run "sparsity -1" "$O" "sparsity" $C -o "$O" --prune magnitude --sparsity -1
bad_run "pattern 4:4" "$O" "below M" $C -o "$O" --prune magnitude --pattern 4:4
bad_run "pattern 5:4" "$O" "below M" $C -o "$O" --prune magnitude --pattern 5:4
bad_run "pattern x" "$O" "N:M" $C -o "$O" --prune magnitude --pattern 2-4
bad_run "pattern vs sparsity" "$O" "contradicts" $C -o "$O" --prune magnitude --pattern 2:4 --sparsity 0.3
bad_run "wanda without calib" "$O" "calibration" $C -o "$O" --prune wanda --sparsity 0.5
bad_run "no sparsity" "$O" "--sparsity" $C -o "$O" --prune magnitude
bad_run "dsnot flag without dsnot" "$O" "needs --prune dsnot" $C -o "$O" --prune wanda --sparsity 0.5 --dsnot-cycles 3 --calib "$WORK/calib.txt"
bad_run "sparsity without prune" "$O" "needs --prune" $C -o "$O" --sparsity 0.5 --quant int8
bad_run "pruned twice (masked)" "$O" "already pruned" "$CLI" compress -m "$WORK/pm.rwkvl" -o "$O" --prune magnitude --sparsity 0.3
bad_run "pruned twice" "$O" "already pruned" "$CLI" compress -m "$WORK/magnitude.rwkvl" -o "$O" --prune magnitude --sparsity 0.3
bad_run "pruned twice (2:4)" "$O" "already pruned" "$CLI" compress -m "$WORK/p24.rwkvl" -o "$O" --prune magnitude --sparsity 0.3
bad_run "prune the factored" "$O" "factored" "$CLI" compress -m "$MODEL" -o "$O" --prune magnitude --sparsity 0.5 --lowrank svd --rank-frac 0.25
finish
