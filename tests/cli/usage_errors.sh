#!/usr/bin/env bash
# Bad command lines and bad inputs: each must exit non-zero without crashing (exit code < 128), with a
# message on stderr that says what is wrong. Usage errors exit 2 with a one-line message.
# usage: usage_errors.sh RWKV_LITE SHARED_DIR BUILD_DIR
. "$(dirname "$0")/lib/common.bash" "$@"
make_work usage

# expect WANT WORD ARGS...: WANT is an exit code, or "nz" for any failure below 128. WORD is an
# extended regex (case-insensitive) that stderr must match.
expect() {
  local want=$1 word=$2
  shift 2
  "$CLI" "$@" >"$WORK/stdout" 2>"$WORK/stderr" </dev/null
  local rc=$? ok=1 why=""
  if [ "$want" = nz ]; then
    if [ $rc -eq 0 ] || [ $rc -ge 128 ]; then ok=0; why="exit code $rc"; fi
  elif [ $rc -ne "$want" ]; then
    ok=0; why="exit code $rc, expected $want"
  fi
  if ! grep -Eqi -- "$word" "$WORK/stderr"; then ok=0; why="$why; stderr does not match /$word/"; fi
  if [ "$want" = 2 ] && [ "$(wc -l <"$WORK/stderr")" -ne 1 ]; then ok=0; why="$why; usage error is not one line"; fi
  if [ $ok = 1 ]; then
    echo "ok   rwkv-lite $* -> $rc"
  else
    echo "FAIL rwkv-lite $* -> $why"
    sed 's/^/     stderr: /' "$WORK/stderr" | head -5
    failures=$((failures + 1))
  fi
}

expect_ok() {
  local word=$1
  shift
  if "$CLI" "$@" >"$WORK/stdout" 2>"$WORK/stderr" && grep -Eq -- "$word" "$WORK/stdout"; then
    echo "ok   rwkv-lite $* -> 0"
  else
    echo "FAIL rwkv-lite $* (expected success with /$word/ on stdout)"
    failures=$((failures + 1))
  fi
}

# ---- command-line errors (no model needed: they are caught before anything is loaded)
M=$WORK/no-such-model.bin
expect 2 "usage|command" # no command at all
expect 2 "unknown command" frobnicate -m "$M"
expect 2 "unknown option '--bogus'" generate -m "$M" -p hi --bogus
expect 2 "unknown option '-Z'" generate -m "$M" -p hi -Z
expect 2 "unexpected argument" generate -m "$M" -p hi stray
expect 2 "does not apply" generate -m "$M" -p hi --json
expect 2 "missing -m/--model" generate -p hi
expect 2 "prompt" generate -m "$M"
expect 2 "not both" generate -m "$M" -p hi -f "$M"
expect 2 "needs a value" generate -m "$M" -p hi -n
expect 2 "needs a value" generate -m "$M" -p hi --temp
expect 2 "integer" generate -m "$M" -p hi -n abc
expect 2 "integer" generate -m "$M" -p hi -n 12x
expect 2 "integer" generate -m "$M" -p hi -t 1.5
expect 2 "number" generate -m "$M" -p hi --temp warm
expect 2 "number" generate -m "$M" -p hi --top-p nan
expect 2 "n-predict must be in" generate -m "$M" -p hi -n -5
expect 2 "threads must be in" generate -m "$M" -p hi -t -1
expect 2 "top-p must be in \(0, 1\]" generate -m "$M" -p hi --top-p 0
expect 2 "top-p must be in" generate -m "$M" -p hi --top-p 1.5
expect 2 "temp must be in" generate -m "$M" -p hi --temp -1
expect 2 "penalty-decay must be in" generate -m "$M" -p hi --penalty-decay 2
expect 2 "top-k must be in" generate -m "$M" -p hi --top-k -3
expect 2 "takes no value" perplexity -m "$M" -f "$M" --json=1
expect 2 "expected one of" convert -m "$M" -o "$WORK/out" --dtype q5_1
expect 2 "expected one of" convert -m "$M" -o "$WORK/out" --format onnx
expect 2 "expected one of" bench -m "$M" -o html
expect 2 "port must be in" serve -m "$M" --port 70000
expect 2 "parallel must be in" serve -m "$M" -np 0
expect 2 "missing -o/--out" convert -m "$M"
expect 2 "for --arch: expected one of 4[|]5[|]6[|]7[|]7a" synth -o "$WORK/s.rwkvl" --arch 3
expect 2 "de-rank needs --arch 7a" synth -o "$WORK/s.rwkvl" --arch 7 --de-rank 8
expect 2 "layers must be in" synth -o "$WORK/s.rwkvl" --layers 0
expect 2 "token id" logits -m "$M" --tokens 1,x,3 -o "$WORK/l.bin"
expect 2 "token id" logits -m "$M" --tokens 1,,3 -o "$WORK/l.bin"
expect 2 "exactly one of --tokens" logits -m "$M" -o "$WORK/l.bin"
expect 2 "exactly one of" tokenize -p hi
expect 2 "needs --tokenizer" tokenize --tokenizer-kind world -p hi
expect 2 "prompt-tokens must be in" bench -m "$M" --prompt-tokens 0

# ---- help and version succeed
expect_ok "--temp" generate --help
expect_ok "commands:" --help
expect_ok "^rwkv-lite [0-9]" --version

# ---- files that are missing or not models
: >"$WORK/empty.bin"
printf 'this is not a model, just some text that is long enough to look like a header\n%.0s' $(seq 100) \
  >"$WORK/text.bin"
expect 1 "no-such-model|no such file|cannot open" info -m "$M"
expect 1 "no-such-model|no such file|cannot open" generate -m "$M" -p hi
expect 1 "empty|truncat|short|format|small|recogni" info -m "$WORK/empty.bin"
expect 1 "format|recogni|unknown|not a|magic" info -m "$WORK/text.bin"
expect 1 "cannot read prompt file" generate -m "$M" -f "$WORK/no-such-prompt.txt"
expect 1 "cannot read text file" perplexity -m "$M" -f "$WORK/no-such-text.txt"

# ---- with a real model: truncated copies, out-of-range token ids, bad state files
TINY=$SHARED/reference/tiny-rwkv/tiny-rwkv-5v2-730K-FP32.bin
if have_shared "$TINY"; then
  size=$(wc -c <"$TINY")
  for cut in 16 100 1000 $((size / 2)) $((size - 4)); do
    head -c "$cut" "$TINY" >"$WORK/trunc-$cut.bin"
    expect 1 "truncat|short|format|size|end of file|past the end|bytes" info -m "$WORK/trunc-$cut.bin"
  done
  expect 1 "range|token|invalid" logits -m "$TINY" --tokens 999999 -o "$WORK/l.bin"
  expect 1 "range|token|invalid" logits -m "$TINY" --tokens 34,-1 -o "$WORK/l.bin"
  expect 1 "state" generate -m "$TINY" -p hi -n 1 --state-in "$WORK/no-such.state"
  expect 1 "state" generate -m "$TINY" -p hi -n 1 --state-in "$WORK/text.bin"
  expect 1 "logits file|cannot write" logits -m "$TINY" --tokens 1 -o "$WORK/no-such-dir/l.bin"
  expect 1 "at least 2 tokens" perplexity -m "$TINY" -f "$WORK/empty.bin"
  expect 2 "prompt is empty" generate -m "$TINY" -p ""
fi

finish "all usage/error checks passed"
