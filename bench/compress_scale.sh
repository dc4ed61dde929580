#!/usr/bin/env bash
# Compression at the sizes people run (issue #19): time, peak resident memory and per-stage seconds of
# `rwkv-lite compress` with the paper's full recipe on a random model of a real shape, for this build and
# (optionally) a baseline build, alternating, in one run, side by side.
#
# usage: bench/compress_scale.sh [options]
#   --cli PATH           rwkv-lite under test (default build/rwkv-lite)
#   --baseline PATH      a second rwkv-lite to compare against (e.g. one built from an older commit)
#   --baseline-commit C  build that baseline from commit C first (Release, in $WORK/baseline-C)
#   --shape 0.1b|0.4b|1.5b|2.9b   model shape (default 0.1b: RWKV-7, L12 D768 V65536, f16)
#   --runs N             runs per binary (default 1), alternated
#   --work DIR           scratch folder for the models and outputs (default /tmp/rwkvl-compress-scale)
#   --calib FILE         calibration text (default ../shared/data/wikitext2-valid.txt)
#   --extra "ARGS"       more compress flags (e.g. "--mem-budget 4G")
# Prints for each run: wall seconds, peak RSS (MiB, /usr/bin/time), the report's stage seconds, the output's
# SHA-256; then whether the outputs of both binaries are byte-identical.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLI=$ROOT/build/rwkv-lite
BASE=""
BASE_COMMIT=""
SHAPE=0.1b
RUNS=1
WORK=/tmp/rwkvl-compress-scale
CALIB=$ROOT/../shared/data/wikitext2-valid.txt
EXTRA=""
while (($#)); do
  case "$1" in
    --cli) CLI=$2; shift ;;
    --baseline) BASE=$2; shift ;;
    --baseline-commit) BASE_COMMIT=$2; shift ;;
    --shape) SHAPE=$2; shift ;;
    --runs) RUNS=$2; shift ;;
    --work) WORK=$2; shift ;;
    --calib) CALIB=$2; shift ;;
    --extra) EXTRA=$2; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "compress_scale: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ -x /usr/bin/time ]] || { echo "compress_scale: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }
[[ -f $CALIB ]] || { echo "compress_scale: no calibration text at $CALIB" >&2; exit 1; }
mkdir -p "$WORK"
# The World tokenizer for every binary (a baseline built elsewhere does not find it beside itself).
export RWKVL_TOKENIZER_DIR=${RWKVL_TOKENIZER_DIR:-$ROOT/../shared/reference/tokenizers}

if [[ -n $BASE_COMMIT ]]; then
  BDIR=$WORK/baseline-$BASE_COMMIT
  if [[ ! -x $BDIR/build/rwkv-lite ]]; then
    rm -rf "$BDIR"
    git -C "$ROOT" worktree add --detach "$BDIR" "$BASE_COMMIT" >/dev/null
    cmake -S "$BDIR" -B "$BDIR/build" -DCMAKE_BUILD_TYPE=Release -DRWKVL_BUILD_TESTS=OFF -DRWKVL_BUILD_BENCH=OFF \
      -DRWKVL_BUILD_EXAMPLES=OFF >/dev/null
    cmake --build "$BDIR/build" -j"$(nproc)" --target rwkv-lite >/dev/null
  fi
  BASE=$BDIR/build/rwkv-lite
fi

case $SHAPE in
  0.1b) L=12 D=768 ;;
  0.4b) L=24 D=1024 ;;
  1.5b) L=24 D=2048 ;;
  2.9b) L=32 D=2560 ;;
  *) echo "compress_scale: unknown shape $SHAPE" >&2; exit 2 ;;
esac
MODEL=$WORK/synth-$SHAPE-f16.rwkvl
if [[ ! -f $MODEL ]]; then
  echo "writing $MODEL (RWKV-7, L$L D$D V65536, f16)"
  "$CLI" synth -o "$MODEL" --arch 7 --layers $L --embd $D --vocab 65536 --dtype f16 --seed 1 >/dev/null
fi
RECIPE=(--lowrank asvd --rank-frac 0.25 --quant int8 --quant-emb --quant-head --sparse-ffn --cluster-head 200
        --calib "$CALIB")
echo "model: $MODEL ($(stat -c %s "$MODEL") bytes); recipe: ${RECIPE[*]} $EXTRA"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"

run_one() {  # label binary -> prints a line, leaves $WORK/out-label.rwkvl
  local label=$1 bin=$2 out=$WORK/out-$1.rwkvl
  rm -f "$out"
  # shellcheck disable=SC2086
  /usr/bin/time -f "%e %M" -o "$WORK/time-$label.txt" "$bin" compress -m "$MODEL" -o "$out" "${RECIPE[@]}" $EXTRA \
    --json >"$WORK/report-$label.json" 2>"$WORK/err-$label.txt" || { echo "$label: compress failed:"; tail -5 "$WORK/err-$label.txt"; return 1; }
  python3 - "$label" "$WORK/time-$label.txt" "$WORK/report-$label.json" "$out" <<'EOF'
import hashlib, json, sys
label, tf, rf, out = sys.argv[1:5]
wall, rss_kb = open(tf).read().split()[-2:]
rep = json.load(open(rf))
st = rep.get("stages", {})
pk = rep.get("stages_peak_rss_bytes", {})
h = hashlib.sha256()
with open(out, "rb") as f:
    for b in iter(lambda: f.read(1 << 20), b""):
        h.update(b)
stages = " ".join(f"{k} {v:.1f}" for k, v in st.items() if isinstance(v, (int, float)))
peaks = " ".join(f"{k} {v / 2**20:.0f}" for k, v in pk.items())
print(f"{label:>9}: wall {float(wall):7.1f} s  peak RSS {int(rss_kb)/1024:8.1f} MiB  sha256 {h.hexdigest()[:16]}")
print(f"{'':>9}  stage seconds: {stages}")
if peaks:
    print(f"{'':>9}  peak RSS (MiB) at the end of: {peaks}")
plan = rep.get("plan", {})
if plan:
    ps = " ".join(f"{k} {v['peak_bytes'] / 2**20:.0f}" for k, v in plan.get("stages", {}).items())
    print(f"{'':>9}  planned peak (MiB): {plan['peak_bytes'] / 2**20:.0f} ({ps}; {plan['sparse_parallel_layers']} predictor layers side by side)")
EOF
}

for ((i = 1; i <= RUNS; i++)); do
  [[ -n $BASE ]] && run_one baseline "$BASE"
  run_one current "$CLI"
done
if [[ -n $BASE ]]; then
  if cmp -s "$WORK/out-baseline.rwkvl" "$WORK/out-current.rwkvl"; then
    echo "outputs: byte-identical"
  else
    echo "outputs: differ (compare perplexity on the reference model with the same recipe)"
  fi
fi
