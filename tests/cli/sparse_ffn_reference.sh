#!/usr/bin/env bash
# rwkv-lite compress --sparse-ffn on the trained reference model (RWKV-5.2 World, bf16 .pth), calibrated
# on WikiText-2 valid, evaluated on the first 20,000 WikiText-2 test tokens (text the predictors never
# saw):
#  - exact mode gives the dense model's logits within 1e-4;
#  - predict mode (the default for the file) reaches recall >= 0.99 (measured with --verify against
#    every key row) and perplexity within +2% of the dense model's 177.4278 (model README: 177.427);
#  - the FFN bytes touched per token (computed neurons' rows + predictor) are what the active share
#    implies and below dense;
#  - with --ffn-cache 25% the output is unchanged and peak RSS falls;
#  - a corrupted predictor block is rejected with a clear error.
# usage: sparse_ffn_reference.sh RWKV_LITE SHARED_DIR BUILD_DIR
. "$(dirname "$0")/lib/common.bash" "$@"
MODEL=$SHARED/reference/models/rwkv5-world-l8-d256/model.pth
TEST=$SHARED/data/wikitext2-test.txt
VALID=$SHARED/data/wikitext2-valid.txt
need_shared "$MODEL" "$TEST" "$VALID"
command -v python3 >/dev/null || { echo "skip: python3 not found"; exit 77; }
make_work sparse-ref

# Release builds check the figures of the issue (default calibration, 20,000 test tokens); sanitizer
# builds run the same paths on less data (4,096 calibration tokens, 3,000 test tokens, recall >= 0.98
# against the dense perplexity of those tokens) to stay within the test time limit.
if "$CLI" --version 2>/dev/null | grep -q "| Release |"; then
  RELEASE=1 CALIB_ARGS=() N_EVAL=20000 RECALL_MIN=0.99
else
  RELEASE=0 CALIB_ARGS=(--calib-tokens 4096) N_EVAL=3000 RECALL_MIN=0.98
fi
SP=$WORK/sparse.rwkvl
if ! "$CLI" compress -m "$MODEL" -o "$SP" --sparse-ffn --calib "$VALID" "${CALIB_ARGS[@]}" --json >"$WORK/c.json" 2>"$WORK/c.err"; then
  fail "compress --sparse-ffn: $(tail -3 "$WORK/c.err")"
  exit 1
fi
python3 - "$WORK/c.json" <<'EOF' || fail "compress report"
import json, sys
j = json.load(open(sys.argv[1]))
s = j["sparse_ffn"]
assert len(s["layers"]) == 8, s["layers"]
for l in s["layers"]:
    h = l["holdout"]
    for k in ("mlp", "bits", "ensemble"):
        assert h[k]["recall"] >= 0.9925 - 1e-9, (l["layer"], k, h[k])
    # the OR with the best thresholds is never worse than the better single predictor
    assert h["ensemble"]["active_frac"] <= min(h["mlp"]["active_frac"], h["bits"]["active_frac"]) + 1e-12
    assert h["ensemble"]["active_frac"] < 0.75, l
print("held-out ensemble active share:", " ".join("%.3f" % l["holdout"]["ensemble"]["active_frac"] for l in s["layers"]))
EOF

# exact mode == dense model, within 1e-4
TEXT="The quick brown fox jumps over the lazy dog. In 1912 the city of London"
"$CLI" logits -m "$MODEL" --text "$TEXT" -o "$WORK/dense.bin" 2>/dev/null || fail "logits dense"
for mode in exact dense; do
  "$CLI" logits -m "$SP" --ffn-mode $mode --text "$TEXT" -o "$WORK/$mode.bin" 2>/dev/null || fail "logits $mode"
  python3 - "$WORK/dense.bin" "$WORK/$mode.bin" "$mode" <<'EOF' || fail "$mode mode logits differ from dense"
import struct, sys
a = open(sys.argv[1], "rb").read(); b = open(sys.argv[2], "rb").read()
x = struct.unpack("<%df" % (len(a) // 4), a); y = struct.unpack("<%df" % (len(b) // 4), b)
d = max(abs(p - q) for p, q in zip(x, y))
assert len(x) == len(y) == 65536 and d <= 1e-4, d
print(sys.argv[3], "max |logit difference| vs dense: %.2e" % d)
EOF
done

# predict mode on unseen text
"$CLI" eval -m "$SP" --text "$TEST" --max-tokens $N_EVAL --ffn-mode dense --json >"$WORK/d.json" 2>/dev/null || fail "eval dense"
"$CLI" eval -m "$SP" --text "$TEST" --max-tokens $N_EVAL --verify --json >"$WORK/p.json" 2>"$WORK/p.err" || fail "eval predict: $(tail -3 "$WORK/p.err")"
python3 - "$WORK/p.json" "$WORK/d.json" $RECALL_MIN $RELEASE <<'EOF' || fail "predict mode figures"
import json, sys
j = json.load(open(sys.argv[1]))
dense = json.load(open(sys.argv[2]))["ppl"]
recall_min, release = float(sys.argv[3]), sys.argv[4] == "1"
if release:
    assert abs(dense - 177.4278) < 1e-3, dense  # the model README's figure
print("predict: ppl %.4f recall %.5f active %.4f value rows %.4f FFN bytes/token %.0f + predictor %.0f (dense %.0f)" % (
    j["ppl"], j["ffn_recall"], j["ffn_active_frac"], j["ffn_value_frac"], j["ffn_bytes_per_token"],
    j["ffn_predictor_bytes_per_token"], j["ffn_dense_bytes_per_token"]))
assert j["ffn_mode"] == "predict"
assert j["ffn_recall"] >= recall_min, j["ffn_recall"]
assert j["ppl"] <= dense * 1.02, (j["ppl"], dense)
assert 0 < j["ffn_active_frac"] < 1
if release:
    # the share of neurons computed: measured 0.4220 (default predictor); at least the 17.4 % the model
    # itself leaves non-zero on these tokens (mean zero share 0.8257, see below), at most 5 points above today
    assert 0.15 < j["ffn_active_frac"] <= 0.47, j["ffn_active_frac"]
# bytes: every computed neuron reads its key row, non-zero ones their value row (bf16: 512 bytes a row)
row = 256 * 2
expect = (j["ffn_active_frac"] + j["ffn_value_frac"]) * 896 * 8 * row
assert abs(j["ffn_bytes_per_token"] - expect) <= 1e-6 * expect + 1, (j["ffn_bytes_per_token"], expect)
assert j["ffn_bytes_per_token"] + j["ffn_predictor_bytes_per_token"] < j["ffn_dense_bytes_per_token"]
EOF

# the neuron cache at 25% of the FFN bytes: same output, lower peak RSS
"$CLI" eval -m "$SP" --text "$TEST" --max-tokens 3000 --json >"$WORK/nc.json" 2>/dev/null || fail "eval without cache"
"$CLI" eval -m "$SP" --text "$TEST" --max-tokens 3000 --ffn-cache 25% --json >"$WORK/c25.json" 2>"$WORK/c25.err" ||
  fail "eval --ffn-cache 25%: $(tail -3 "$WORK/c25.err")"
python3 - "$WORK/nc.json" "$WORK/c25.json" <<'EOF' || fail "cache run"
import json, sys
a = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2]))
print("no cache: ppl %.6f peak RSS %d; cache %d bytes: ppl %.6f peak RSS %d, hit rate %.4f" % (
    a["ppl"], a["peak_rss_bytes"], b["ffn_cache_bytes"], b["ppl"], b["peak_rss_bytes"], b["ffn_cache_hit_rate"]))
assert a["ppl"] == b["ppl"], (a["ppl"], b["ppl"])
ffn = a["ffn_dense_bytes_per_token"]
# the 75% of the FFN weights that stay on storage are not resident (allow a quarter of them as slack)
assert b["peak_rss_bytes"] <= a["peak_rss_bytes"] - 0.5 * ffn, (a["peak_rss_bytes"], b["peak_rss_bytes"], ffn)
EOF
"$CLI" eval -m "$SP" --text "$TEST" --max-tokens 100 --ffn-cache 4K >/dev/null 2>"$WORK/small.err" && fail "a tiny cache was accepted"
grep -q "minimum" "$WORK/small.err" || fail "tiny cache: no minimum named: $(cat "$WORK/small.err")"

# a corrupted predictor block
python3 - "$SP" "$WORK/bad.rwkvl" <<'EOF' || fail "making the corrupted file"
import json, struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
hl = struct.unpack("<Q", b[16:24])[0]
h = json.loads(b[24:24 + hl])
start = (24 + hl + 63) // 64 * 64
t = [t for t in h["tensors"] if t["name"] == "blocks.3.ffn.pred.w2"][0]
b[start + t["offset"] + t["nbytes"] // 2] ^= 0x40
open(sys.argv[2], "wb").write(b)
EOF
if "$CLI" logits -m "$WORK/bad.rwkvl" --tokens 1,2,3 -o "$WORK/x.bin" 2>"$WORK/bad.err"; then
  fail "corrupted predictor accepted"
fi
grep -q "blocks.3.ffn.pred.w2.*corrupt" "$WORK/bad.err" || fail "corrupted predictor: unclear error: $(cat "$WORK/bad.err")"

# A wider predictor (--hidden 256) skips at least the measured zero share minus 10 points on unseen text
# (stats on the first 20,000 tokens: mean zero share 0.8257, so at most 27.4 % of the neurons may be
# computed) at recall >= 0.99. Training it takes minutes under the sanitizers: Release builds only.
if [ "$RELEASE" = 1 ]; then
  W=$WORK/wide.rwkvl
  if "$CLI" compress -m "$MODEL" -o "$W" --sparse-ffn --calib "$VALID" --hidden 256 >/dev/null 2>"$WORK/w.err"; then
    "$CLI" eval -m "$W" --text "$TEST" --max-tokens 8000 --verify --json >"$WORK/w.json" 2>/dev/null || fail "eval --hidden 256"
    "$CLI" eval -m "$W" --text "$TEST" --max-tokens 8000 --ffn-mode dense --json >"$WORK/wd.json" 2>/dev/null || fail "eval dense 8000"
    python3 - "$WORK/w.json" "$WORK/wd.json" <<'EOF' || fail "--hidden 256 figures"
import json, sys
j = json.load(open(sys.argv[1]))
dense_ppl = json.load(open(sys.argv[2]))["ppl"]  # the same 8,000 tokens, every neuron
print("hidden 256: ppl %.4f recall %.5f active %.4f, FFN %.0f + predictor %.0f bytes/token (dense %.0f)" % (
    j["ppl"], j["ffn_recall"], j["ffn_active_frac"], j["ffn_bytes_per_token"], j["ffn_predictor_bytes_per_token"],
    j["ffn_dense_bytes_per_token"]))
assert j["ffn_recall"] >= 0.99, j["ffn_recall"]
assert j["ppl"] <= dense_ppl * 1.02, (j["ppl"], dense_ppl)
assert j["ffn_active_frac"] <= 1 - (0.8257 - 0.10), j["ffn_active_frac"]
assert j["ffn_bytes_per_token"] + j["ffn_predictor_bytes_per_token"] < j["ffn_dense_bytes_per_token"]
EOF
  else
    fail "compress --hidden 256: $(tail -3 "$WORK/w.err")"
  fi
else
  echo "skip the --hidden 256 check: not a Release build"
fi

finish "sparse_ffn_reference: ok"
