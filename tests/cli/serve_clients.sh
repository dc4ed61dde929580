#!/usr/bin/env bash
# rwkv-lite serve with real clients (tests/node/serve_clients.mjs: the openai npm package, autocannon, raw
# sockets) on the World-vocabulary reference model: the same greedy text as `generate` and `chat`, a cached
# 2,000-token system prompt answered >= 20x sooner, hostile clients, a load test; then SIGTERM stops it cleanly.
# RWKVL_SERVE_LOAD_SECONDS sets the load test's length (default 60 s, 20 s in sanitizer builds).
# usage: serve_clients.sh RWKV_LITE SHARED_DIR BUILD_DIR
. "$(dirname "$0")/lib/common.bash" "$@"
MODEL=$SHARED/reference/models/rwkv5-world-l8-d256/model.pth
TEXT=$SHARED/data/wikitext2-test.txt
need_shared "$MODEL" "$TEXT" "$SHARED/reference/tokenizers/rwkv_vocab_v20230424.txt"
NODE_DIR=$(cd "$(dirname "$0")/../node" && pwd)
if ! command -v node >/dev/null || [ ! -d "$NODE_DIR/node_modules/openai" ]; then
  echo "skip: node or the client packages are missing (scripts/install-deps.sh runs npm ci in tests/node)"
  exit 77
fi
make_work serve_clients
export RWKVL_TOKENIZER_DIR=$SHARED/reference/tokenizers
PROMPT="The history of the city"
QUESTION="What is the capital of France?"
"$CLI" generate -m "$MODEL" -p "$PROMPT" -n 24 --temp 0 -t 2 >"$WORK/gen.txt" 2>/dev/null || fail "generate"
printf '%s\n' "$QUESTION" | "$CLI" chat -m "$MODEL" --temp 0 --presence-penalty 0 --frequency-penalty 0 -n 40 -t 2 \
  >"$WORK/chat.txt" 2>/dev/null || fail "chat"
head -c 9000 "$TEXT" >"$WORK/system.txt"

# start_server LOG ARGS...: runs `rwkv-lite serve ARGS` in the background (SERVER = its pid) and waits until it
# is ready (PORT = the port it printed); false, after counting a failure, when it did not start.
start_server() {
  local log=$1
  shift
  "$CLI" serve --port 0 "$@" 2>"$log" &
  SERVER=$!
  PORT=""
  for _ in $(seq 1 300); do
    grep -q "ready" "$log" && break
    kill -0 $SERVER 2>/dev/null || break
    sleep 0.1
  done
  PORT=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$log")
  if [ -z "$PORT" ] || ! grep -q ready "$log"; then
    fail "the server did not start ($*): $(cat "$log")"
    kill $SERVER 2>/dev/null
    return 1
  fi
}

start_server "$WORK/serve.log" -m "$MODEL" -np 2 -t 2 --alias reference || finish
# The load test runs 60 s on a Release build, 20 s under the sanitizers (the same code paths, fewer requests).
LOAD_SECONDS=20 RSS=no-rss  # sanitizer builds: ASan's quarantine of freed memory grows RSS by design
release_build && LOAD_SECONDS=60 RSS=rss
node "$NODE_DIR/serve_clients.mjs" "$PORT" "$PROMPT" "$WORK/gen.txt" "$QUESTION" "$WORK/chat.txt" "$WORK/system.txt" \
  "${RWKVL_SERVE_LOAD_SECONDS:-$LOAD_SECONDS}" $RSS || fail "client checks"
kill -TERM $SERVER
wait $SERVER
rc=$?
[ $rc -eq 0 ] && grep -q "stopped" "$WORK/serve.log" && echo "ok   SIGTERM stops the server cleanly" \
  || { fail "the server exited with $rc after SIGTERM"; tail -5 "$WORK/serve.log"; }

# Within a memory budget (Release builds: sanitizer runtimes start above it): a native f16 file, two slots, a
# state cache; six concurrent streamed chats; the peak RSS the server reports stays within the budget.
if release_build; then
  "$CLI" convert -m "$MODEL" -o "$WORK/m.rwkvl" --dtype f16 >/dev/null 2>&1 || fail "convert to f16"
  if start_server "$WORK/budget.log" -m "$WORK/m.rwkvl" -np 2 -t 1 --mem-budget 44M --state-cache 4M; then
    pids=()
    for i in 1 2 3 4 5 6; do
      curl -s "http://127.0.0.1:$PORT/v1/chat/completions" -d "{\"messages\": [{\"role\": \"system\", \"content\": \"Answer briefly.\"}, {\"role\": \"user\", \"content\": \"Question $i?\"}], \"max_tokens\": 40, \"stream\": true}" >/dev/null &
      pids+=($!)
    done
    wait "${pids[@]}"
    metrics=$(curl -s "http://127.0.0.1:$PORT/metrics")
    peak=$(sed -n 's/^rwkvl_peak_rss_bytes //p' <<<"$metrics")
    served=$(sed -n 's/^rwkvl_chat_completions_total //p' <<<"$metrics")
    if [ "${served%.*}" = 6 ] && [ -n "$peak" ] && [ "${peak%.*}" -le $((44 << 20)) ]; then
      echo "ok   under --mem-budget 44M: 6 chats served, peak RSS $((${peak%.*} >> 20)) MiB"
    else
      fail "under --mem-budget 44M: served ${served:-?}, peak RSS ${peak:-?} bytes"
    fi
    kill -TERM $SERVER 2>/dev/null
    wait $SERVER 2>/dev/null
  fi
fi
finish
