#!/usr/bin/env bash
# Corrupt or changing model files are errors, never silent garbage or a signal (issue #13, items 7-8):
#  - `verify` exits 0 on a good file and 1 on a copy with one weight byte flipped, naming the tensor (text and
#    --json); rwkv.cpp files have no checksums ("none") but are still checked for values;
#  - a flip that makes a weight NaN makes perplexity / generate exit 1 with "non-finite values after layer N";
#  - a bit-flipped --state-in file, a World vocabulary cut to 1,000 lines, --tokenizer for a byte model: exit 1;
#  - a model file truncated (or overwritten by cp) while perplexity / generate run on it: exit 1 with a message
#    naming the file, not SIGBUS (exit 135) or SIGSEGV (139); also under --mem-budget.
# usage: verify_corruption.sh RWKV_LITE SHARED_DIR BUILD_DIR
. "$(dirname "$0")/lib/common.bash" "$@"
if [ ! -x "$CLI" ]; then
  echo "skip: $CLI not built"
  exit 77
fi
make_work verify
ok() { echo "ok   $*"; }
fail() {
  echo "FAIL $*"
  failures=$((failures + 1))
}

# expect WANT REGEX ARGS...: exit code WANT and stderr matching REGEX (extended, case-insensitive).
expect() {
  local want=$1 word=$2
  shift 2
  "$CLI" "$@" >"$WORK/stdout" 2>"$WORK/stderr" </dev/null
  local rc=$?
  if [ $rc -eq "$want" ] && grep -Eqi -- "$word" "$WORK/stderr"; then
    ok "$* -> $rc: $(head -c 300 "$WORK/stderr" | head -1)"
  else
    fail "$* -> exit $rc (expected $want), stderr does not match /$word/ or wrong code"
    sed 's/^/     stderr: /' "$WORK/stderr" | head -5
  fi
}

# offset_of FILE TENSOR: byte offset of the tensor's data in the file (from verify's table)
offset_of() { "$CLI" verify -m "$1" 2>/dev/null | awk -v n="$2" '$6 == n { print $5 }'; }
# poke FILE OFFSET BYTES(printf escapes): overwrite bytes in place
poke() { printf "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }

M=$WORK/m.rwkvl
"$CLI" synth -o "$M" --arch 5 --layers 2 --embd 64 --head-size 16 --vocab 256 --seed 3 >/dev/null 2>&1 || fail "synth"
printf 'The quick brown fox jumps over the lazy dog. It was a bright cold day in April.\n' >"$WORK/t.txt"

# ---- verify: good, one flipped byte, JSON, other formats, unreadable files
if "$CLI" verify -m "$M" >"$WORK/v.out" 2>"$WORK/v.err" && grep -q "^result    OK" "$WORK/v.out" &&
  grep -q "^checksums 50 ok, 0 mismatch" "$WORK/v.out" && [ ! -s "$WORK/v.err" ]; then
  ok "verify on a good file: exit 0, every checksum ok"
else
  fail "verify on a good file: $(cat "$WORK/v.out" "$WORK/v.err" | tail -5)"
fi
T=blocks.1.att.key.weight
off=$(offset_of "$M" $T)
if [ -z "$off" ]; then
  fail "no offset for $T in verify's table"
  off=4096
fi
cp "$M" "$WORK/flip.rwkvl"
poke "$WORK/flip.rwkvl" $((off + 100)) '\x55'  # a low mantissa byte: the value stays finite
expect 1 "flip.rwkvl failed verification: tensor '$T': checksum mismatch" verify -m "$WORK/flip.rwkvl"
if grep -Eq "^mismatch +0 f32 .* $T " "$WORK/stdout" && grep -q "^result    CORRUPT" "$WORK/stdout"; then
  ok "verify table marks $T"
else
  fail "verify table: $(grep -v '^ok' "$WORK/stdout" | head -5)"
fi
"$CLI" verify -m "$WORK/flip.rwkvl" --json >"$WORK/v.json" 2>/dev/null
rc=$?
if [ $rc -eq 1 ] && grep -q '"ok":false' "$WORK/v.json" && grep -q "\"checksum\":\"mismatch\"" "$WORK/v.json" &&
  grep -q "\"checksum_mismatch\":1" "$WORK/v.json"; then
  ok "verify --json: exit 1, ok false, one mismatch"
else
  fail "verify --json: exit $rc, $(head -c 300 "$WORK/v.json")"
fi
TINY=$SHARED/reference/tiny-rwkv/tiny-rwkv-5v2-730K-FP16.bin
if have_shared "$TINY"; then
  if "$CLI" verify -m "$TINY" >"$WORK/v.out" 2>&1 && grep -q "^checksums none (the rwkv.cpp format" "$WORK/v.out" &&
    grep -q "^result    OK" "$WORK/v.out"; then
    ok "verify on an rwkv.cpp file: no checksums in the format, values checked, exit 0"
  else
    fail "verify on rwkv.cpp: $(tail -4 "$WORK/v.out")"
  fi
fi
printf 'not a model' >"$WORK/junk.bin"
expect 1 "failed verification: cannot read the file" verify -m "$WORK/junk.bin"
expect 1 "failed verification" verify -m "$WORK/no-such.rwkvl"
expect 2 "missing -m" verify

# ---- a NaN weight: the runtime stops naming the layer instead of printing garbage
cp "$M" "$WORK/nan.rwkvl"
poke "$WORK/nan.rwkvl" $((off + 2)) '\xc0\x7f'  # high bytes of the first value: NaN
expect 1 "non-finite values after layer 1 .*rwkv-lite verify -m .*nan.rwkvl" perplexity -m "$WORK/nan.rwkvl" -f "$WORK/t.txt"
expect 1 "non-finite values after layer 1" generate -m "$WORK/nan.rwkvl" -p "Hello" -n 8
if tr -d '\000' <"$WORK/stdout" | cmp -s - "$WORK/stdout"; then ok "generate printed no NUL bytes"; else fail "generate printed NUL bytes"; fi
expect 1 "verification: tensor '$T': checksum mismatch .*and 1 more problem" verify -m "$WORK/nan.rwkvl"

# ---- state files, tokenizer files
"$CLI" generate -m "$M" -p "Hello" -n 4 --temp 0 --state-out "$WORK/s.state" >/dev/null 2>&1 || fail "--state-out"
cp "$WORK/s.state" "$WORK/flip.state"
poke "$WORK/flip.state" 200 '\x01'
if "$CLI" generate -m "$M" -p "Hello" -n 2 --state-in "$WORK/s.state" >/dev/null 2>&1; then ok "good state loads"; else fail "good state refused"; fi
expect 1 "state file is corrupt" generate -m "$M" -p "Hello" -n 2 --state-in "$WORK/flip.state"
expect 1 "byte-level vocabulary.*drop --tokenizer" perplexity -m "$M" -f "$WORK/t.txt" --tokenizer "$WORK/t.txt"
VOCAB=$SHARED/reference/tokenizers/rwkv_vocab_v20230424.txt
if have_shared "$VOCAB"; then
  "$CLI" synth -o "$WORK/w.rwkvl" --arch 5 --layers 1 --embd 32 --head-size 16 --vocab 65536 >/dev/null 2>&1 || fail "synth World"
  head -n 1000 "$VOCAB" >"$WORK/vocab-1000.txt"
  expect 1 "vocab-1000.txt: World vocabulary has 1000 entries .*65529" tokenize -m "$WORK/w.rwkvl" --tokenizer "$WORK/vocab-1000.txt" -p hi
  if "$CLI" tokenize -m "$WORK/w.rwkvl" --tokenizer "$VOCAB" -p hi >/dev/null 2>&1; then ok "complete World vocabulary accepted"; else fail "complete World vocabulary refused"; fi
fi

# ---- a model file truncated or overwritten while in use
"$CLI" synth -o "$WORK/big.rwkvl" --arch 5 --layers 4 --embd 512 --head-size 64 --vocab 256 --seed 1 >/dev/null 2>&1 || fail "synth big"
"$CLI" synth -o "$WORK/big2.rwkvl" --arch 5 --layers 4 --embd 512 --head-size 64 --vocab 256 --seed 2 >/dev/null 2>&1 || fail "synth big2"
for i in $(seq 1 150); do cat "$WORK/t.txt"; done >"$WORK/long.txt"  # ~12k tokens: many seconds in RNN mode
# under ACTION WANT_REGEX ARGS...: runs rwkv-lite on a copy of big.rwkvl, applies ACTION to the copy after 0.5 s.
under() {
  local action=$1 word=$2
  shift 2
  cp "$WORK/big.rwkvl" "$WORK/c.rwkvl"
  timeout 300 "$CLI" "$@" >/dev/null 2>"$WORK/u.err" </dev/null &
  local pid=$!
  sleep 0.5
  case $action in
    truncate) truncate -s 0 "$WORK/c.rwkvl" ;;
    cp) cp "$WORK/big2.rwkvl" "$WORK/c.rwkvl" ;;
  esac
  wait $pid
  local rc=$?
  if [ $rc -eq 1 ] && grep -Eq -- "$word" "$WORK/u.err"; then
    ok "$action during $1: exit 1: $(head -1 "$WORK/u.err")"
  else
    fail "$action during $*: exit $rc (135 = SIGBUS, 139 = SIGSEGV), stderr: $(head -c 300 "$WORK/u.err")"
  fi
}
# Whichever comes first: the SIGBUS guard (a lost page touched) or the per-call check of the file (stat).
SIGBUS_MSG="model file '.*c.rwkvl' was (truncated or replaced|modified) while in use"
under truncate "$SIGBUS_MSG" perplexity -m "$WORK/c.rwkvl" -f "$WORK/long.txt" -t 1 --chunk 1
under truncate "$SIGBUS_MSG" generate -m "$WORK/c.rwkvl" -p "Hello" -n 100000 -t 1
# A budget a little above this build's minimum (the planner names it; sanitizer builds hold more), so layers stream.
min=$("$CLI" generate -m "$WORK/big.rwkvl" -p "Hello" -n 1 -t 1 --mem-budget 1M 2>&1 >/dev/null |
  sed -n 's/.*give --mem-budget \([0-9]*\) or more.*/\1/p')
if [ -n "$min" ]; then
  under truncate "$SIGBUS_MSG|file truncated" generate -m "$WORK/c.rwkvl" -p "Hello" -n 100000 -t 1 \
    --mem-budget $((min + min / 8))
else
  fail "no minimum budget in the planner's message"
fi
under cp "$SIGBUS_MSG" perplexity -m "$WORK/c.rwkvl" -f "$WORK/long.txt" -t 1 --chunk 1

finish "all corruption checks passed"
