#!/usr/bin/env bash
# Issue #19, item 4: a compress run killed with SIGKILL (as a crash or the OOM killer would) and then run again with
# --resume writes the same bytes as a run that was never interrupted. The kill comes at a seeded random progress
# report (one inside stage 1's layers, one in the sparse FFN's collection or training, one near its end or in the
# cluster head), through the test hook
# RWKVL_TEST_KILL_AT_PROGRESS of the command; one run is killed twice (the resumed run killed again). Also: the
# journal is gone after a finished run; --resume with another recipe is refused and names what differs; without
# --resume a journal is replaced; a journal folder holding other files, and a damaged journal, are clear errors.
# usage: compress_resume.sh RWKV_LITE SHARED_DIR BUILD_DIR
. "$(dirname "$0")/lib/common.bash" "$@"
DIR=$SHARED/reference/tiny-rwkv
need_shared "$DIR" "$SHARED/data/wikitext2-valid.txt"
make_work resume
head -c 12000 "$SHARED/data/wikitext2-valid.txt" >"$WORK/calib.txt"
RECIPE=(--lowrank asvd --rank-frac 0.25 --quant int8 --sparse-ffn --epochs 2 --cluster-head 16 --head-epochs 2
  --calib "$WORK/calib.txt" --calib-tokens 1024 -t 2)
RANDOM=${RWKVL_TEST_SEED:-19}  # seeded: the same kill points every run (print them, to reproduce a failure)
if release_build; then MODELS="5v2-730K 7v0-834K"; KILLS=3; else MODELS="5v2-730K"; KILLS=2; fi

# Runs compress with the kill hook at progress report $1 (0: none); the rest are extra arguments.
run() {
  local k=$1
  shift
  if [ "$k" -gt 0 ]; then
    RWKVL_TEST_KILL_AT_PROGRESS=$k "$CLI" compress -m "$model" -o "$WORK/b.rwkvl" "${RECIPE[@]}" "$@" >"$WORK/run.log" 2>&1
  else
    "$CLI" compress -m "$model" -o "$WORK/b.rwkvl" "${RECIPE[@]}" "$@" >"$WORK/run.log" 2>&1
  fi
}

for m in $MODELS; do
  model=$DIR/tiny-rwkv-$m-FP32.bin
  rm -f "$WORK/a.rwkvl"
  if ! "$CLI" compress -m "$model" -o "$WORK/a.rwkvl" "${RECIPE[@]}" >"$WORK/a.log" 2>&1; then
    fail "$m: compress: $(tail -1 "$WORK/a.log")"
    continue
  fi
  [ -e "$WORK/a.rwkvl.journal" ] && fail "$m: the journal is left after a finished run"
  cp "$WORK/a.rwkvl" "$WORK/a-$m.rwkvl"
  for i in $(seq 1 "$KILLS"); do
    case $i in  # one kill in each part: stage 1's layers, the sparse FFN, its end and the cluster head
      1) k1=$((2 + RANDOM % 8)) ;;
      2) k1=$((10 + RANDOM % 50)) ;;
      *) k1=$((60 + RANDOM % 30)) ;;
    esac
    k2=0
    [ "$i" = 1 ] && k2=$((2 + RANDOM % 40))  # the first one is killed again after it resumed
    rm -rf "$WORK/b.rwkvl" "$WORK/b.rwkvl.journal"
    run "$k1" 2>/dev/null
    rc=$?
    if [ "$rc" != 137 ]; then
      fail "$m: the run with a kill at report $k1 ended with $rc, not SIGKILL (137): $(tail -1 "$WORK/run.log")"
      continue
    fi
    [ -f "$WORK/b.rwkvl" ] && fail "$m: a killed run left an output file"
    [ -f "$WORK/b.rwkvl.journal/journal.json" ] || fail "$m: a killed run (report $k1) left no journal"
    where=""
    if [ "$k2" -gt 0 ]; then
      run "$k2" --resume 2>/dev/null
      rc=$?
      [ "$rc" = 137 ] || fail "$m: the resumed run with a kill at report $k2 ended with $rc, not 137"
      where=" and again at $k2 of the resumed run"
    fi
    if ! run 0 --resume; then
      fail "$m: --resume after a kill at report $k1$where: $(tail -1 "$WORK/run.log")"
      continue
    fi
    from=$(sed -n 's/^resumed from the journal (\(.*\))$/\1/p' "$WORK/run.log")
    if cmp -s "$WORK/a.rwkvl" "$WORK/b.rwkvl"; then
      echo "ok   $m: killed at progress report $k1$where, --resume (from: $from) wrote the same bytes"
    else
      fail "$m: killed at report $k1$where, --resume ($from) wrote other bytes: $(cmp "$WORK/a.rwkvl" "$WORK/b.rwkvl" | head -1)"
    fi
    [ -z "$from" ] && fail "$m: --resume after a kill at report $k1 did not say where it resumed from"
    [ -e "$WORK/b.rwkvl.journal" ] && fail "$m: the journal is left after a resumed run finished"
  done
done

model=$DIR/tiny-rwkv-5v2-730K-FP32.bin
# Another recipe (other epochs) cannot continue the journal.
rm -rf "$WORK/b.rwkvl" "$WORK/b.rwkvl.journal"
run 30 2>/dev/null
RECIPE_OTHER=("${RECIPE[@]}")
RECIPE_OTHER[8]=3  # --epochs 3
if "$CLI" compress -m "$model" -o "$WORK/b.rwkvl" "${RECIPE_OTHER[@]}" --resume >"$WORK/run.log" 2>&1; then
  fail "--resume with another recipe ran"
elif grep -q "made with another recipe" "$WORK/run.log"; then
  echo "ok   --resume with another recipe is refused: $(grep -o 'cannot resume[^(]*' "$WORK/run.log")"
else
  fail "--resume with another recipe: unclear error: $(tail -1 "$WORK/run.log")"
fi
# A damaged journal is a clear error; without --resume a journal is replaced and the run is complete.
printf '{"version": 1, "key": ' >"$WORK/b.rwkvl.journal/journal.json"
if run 0 --resume; then
  fail "--resume with a damaged journal ran"
elif grep -q "journal.json' is damaged" "$WORK/run.log"; then
  echo "ok   a damaged journal: $(tail -1 "$WORK/run.log")"
else
  fail "a damaged journal: unclear error: $(tail -1 "$WORK/run.log")"
fi
if ! run 0; then
  fail "without --resume over a journal: $(tail -1 "$WORK/run.log")"
elif ! cmp -s "$WORK/a-5v2-730K.rwkvl" "$WORK/b.rwkvl"; then
  fail "without --resume over a journal: other bytes than the uninterrupted run"
elif grep -q "was replaced" "$WORK/run.log"; then
  echo "ok   without --resume a journal is replaced (and said so), the file is the uninterrupted run's"
else
  fail "without --resume: the replaced journal was not mentioned"
fi
# A journal folder that holds other files is never emptied.
rm -f "$WORK/b.rwkvl"
mkdir -p "$WORK/b.rwkvl.journal"
echo keep >"$WORK/b.rwkvl.journal/notes.txt"
if run 0; then
  fail "compress emptied a folder that is not a journal"
elif grep -q "not part of a compress journal" "$WORK/run.log" && [ -f "$WORK/b.rwkvl.journal/notes.txt" ]; then
  echo "ok   a journal folder with other files is refused and kept: $(tail -1 "$WORK/run.log")"
else
  fail "a journal folder with other files: $(tail -1 "$WORK/run.log")"
fi
finish
