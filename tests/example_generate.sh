#!/usr/bin/env bash
# examples/generate.c against the CLI on the tiny byte-level RWKV-5.2 model: the example exits 0 (its own
# state save/restore check passed) and prints exactly what `rwkv-lite generate --temp 0` prints, for a
# few prompts and lengths.
# usage: example_generate.sh EXAMPLE RWKV_LITE SHARED_DIR BUILD_DIR
# RWKVL_EMULATOR (optional): a command to run target binaries with (cross builds: qemu-aarch64 ...).
# Kept out of tests/cli/ (those run the CLI alone); registered by examples/CMakeLists.txt.
set -u
EXAMPLE=$1
CLI=$2
SHARED=${3:-}
BUILD=${4:-${TMPDIR:-/tmp}}
MODEL=$SHARED/reference/tiny-rwkv/tiny-rwkv-5v2-730K-FP32.bin
if [ ! -f "$MODEL" ]; then
  echo "skip: $MODEL not found"
  exit 77
fi
read -r -a EMU <<<"${RWKVL_EMULATOR:-}"
WORK=$(mktemp -d "${BUILD%/}/example-generate.XXXXXX") || exit 1
trap 'rm -rf "$WORK"' EXIT
failures=0
fail() {
  echo "FAIL $*"
  failures=$((failures + 1))
}

check() {  # check NAME PROMPT N
  local name=$1 prompt=$2 n=$3
  if ! "${EMU[@]}" "$EXAMPLE" "$MODEL" "$prompt" "$n" "$WORK/$name.state" 2 >"$WORK/$name.ex" 2>"$WORK/$name.ex.err"; then
    fail "$name: the example exited with $?"
    sed 's/^/     /' "$WORK/$name.ex.err" | tail -5
    return
  fi
  if [ -e "$WORK/$name.state" ]; then fail "$name: the example left its state file behind"; fi
  if ! grep -q "state saved and restored" "$WORK/$name.ex.err"; then fail "$name: no state check reported"; fi
  if ! "${EMU[@]}" "$CLI" generate -m "$MODEL" -p "$prompt" -n "$n" --temp 0 -t 2 >"$WORK/$name.cli" 2>"$WORK/$name.cli.err"; then
    fail "$name: rwkv-lite generate exited with $?"
    sed 's/^/     /' "$WORK/$name.cli.err" | tail -5
    return
  fi
  if [ "$n" -gt 0 ] && [ ! -s "$WORK/$name.cli" ]; then fail "$name: rwkv-lite generate printed nothing"; fi
  if cmp -s "$WORK/$name.ex" "$WORK/$name.cli"; then
    echo "ok   $name: $(wc -c <"$WORK/$name.ex") identical bytes"
  else
    fail "$name: the example and rwkv-lite generate print different text"
    od -c "$WORK/$name.ex" | head -3
    od -c "$WORK/$name.cli" | head -3
  fi
}

check fox "The quick brown fox" 48
check one "A" 1
check long "In a shocking finding, scientists discovered a herd of dragons living in a remote valley." 200

# Errors come back as a non-zero exit with the library's message.
if "${EMU[@]}" "$EXAMPLE" "$WORK/missing.bin" "x" 4 "$WORK/e.state" 2 >/dev/null 2>"$WORK/err.txt"; then
  fail "a missing model exited 0"
elif ! grep -q "missing.bin" "$WORK/err.txt"; then
  fail "a missing model: the message does not name the file"
  sed 's/^/     /' "$WORK/err.txt"
else
  echo "ok   missing model: $(head -1 "$WORK/err.txt")"
fi

if [ "$failures" -ne 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "all ok"
