#!/usr/bin/env bash
# synth a small RWKV-7 model into the build folder, then bench it (JSON and text), and describe it
# with info --json. Needs nothing from the shared folder.
# usage: bench_synth.sh RWKV_LITE SHARED_DIR BUILD_DIR
. "$(dirname "$0")/lib/common.bash" "$@"
make_work bench
MODEL=$WORK/synth-v7-l2-d128-v1024.rwkvl

if ! "$CLI" synth -o "$MODEL" --arch 7 --layers 2 --embd 128 --vocab 1024 --seed 3 2>"$WORK/err"; then
  echo "FAIL synth: $(cat "$WORK/err")"
  exit 1
fi
echo "ok   synth wrote $(wc -c <"$MODEL") bytes"

# info --json describes the shape that was asked for.
if "$CLI" info -m "$MODEL" --json >"$WORK/info.json" 2>"$WORK/err"; then
  for kv in '"n_layer":2' '"n_embd":128' '"n_vocab":1024' '"arch_major":7' '"file_kind":"native"'; do
    if grep -q "$kv" "$WORK/info.json"; then
      echo "ok   info has $kv"
    else
      fail "info --json lacks $kv: $(cat "$WORK/info.json")"
    fi
  done
else
  fail "info: $(cat "$WORK/err")"
fi

# bench --json: one object with every key; speeds and sizes positive.
if "$CLI" bench -m "$MODEL" -t 2 --prompt-tokens 32 --gen-tokens 16 --json >"$WORK/bench.json" 2>"$WORK/err"; then
  lines=$(wc -l <"$WORK/bench.json")
  [ "$lines" -eq 1 ] || fail "bench --json printed $lines lines, expected one JSON object"
  for key in system model arch n_layer n_embd n_vocab threads prompt_tokens prompt_tok_per_s gen_tokens \
    gen_tok_per_s gen_ms_per_tok peak_rss_bytes bytes_per_token achieved_gb_per_s measured_gb_per_s \
    bandwidth_pct; do
    if grep -q "\"$key\":" "$WORK/bench.json"; then
      echo "ok   bench --json has $key"
    else
      fail "bench --json lacks $key"
    fi
  done
  for key in prompt_tok_per_s gen_tok_per_s peak_rss_bytes bytes_per_token measured_gb_per_s bandwidth_pct; do
    v=$(grep -o "\"$key\":[^,}]*" "$WORK/bench.json" | head -1 | cut -d: -f2)
    if awk -v v="$v" 'BEGIN { exit !(v + 0 > 0) }'; then
      echo "ok   $key = $v"
    else
      fail "$key is not positive: '$v'"
    fi
  done
  grep -q '"threads":2' "$WORK/bench.json" || fail "bench --json does not report 2 threads"
else
  fail "bench --json: $(cat "$WORK/err")"
fi

# Text output starts with the system-info line; --no-bandwidth leaves the bandwidth lines out.
if "$CLI" bench -m "$MODEL" -t 1 --prompt-tokens 8 --gen-tokens 4 --no-bandwidth >"$WORK/bench.txt" 2>"$WORK/err"; then
  first=$(head -1 "$WORK/bench.txt")
  if [[ $first == "system: rwkv-lite "* ]]; then
    echo "ok   bench starts with the system line"
  else
    fail "bench does not start with 'system: rwkv-lite': $first"
  fi
  if grep -q "generation (4 tok)" "$WORK/bench.txt"; then
    echo "ok   bench reports generation"
  else
    fail "no generation line"
  fi
  grep -q "measured read bandwidth" "$WORK/bench.txt" && fail "--no-bandwidth still measured the bandwidth"
else
  fail "bench (text): $(cat "$WORK/err")"
fi
if "$CLI" bench -m "$MODEL" -t 1 --prompt-tokens 8 --gen-tokens 4 --no-bandwidth --json \
  >"$WORK/nb.json" 2>"$WORK/err"; then
  if grep -q '"measured_gb_per_s":null' "$WORK/nb.json"; then
    echo "ok   --no-bandwidth --json gives null"
  else
    fail "--no-bandwidth --json: $(cat "$WORK/nb.json")"
  fi
else
  fail "bench --no-bandwidth --json: $(cat "$WORK/err")"
fi

finish "all bench checks passed"
