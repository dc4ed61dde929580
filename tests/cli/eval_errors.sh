#!/usr/bin/env bash
# eval's bad inputs: each fails with a clear message on stderr, nothing on stdout, a non-zero exit below 128
# (2 for usage errors, 1 for bad files), never a crash: missing / empty text, fewer than 2 tokens, negative
# limits, malformed LAMBADA jsonl (the message names the line), passages without a last word.
# usage: eval_errors.sh RWKV_LITE SHARED_DIR BUILD_DIR
. "$(dirname "$0")/lib/common.bash" "$@"
TINY=$SHARED/reference/tiny-rwkv/tiny-rwkv-5v2-730K-FP32.bin
need_shared "$TINY"
make_work eval-errors

# expect WANT REGEX ARGS...: exit code WANT, stderr matches REGEX (extended, case-insensitive), stdout empty.
expect() {
  local want=$1 word=$2
  shift 2
  "$CLI" "$@" >"$WORK/stdout" 2>"$WORK/stderr" </dev/null
  local rc=$? ok=1 why=""
  if [ $rc -ne "$want" ]; then ok=0; why="exit code $rc, expected $want"; fi
  if ! grep -Eqi -- "$word" "$WORK/stderr"; then ok=0; why="$why; stderr does not match /$word/"; fi
  if [ -s "$WORK/stdout" ]; then ok=0; why="$why; something on stdout"; fi
  if [ "$(wc -l <"$WORK/stderr")" -ne 1 ]; then ok=0; why="$why; message is not one line"; fi
  if [ $ok = 1 ]; then
    echo "ok   eval ${*:2} -> $rc: $(cat "$WORK/stderr")"
  else
    echo "FAIL eval ${*:2} -> $why"
    sed 's/^/     stderr: /' "$WORK/stderr" | head -5
    failures=$((failures + 1))
  fi
}

M=$TINY
printf 'Some text that is long enough.\n' >"$WORK/text.txt"
: >"$WORK/empty.txt"
printf 'x' >"$WORK/one.txt"
good='{"text": "the cat sat on the mat"}'

# ---- usage errors (exit 2)
expect 2 "missing --text" eval -m "$M"
expect 2 "missing -m/--model" eval --text "$WORK/text.txt"
expect 2 "max-tokens must be in" eval -m "$M" --text "$WORK/text.txt" --max-tokens -1
expect 2 "integer" eval -m "$M" --text "$WORK/text.txt" --max-tokens 1e3
expect 2 "lambada-max must be in" eval -m "$M" --text "$WORK/text.txt" --lambada "$WORK/text.txt" --lambada-max -5
expect 2 "needs --lambada" eval -m "$M" --text "$WORK/text.txt" --lambada-out "$WORK/out.jsonl"
expect 2 "does not apply" eval -m "$M" --text "$WORK/text.txt" -f "$WORK/text.txt"
expect 2 "needs a value" eval -m "$M" --text

# ---- the text file
expect 1 "cannot read text file .*no-such" eval -m "$M" --text "$WORK/no-such.txt"
expect 1 "empty" eval -m "$M" --text "$WORK/empty.txt"
expect 1 "at least 2 tokens.*\(got 1\)" eval -m "$M" --text "$WORK/one.txt"
expect 1 "at least 2 tokens.*\(got 1\)" eval -m "$M" --text "$WORK/text.txt" --max-tokens 1
expect 1 "no-such-model|no such file|cannot open" eval -m "$WORK/no-such.bin" --text "$WORK/text.txt"

# ---- the LAMBADA file
lam() {  # lam NAME CONTENT...: writes the lines to $WORK/NAME.jsonl
  local name=$1
  shift
  printf '%s\n' "$@" >"$WORK/$name.jsonl"
}
lam badjson "$good" "$good" '{"text": "unterminated}'
lam notobj "$good" '["the cat", "sat"]'
lam nokey "$good" '{"txt": "the cat sat"}'
lam notstr '{"text": 42}'
lam nospace "$good" "$good" "$good" '{"text": "Supercalifragilistic"}'
lam onlyword '{"text": " word"}'
lam trailing "$good" '{"text": "ok"} junk'
: >"$WORK/empty.jsonl"
printf '\n  \n' >"$WORK/blank.jsonl"
expect 1 "cannot read LAMBADA file" eval -m "$M" --lambada "$WORK/no-such.jsonl"
expect 1 "line 3: not valid JSON" eval -m "$M" --text "$WORK/text.txt" --lambada "$WORK/badjson.jsonl"
expect 1 "line 2: .*object" eval -m "$M" --lambada "$WORK/notobj.jsonl"
expect 1 "line 2: .*\"text\"" eval -m "$M" --lambada "$WORK/nokey.jsonl"
expect 1 "line 1: .*string" eval -m "$M" --lambada "$WORK/notstr.jsonl"
expect 1 "line 4: .*no space" eval -m "$M" --lambada "$WORK/nospace.jsonl"
expect 1 "line 1: nothing before the last word" eval -m "$M" --lambada "$WORK/onlyword.jsonl"
expect 1 "line 2: not valid JSON" eval -m "$M" --lambada "$WORK/trailing.jsonl"
expect 1 "no passages" eval -m "$M" --lambada "$WORK/empty.jsonl"
expect 1 "no passages" eval -m "$M" --lambada "$WORK/blank.jsonl"
# a bad line after the first N passages is still reported (the whole file is checked)
expect 1 "line 3: not valid JSON" eval -m "$M" --lambada "$WORK/badjson.jsonl" --lambada-max 1
lam ok "$good"
expect 1 "LAMBADA details file|cannot write" eval -m "$M" --lambada "$WORK/ok.jsonl" --lambada-out "$WORK/no-dir/x.jsonl"

finish "all eval error checks passed"
