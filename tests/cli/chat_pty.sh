#!/usr/bin/env bash
# rwkv-lite chat driven through a pseudo-terminal (tests/cli/lib/chat_pty.py) on the World-vocabulary reference
# model, dense and under a memory budget: /save, /reset, /load give the same next greedy reply; /regen repeats it.
# usage: chat_pty.sh RWKV_LITE SHARED_DIR BUILD_DIR
. "$(dirname "$0")/lib/common.bash" "$@"
MODEL=$SHARED/reference/models/rwkv5-world-l8-d256/model.pth
need_shared "$MODEL" "$SHARED/reference/tokenizers/rwkv_vocab_v20230424.txt"
command -v python3 >/dev/null || { echo "skip: python3 missing"; exit 77; }
make_work chat_pty
export RWKVL_TOKENIZER_DIR=$SHARED/reference/tokenizers
python3 "$(dirname "$0")/lib/chat_pty.py" "$CLI" "$MODEL" "$WORK" || fail "chat through a terminal"
# A native f16 file run within a memory budget (layers streamed from the file). 24 MiB is a few MiB above the
# plan's minimum in a Release build; sanitizer builds start at about 84 MiB resident.
BUDGET=120M
release_build && BUDGET=24M
if "$CLI" convert -m "$MODEL" -o "$WORK/m.rwkvl" --dtype f16 >/dev/null 2>&1; then
  python3 "$(dirname "$0")/lib/chat_pty.py" "$CLI" "$WORK/m.rwkvl" "$WORK" --mem-budget $BUDGET || fail "chat under --mem-budget $BUDGET"
else
  fail "convert to f16"
fi
finish
