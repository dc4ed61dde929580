#!/usr/bin/env bash
# rwkv-lite stats: the share of zero FFN neurons per layer on the reference model over the first 20,000
# WikiText-2 test tokens must equal the figures its README states (computed in PyTorch); JSON keys,
# the plot (when gnuplot is installed) and error cases.
# usage: stats_reference.sh RWKV_LITE SHARED_DIR BUILD_DIR
. "$(dirname "$0")/lib/common.bash" "$@"
MODEL=$SHARED/reference/models/rwkv5-world-l8-d256/model.pth
TEXT=$SHARED/data/wikitext2-test.txt
need_shared "$MODEL" "$TEXT"
command -v python3 >/dev/null || { echo "skip: python3 not found"; exit 77; }
make_work stats

plot_args=()
command -v gnuplot >/dev/null && plot_args=(--plot "$WORK/sparsity.svg")
if "$CLI" stats -m "$MODEL" --text "$TEXT" --max-tokens 20000 --json --out "$WORK/out.json" "${plot_args[@]}" \
  >"$WORK/stats.json" 2>"$WORK/err.txt"; then
  # Reference: shared/reference/models/rwkv5-world-l8-d256/README.md (layers 0-7).
  if python3 - "$WORK/stats.json" "$WORK/out.json" <<'PY'; then echo "ok   zero shares match the README"; else fail "zero shares"; fi
import json, sys
ref = [0.756, 0.825, 0.845, 0.839, 0.859, 0.859, 0.848, 0.776]
j = json.load(open(sys.argv[1]))
assert j == json.load(open(sys.argv[2])), "--out differs from stdout"
assert j["tokens"] == 20000 and j["n_ffn"] == 896, j
for L, r in zip(j["layers"], ref):
    got = L["zero_frac_mean"]
    print(f"     layer {L['layer']}: {got:.4f} (README {r})")
    assert abs(got - r) <= 0.0006, (L["layer"], got, r)
    assert L["zero_frac_p10"] <= L["zero_frac_p50"] <= L["zero_frac_p90"]
    assert 0 < L["neurons_90"] <= L["neurons_99"] <= 896
PY
  [ -s "$WORK/out.json" ] && echo "ok   --out written" || fail "--out not written"
  if ((${#plot_args[@]})); then
    grep -q "<svg" "$WORK/sparsity.svg" 2>/dev/null && echo "ok   plot drawn" || fail "no svg plot"
  fi
else
  fail "stats exited with an error: $(cat "$WORK/err.txt")"
fi

printf '' >"$WORK/empty.txt"
for case in "no text|--max-tokens 10" "empty text|--text $WORK/empty.txt" "missing text|--text $WORK/nope.txt"; do
  name=${case%%|*}
  # shellcheck disable=SC2086
  if "$CLI" stats -m "$MODEL" ${case#*|} >/dev/null 2>"$WORK/err.txt"; then
    fail "$name: succeeded"
  else
    echo "ok   $name: $(head -1 "$WORK/err.txt")"
  fi
done

finish
