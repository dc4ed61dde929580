#!/usr/bin/env bash
# eval's LAMBADA part against an independent computation: a Python script (standard library only) splits
# each passage as lm-eval's lambada_openai does (context = text up to the last space, target = " " + last
# word, trailing white space of the context moved to the target), tokenizes with `rwkv-lite tokenize`
# (World) or as bytes, takes target tokens = tok(context + target)[len(tok(context)):], and scores them
# from `rwkv-lite logits` after every prefix (NLL by log-softmax, greedy = argmax). Compared per passage
# (--lambada-out) and in total (acc, per-passage ppl, counts), on a trained byte-level model (crafted
# passages, some of which it gets right) and a synthetic World-vocabulary model (real LAMBADA passages).
# Also: results do not depend on -t (passages split across workers), --lambada-max, blank lines.
# usage: eval_lambada.sh RWKV_LITE SHARED_DIR BUILD_DIR
. "$(dirname "$0")/lib/common.bash" "$@"
TINY=$SHARED/reference/tiny-rwkv/tiny-rwkv-5v2-730K-FP32.bin
VOCAB=$SHARED/reference/tokenizers/rwkv_vocab_v20230424.txt
LAMBADA=$SHARED/data/lambada_openai_test.jsonl
PY=/usr/bin/python3
need_shared "$TINY" "$VOCAB" "$LAMBADA"
[ -x "$PY" ] || { echo "skip: $PY not found"; exit 77; }
make_work eval-lambada

cat >"$WORK/check.py" <<'EOF'
# check.py CLI MODEL KIND(byte|world) VOCAB JSONL DETAILS SUMMARY WORKDIR
import json, math, struct, subprocess, sys

cli, model, kind, vocab, jsonl, details_path, summary_path, work = sys.argv[1:9]

def tok(text):
    if kind == "byte":
        return list(text.encode("utf-8"))
    path = work + "/tok.txt"
    with open(path, "wb") as f:
        f.write(text.encode("utf-8"))
    out = subprocess.run([cli, "tokenize", "--tokenizer-kind", "world", "--tokenizer", vocab, "-f", path],
                         capture_output=True, text=True, check=True).stdout.strip()
    return [int(x) for x in out.split(",")] if out else []

def logits_after(ids):
    out = work + "/l.bin"
    subprocess.run([cli, "logits", "-m", model, "--tokens", ",".join(map(str, ids)), "-o", out],
                   capture_output=True, check=True)
    data = open(out, "rb").read()
    return struct.unpack("<%df" % (len(data) // 4), data)

docs = []
for n, line in enumerate(open(jsonl, encoding="utf-8"), 1):
    if line.strip():
        docs.append((n, json.loads(line)["text"]))
details = [json.loads(l) for l in open(details_path)]
summary = json.load(open(summary_path))
bad = 0
def check(cond, what):
    global bad
    if not cond:
        bad += 1
        print("FAIL " + what)

if len(details) != len(docs):
    print("FAIL %d detail lines for %d passages" % (len(details), len(docs)))
    sys.exit(1)
total_nll, n_correct, n_target = 0.0, 0, 0
for (line, text), d in zip(docs, details):
    # lm-eval lambada_openai: doc_to_text / doc_to_target, then _encode_pair's white-space move
    context = " ".join(text.split(" ")[:-1])
    target = " " + text.split(" ")[-1]
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        target = context[-n_spaces:] + target
        context = context[:-n_spaces]
    whole, ctx = tok(context + target), tok(context)
    if whole[:len(ctx)] == ctx and len(whole) > len(ctx):
        tgt = whole[len(ctx):]
    else:
        tgt = tok(target)
    check(d["line"] == line, "passage at line %d reported as line %s" % (line, d["line"]))
    check(d["context_tokens"] == len(ctx), "line %d: %s context tokens, expected %d" % (line, d["context_tokens"], len(ctx)))
    check(d["target"] == tgt, "line %d: target tokens %s, expected %s" % (line, d["target"], tgt))
    nll, correct = 0.0, True
    for j in range(len(tgt)):
        v = logits_after(ctx + tgt[:j])
        m = max(v)
        nll += math.log(sum(math.exp(x - m) for x in v)) + m - v[tgt[j]]
        top = sorted(v, reverse=True)[:2]
        best = v.index(top[0])
        if top[0] - top[1] > 1e-3:  # a near tie could go either way under float rounding
            check(d["greedy"][j] == best, "line %d: greedy token %d is %s, argmax %d" % (line, j, d["greedy"][j], best))
        correct = correct and best == tgt[j]
    check(abs(d["nll"] - nll) <= 1e-3 + 1e-5 * nll, "line %d: NLL %.6f, expected %.6f" % (line, d["nll"], nll))
    check(d["correct"] == correct, "line %d: correct %s, expected %s" % (line, d["correct"], correct))
    print("ok   line %d: %d context + %d target tokens, NLL %.5f (eval %.5f), correct %s"
          % (line, len(ctx), len(tgt), nll, d["nll"], correct))
    total_nll += nll
    n_correct += correct
    n_target += len(tgt)
n = len(docs)
check(summary["lambada_n"] == n, "lambada_n %s, expected %d" % (summary["lambada_n"], n))
check(summary["lambada_target_tokens"] == n_target, "lambada_target_tokens %s, expected %d" % (summary["lambada_target_tokens"], n_target))
check(abs(summary["lambada_acc"] - n_correct / n) < 1e-12, "lambada_acc %s, expected %s" % (summary["lambada_acc"], n_correct / n))
ppl = math.exp(total_nll / n)
check(abs(summary["lambada_ppl"] - ppl) <= 1e-4 * ppl, "lambada_ppl %s, expected %s" % (summary["lambada_ppl"], ppl))
tppl = math.exp(total_nll / n_target)
check(abs(summary["lambada_token_ppl"] - tppl) <= 1e-4 * tppl, "lambada_token_ppl %s, expected %s" % (summary["lambada_token_ppl"], tppl))
print("%s  acc %d/%d, ppl %.4f (eval %.4f), per-token ppl %.4f" % ("ok  " if not bad else "FAIL", n_correct, n, ppl, summary["lambada_ppl"], tppl))
sys.exit(1 if bad else 0)
EOF

run_eval() {  # run_eval SUMMARY DETAILS ARGS...
  local summary=$1 details=$2
  shift 2
  if ! "$CLI" eval "$@" --lambada-out "$details" --json >"$summary" 2>"$summary.err"; then
    fail "eval $* exited with an error: $(cat "$summary.err")"
    return 1
  fi
}

# ---- trained byte-level model, crafted passages (a blank line in the middle; a double space and non-ASCII
# text before the last word; repetitions the model continues correctly)
{
  echo '{"text": "the cat sat on the mat. the cat sat on the mat. the cat sat on the mat. the cat sat on the mat"}'
  echo ''
  echo '{"text": "She opened the door,\nlooked outside and saw the"}'
  echo '{"text": "Zo\u00eb said hello to  everyone"}'
  echo '{"text": "one two three four five one two three four five one two three four five one two three four five"}'
} >"$WORK/crafted.jsonl"
if run_eval "$WORK/b.json" "$WORK/b.details" -m "$TINY" --lambada "$WORK/crafted.jsonl" -t 2; then
  if "$PY" "$WORK/check.py" "$CLI" "$TINY" byte "$VOCAB" "$WORK/crafted.jsonl" "$WORK/b.details" "$WORK/b.json" \
    "$WORK"; then
    echo "ok   byte model: eval matches the independent computation"
  else
    fail "byte model: eval differs from the independent computation"
  fi
  grep -q '"correct":true' "$WORK/b.details" || fail "no crafted passage predicted correctly (test is weaker)"
  grep -q '"ppl":null' "$WORK/b.json" || fail "ppl is not null without --text"
  # one worker with one thread: the same results
  if run_eval "$WORK/b1.json" "$WORK/b1.details" -m "$TINY" --lambada "$WORK/crafted.jsonl" -t 1; then
    if cmp -s "$WORK/b.details" "$WORK/b1.details"; then
      echo "ok   -t 1 and -t 2 give identical per-passage results"
    else
      fail "-t 1 and -t 2 differ: $(diff "$WORK/b.details" "$WORK/b1.details" | head -4)"
    fi
  fi
fi

# ---- World-vocabulary model (synthetic weights): the first real LAMBADA passages plus a crafted one
"$CLI" synth -o "$WORK/w.rwkvl" --arch 5 --layers 1 --embd 32 --head-size 16 --vocab 65536 >/dev/null 2>&1 ||
  fail "synth World-size model"
{
  head -n 3 "$LAMBADA"
  echo '{"text": "\u201cWell,\u201d said the caf\u00e9 owner, \u201cit\u2019s the na\u00efve  r\u00e9sum\u00e9\u201d"}'
} >"$WORK/real.jsonl"
if run_eval "$WORK/w.json" "$WORK/w.details" -m "$WORK/w.rwkvl" --tokenizer "$VOCAB" --lambada "$WORK/real.jsonl" \
  -t 2; then
  if "$PY" "$WORK/check.py" "$CLI" "$WORK/w.rwkvl" world "$VOCAB" "$WORK/real.jsonl" "$WORK/w.details" \
    "$WORK/w.json" "$WORK"; then
    echo "ok   World model: eval matches the independent computation"
  else
    fail "World model: eval differs from the independent computation"
  fi
fi

# ---- --lambada-max N: the first N passages only
if run_eval "$WORK/m.json" "$WORK/m.details" -m "$TINY" --lambada "$LAMBADA" --lambada-max 2; then
  if grep -q '"lambada_n":2[,}]' "$WORK/m.json" && [ "$(wc -l <"$WORK/m.details")" = 2 ]; then
    echo "ok   --lambada-max 2"
  else
    fail "--lambada-max 2: $(cat "$WORK/m.json")"
  fi
fi

finish "all eval LAMBADA checks passed"
