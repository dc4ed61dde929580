#!/usr/bin/env bash
# GGUF both ways on the tiny RWKV-6 and RWKV-7 models: files written by `convert --format gguf` and by an independent
# writer (tests/scripts/gguf_writer.py: llama.cpp's layout, every tensor type) give the rwkv.cpp file's logits (F32,
# F16, BF16 within 1e-5) or their own dequantised values' logits (quantised types); the @huggingface/gguf reader
# parses them with the expected metadata and tensor list; damaged files get clear errors; a World vocabulary
# travels inside the file.
# usage: gguf_tiny.sh RWKV_LITE SHARED_DIR BUILD_DIR
. "$(dirname "$0")/lib/common.bash" "$@"
T=$SHARED/reference/tiny-rwkv
need_shared "$T/tiny-rwkv-6v0-1m-FP32.bin" "$T/tiny-rwkv-7v0-834K-FP32.bin"
PY=""
for p in /usr/bin/python3 python3; do "$p" -c "import numpy" 2>/dev/null && { PY=$p; break; }; done
[ -n "$PY" ] || { echo "skip: no python3 with numpy (scripts/install-deps.sh --test installs python3-numpy)"; exit 77; }
WRITER=$(dirname "$0")/../scripts/gguf_writer.py
NODE_DIR=$(cd "$(dirname "$0")/../node" && pwd)
make_work gguf_tiny
cmp_logits() {  # cmp_logits A B TOL WHAT
  "$PY" - "$1" "$2" "$3" "$4" <<'PY' || fail "$4"
import sys, numpy as np
a, b = np.fromfile(sys.argv[1], "<f4"), np.fromfile(sys.argv[2], "<f4")
d = float(abs(a - b).max()) if a.size == b.size and a.size else float("inf")
print(f"{'ok  ' if d <= float(sys.argv[3]) else 'FAIL'} {sys.argv[4]}: max |diff| {d:.3g} (tolerance {sys.argv[3]})")
sys.exit(0 if d <= float(sys.argv[3]) else 1)
PY
}
logits() { "$CLI" logits -m "$1" --tokens 34,105,110 -o "$2" -t 1 >/dev/null 2>"$2.err" || { fail "logits of $1: $(cat "$2.err")"; : >"$2"; }; }
node_files=()
for v in 6v0-1m:rwkv6:12 7v0-834K:rwkv7:12; do
  IFS=: read -r ver arch layers <<<"$v"
  SRC=$T/tiny-rwkv-$ver-FP32.bin
  EXP=$T/expected-logits-$ver.bin
  # The project's writer, then reading it back.
  for d in f32:1e-5 f16:2e-3 bf16:3e-2 i8:0.2 q4:1.5; do
    IFS=: read -r dt tol <<<"$d"
    "$CLI" convert -m "$SRC" -o "$WORK/$ver-$dt.gguf" --format gguf --dtype $dt 2>"$WORK/err" || fail "convert --format gguf --dtype $dt: $(cat "$WORK/err")"
    logits "$WORK/$ver-$dt.gguf" "$WORK/l"
    cmp_logits "$WORK/l" "$EXP" "$tol" "$ver: our GGUF ($dt) vs the rwkv.cpp file's expected logits"
  done
  for dt in f32 f16 bf16 i8 q4; do node_files+=("$WORK/$ver-$dt.gguf" "$arch" "$layers"); done
  # The independent writer, every type; v6 with llama.cpp's rescaling every 6 layers.
  for t in f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q5_k q6_k; do
    "$PY" "$WRITER" "$SRC" "$WORK/py.gguf" --type $t --rescale 6 --dequant "$WORK/py-dq.gguf" || { fail "gguf_writer.py --type $t"; continue; }
    logits "$WORK/py.gguf" "$WORK/lq"
    logits "$WORK/py-dq.gguf" "$WORK/ld"
    case $t in f32|f16|bf16|q4_0|q4_1) tol=1e-5 ;; *) tol=1e-2 ;; esac  # Q5/Q8/K types are held as f16 after loading
    cmp_logits "$WORK/lq" "$WORK/ld" $tol "$ver: llama.cpp-layout GGUF ($t) vs the same values as F32"
    [ $t = f32 ] && cmp_logits "$WORK/lq" "$EXP" 1e-5 "$ver: llama.cpp-layout GGUF (f32, rescaled layers) vs expected logits"
    cp "$WORK/py.gguf" "$WORK/$ver-py-$t.gguf" && node_files+=("$WORK/$ver-py-$t.gguf" "$arch" "$layers")
  done
done

# An independent reader, over every file written above.
if command -v node >/dev/null && [ -d "$NODE_DIR/node_modules/@huggingface/gguf" ]; then
  node "$NODE_DIR/gguf_check.mjs" "${node_files[@]}" || fail "@huggingface/gguf reading the files"
else
  fail "node or @huggingface/gguf missing (scripts/install-deps.sh --test)"
fi

# Damaged files: clear errors, exit 1, never a crash.
F=$WORK/7v0-834K-f32.gguf
SIZE=$(stat -c %s "$F")
for cut in 3 20 100 1000 $((SIZE / 2)) $((SIZE - 1)); do
  head -c $cut "$F" >"$WORK/cut.gguf"
  out=$("$CLI" info -m "$WORK/cut.gguf" 2>&1); rc=$?
  if [ $rc -eq 1 ] && grep -q "error:" <<<"$out"; then echo "ok   truncated at $cut bytes: $(tail -1 <<<"$out" | cut -c1-110)"; else fail "truncated at $cut: exit $rc: $out"; fi
done
"$PY" - "$F" "$WORK" <<'PY'
import struct, sys
data = bytearray(open(sys.argv[1], "rb").read())
def patched(name, off, fmt, value):
    d = bytearray(data); struct.pack_into(fmt, d, off, value); open(f"{sys.argv[2]}/{name}.gguf", "wb").write(d)
patched("version1", 4, "<I", 1)
patched("huge_tensor_count", 8, "<Q", 1 << 60)
patched("huge_kv_count", 16, "<Q", 1 << 60)
patched("huge_key_length", 24, "<Q", 1 << 62)
PY
for bad in version1 huge_tensor_count huge_kv_count huge_key_length; do
  out=$("$CLI" info -m "$WORK/$bad.gguf" 2>&1); rc=$?
  if [ $rc -eq 1 ] && grep -q "error:" <<<"$out"; then echo "ok   $bad: $(cut -c1-110 <<<"$out")"; else fail "$bad: exit $rc: $out"; fi
done
# v5 models have no llama.cpp architecture: a clear refusal.
if "$CLI" convert -m "$T/tiny-rwkv-5v2-730K-FP32.bin" -o "$WORK/v5.gguf" --format gguf >/dev/null 2>"$WORK/err"; then
  fail "a v5 model was written as GGUF"
else
  grep -q "RWKV-6 and RWKV-7" "$WORK/err" && echo "ok   v5 refused: $(cat "$WORK/err")" || fail "v5: $(cat "$WORK/err")"
fi

# A World-vocabulary model: the vocabulary travels inside the file (no tokenizer file needed to read it).
VOCAB=$SHARED/reference/tokenizers/rwkv_vocab_v20230424.txt
if have_shared "$VOCAB"; then
  "$CLI" synth -o "$WORK/w.rwkvl" --arch 7 --layers 2 --embd 64 --vocab 65536 >/dev/null 2>&1
  RWKVL_TOKENIZER_DIR=$SHARED/reference/tokenizers "$CLI" convert -m "$WORK/w.rwkvl" -o "$WORK/w.gguf" --format gguf --dtype f16 2>/dev/null \
    || fail "convert a World model to GGUF"
  TEXT='Hello, 世界! The tokenizer travels with the file.'
  want=$(RWKVL_TOKENIZER_DIR=$SHARED/reference/tokenizers "$CLI" tokenize -m "$WORK/w.rwkvl" -p "$TEXT" 2>&1)
  got=$(RWKVL_TOKENIZER_DIR=/nonexistent "$CLI" tokenize -m "$WORK/w.gguf" -p "$TEXT" 2>&1)
  [ -n "$want" ] && [ "$got" = "$want" ] && echo "ok   the embedded World vocabulary tokenizes as the vocabulary file: $got" \
    || fail "embedded vocabulary: '$got' vs '$want'"
fi
finish
