#!/usr/bin/env bash
# Inputs that could exhaust memory or hang (issue #13, items 3-5):
#  - /dev/zero, /dev/urandom, a FIFO and a folder given as text, prompt, LAMBADA, calibration text, tokenizer,
#    model and state: a clear error naming the path, exit 1, within 5 s and under 100 MB of peak RSS;
#  - a 64 MiB+ tokenizer file is refused by its size; a text is streamed: eval --max-tokens 100 of a 10 MB text
#    reads only the first 64 KiB piece, and perplexity of a text from standard input ("-") equals the file's;
#  - eval of a 10 MB text and a 29 MB LAMBADA file under --mem-budget 25% of the reference model stays within
#    the budget, and without --max-tokens the whole-text run is refused (naming the minimum) before it peaks
#    above the budget;
#  - --chunk above 1024 is a usage error; --chunk 1024 on a long prompt stays small.
# usage: input_limits.sh RWKV_LITE SHARED_DIR BUILD_DIR
. "$(dirname "$0")/lib/common.bash" "$@"
make_work inputs

# run_limited OUT ARGS...: runs the CLI with a limit of $LIMIT s (5); prints "<exit code> <peak RSS in KiB> <seconds>".
run_limited() {
  local out=$1
  shift
  python3 - "${LIMIT:-5}" "$out" "$CLI" "$@" <<'EOF'
import resource, subprocess, sys, time
limit = float(sys.argv.pop(1))
out = sys.argv[1]
t0 = time.time()
with open(out, "wb") as f:
    try:
        rc = subprocess.run(sys.argv[2:], stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=limit).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "%.2f" % (time.time() - t0))
EOF
}

# refused WHAT REGEX ARGS...: exit 1 within 5 s, under 100 MB, the message matching REGEX.
refused() {
  local what=$1 re=$2
  shift 2
  read -r rc rss secs < <(run_limited "$WORK/out" "$@")
  if [ "$rc" != 1 ]; then fail "$what: exit $rc (want 1): $(head -c 300 "$WORK/out")"; return; fi
  if [ "$rss" -gt 102400 ]; then fail "$what: peak RSS ${rss} KiB (over 100 MB)"; fi
  grep -Eqi -- "$re" "$WORK/out" || fail "$what: message does not match /$re/: $(head -c 300 "$WORK/out")"
}

M=$WORK/byte.rwkvl
"$CLI" synth --arch 5 --layers 2 --embd 64 --vocab 256 --dtype f16 -o "$M" >/dev/null 2>&1 || fail "synth"
W=$WORK/world.rwkvl
"$CLI" synth --arch 5 --layers 1 --embd 32 --vocab 65536 --head-size 16 --dtype f16 -o "$W" >/dev/null 2>&1 || fail "synth world"
mkfifo "$WORK/fifo"
mkdir "$WORK/dir"
printf 'hello world, this is a small text for the tests.\n' > "$WORK/ok.txt"
printf '{"text": "a small passage with a last word"}\n' > "$WORK/ok.jsonl"

for bad in /dev/zero /dev/urandom "$WORK/fifo" "$WORK/dir"; do
  kind="not a regular file|character device|FIFO|directory"
  refused "text $bad" "text file '$bad'.*($kind)" eval -m "$M" --text "$bad" --max-tokens 100
  refused "perplexity $bad" "text file '$bad'.*($kind)" perplexity -m "$M" -f "$bad"
  refused "prompt $bad" "prompt file '$bad'.*($kind)" generate -m "$M" -f "$bad" -n 1
  refused "LAMBADA $bad" "LAMBADA file '$bad'.*($kind)" eval -m "$M" --lambada "$bad" --lambada-max 1
  refused "model $bad" "'$bad'.*($kind)" generate -m "$bad" -p hi -n 1
  refused "state $bad" "'$bad'.*($kind)" generate -m "$M" -p hi -n 1 --state-in "$bad"
  refused "calibration $bad" "'$bad'.*($kind)" compress -m "$M" -o "$WORK/c.rwkvl" --lowrank asvd --rank-frac 0.5 --calib "$bad"
  refused "tokenizer $bad" "tokenizer file '$bad'.*($kind)" eval -m "$W" --tokenizer "$bad" --text "$WORK/ok.txt"
done

# A tokenizer file past the 64 MiB limit is refused by its size, without being read.
truncate -s 65M "$WORK/huge-vocab.txt"
refused "huge tokenizer file" "larger than the limit" eval -m "$W" --tokenizer "$WORK/huge-vocab.txt" --text "$WORK/ok.txt"

# Standard input as the text: the same perplexity as the file.
a=$("$CLI" perplexity -m "$M" -f "$WORK/ok.txt" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])')
b=$("$CLI" perplexity -m "$M" -f - --json < "$WORK/ok.txt" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])')
[ -n "$a" ] && [ "$a" = "$b" ] || fail "perplexity of standard input ($b) differs from the file's ($a)"

# --chunk is bounded: above 1024 a usage error; 1024 with a 13k-token prompt stays small.
"$CLI" generate -m "$M" -p hi -n 1 --chunk 1048576 >/dev/null 2>"$WORK/err"
rc=$?
[ $rc -eq 2 ] && grep -q "chunk" "$WORK/err" || fail "--chunk 1048576: exit $rc, want 2 naming --chunk"
head -c 10000 /dev/urandom | base64 -w 0 > "$WORK/prompt.txt"
# Measured against the same command on a 1-token prompt (sanitizer builds start at ~80 MiB, Release at ~6 MiB):
# the long prompt adds ~20 MiB in both.
read -r rc rss0 secs < <(LIMIT=120 run_limited "$WORK/out" generate -m "$M" -p hi -n 1 --chunk 1024 -t 1)
[ "$rc" = 0 ] || fail "generate --chunk 1024 of a short prompt: exit $rc: $(head -c 300 "$WORK/out")"
read -r rc rss secs < <(LIMIT=120 run_limited "$WORK/out" generate -m "$M" -f "$WORK/prompt.txt" -n 1 --chunk 1024 -t 1)
[ "$rc" = 0 ] || fail "generate --chunk 1024 of a long prompt: exit $rc: $(head -c 300 "$WORK/out")"
[ $((rss - rss0)) -lt 40960 ] || fail "generate --chunk 1024 of a long prompt: peak RSS ${rss} KiB, ${rss0} KiB for a short one"

REF=$SHARED/reference/models/rwkv5-world-l8-d256/model.pth
LAMB=$SHARED/data/lambada_openai_test.jsonl
WIKI=$SHARED/data/wikitext2-test.txt
if have_shared "$REF" "$LAMB" "$WIKI"; then
  for i in 1 2 3 4 5 6 7 8; do cat "$WIKI"; done > "$WORK/big.txt"             # 10 MB
  for i in $(seq 16); do cat "$LAMB"; done > "$WORK/big.jsonl"                  # 29 MB
  "$CLI" convert -m "$REF" -o "$WORK/ref.rwkvl" --dtype f16 >/dev/null 2>&1 || fail "convert the reference model"
  # Release builds only: sanitizers multiply the memory.
  if "$CLI" --version 2>/dev/null | grep -q "| Release |"; then
    out=$("$CLI" eval -m "$WORK/ref.rwkvl" --text "$WORK/big.txt" --max-tokens 100 --lambada "$WORK/big.jsonl" \
          --lambada-max 2 --mem-budget 25% --json 2>"$WORK/err")
    rc=$?
    if [ $rc -ne 0 ]; then
      fail "eval of 10 MB text + 29 MB LAMBADA at 25%: exit $rc: $(cat "$WORK/err")"
    else
      echo "$out" | python3 -c '
import json, sys
j = json.load(sys.stdin)
assert j["tokens"] == 100 and j["lambada_n"] == 2, j
assert j["peak_rss_bytes"] <= j["mem_budget"], "peak %d above the budget %d" % (j["peak_rss_bytes"], j["mem_budget"])
print("eval 10 MB text + 29 MB LAMBADA at 25%%: peak %.2f MiB of %.2f MiB" % (j["peak_rss_bytes"] / 2**20, j["mem_budget"] / 2**20))
' || fail "eval of 10 MB text + 29 MB LAMBADA at 25%: $out"
    fi
    # The whole text (streamed, so the tokenizer stays: about 18 MiB at least) needs more than 20 %: refused before
    # it peaks above it.
    read -r rc rss secs < <(run_limited "$WORK/out" eval -m "$WORK/ref.rwkvl" --text "$WORK/big.txt" --mem-budget 20%)
    [ "$rc" = 1 ] && grep -q "below the minimum" "$WORK/out" || fail "whole 10 MB text at 20%: exit $rc: $(head -c 300 "$WORK/out")"
    budget=$(( 77 * 1024 * 1024 / 5 ))
    [ "$rss" -lt $((budget / 1024)) ] || fail "whole 10 MB text at 20%: peaked at ${rss} KiB before the refusal"
  fi
fi

finish "all input checks passed"
