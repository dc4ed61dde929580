#!/usr/bin/env bash
# Output files: every command that writes one (convert, synth, compress, logits --out, eval --lambada-out,
# generate --state-out, stats --out/--plot, bench --budgets --plot) refuses a folder, a FIFO and a symlink
# at OUT, and a missing folder, before any work (the message names OUT, not the model that is never
# loaded) and leaves them as they were; what they write appears whole (no temporary left beside it);
# SIGINT, SIGTERM and SIGKILL at random moments of `compress` leave no file but a complete OUT.
# usage: output_safety.sh RWKV_LITE SHARED_DIR BUILD_DIR
. "$(dirname "$0")/lib/common.bash" "$@"
TINY=$SHARED/reference/tiny-rwkv/tiny-rwkv-5v2-730K-FP32.bin
need_shared "$TINY"
make_work output-safety

printf 'The quick brown fox jumps over the lazy dog. The cat sat on the mat.\n' >"$WORK/text.txt"
printf '{"text": "the cat sat on the mat"}\n{"text": "a dog ran in the park"}\n' >"$WORK/lambada.jsonl"
# A stand-in gnuplot: reads the script on stdin (it must not name an output file) and prints an SVG.
mkdir "$WORK/bin"
cat >"$WORK/bin/gnuplot" <<'EOF'
#!/bin/sh
script=$(cat)
case $script in *"set output"*) echo "fake gnuplot: the script sets an output file" >&2; exit 1 ;; esac
echo '<svg xmlns="http://www.w3.org/2000/svg"><!-- fake --></svg>'
EOF
chmod +x "$WORK/bin/gnuplot"

# run_cmd NAME MODEL OUT: the command NAME writing OUT (stdout/stderr to $WORK/stdout, $WORK/stderr).
run_cmd() {
  local name=$1 model=$2 out=$3
  case $name in
    convert) timeout 60 "$CLI" convert -m "$model" -o "$out" ;;
    synth) timeout 60 "$CLI" synth --arch 5 --layers 1 --embd 64 --vocab 256 -o "$out" ;;
    compress) timeout 60 "$CLI" compress -m "$model" -o "$out" --quant int8 ;;
    logits) timeout 60 "$CLI" logits -m "$model" --tokens 84,104,101 -o "$out" ;;
    eval) timeout 60 "$CLI" eval -m "$model" --lambada "$WORK/lambada.jsonl" --lambada-out "$out" ;;
    generate) timeout 60 "$CLI" generate -m "$model" -p "The" -n 4 --seed 1 --state-out "$out" ;;
    stats-out) timeout 60 "$CLI" stats -m "$model" --text "$WORK/text.txt" --out "$out" ;;
    stats-plot) PATH="$WORK/bin:$PATH" timeout 60 "$CLI" stats -m "$model" --text "$WORK/text.txt" --plot "$out" ;;
    bench-plot) PATH="$WORK/bin:$PATH" timeout 60 "$CLI" bench -m "$model" --budgets 64M --gen-tokens 2 \
      --prompt-tokens 2 --plot "$out" ;;
  esac >"$WORK/stdout" 2>"$WORK/stderr" </dev/null
}
COMMANDS="convert synth compress logits eval generate stats-out stats-plot bench-plot"

# ---- refusals: a folder, a FIFO, a symlink (to a file, and dangling) and a missing folder at OUT
T=$WORK/targets
mkdir -p "$T/dir"
mkfifo "$T/fifo"
echo "victim contents" >"$WORK/victim"
ln -s "$WORK/victim" "$T/link"
ln -s "$WORK/absent-victim" "$T/dangling"
state() {  # what is in $T, with types and the victim's contents
  (cd "$T" && ls -lA --time-style=+ . dir | awk '{print $1, $NF}')
  cat "$WORK/victim"
  [ -e "$WORK/absent-victim" ] && echo "absent-victim exists"
}
state >"$WORK/state.before"
ABSENT_MODEL=$WORK/never-loaded-model.bin
for name in $COMMANDS; do
  for what in dir fifo link dangling missing; do
    out=$T/$what
    [ $what = missing ] && out=$T/no-such-folder/out.bin
    run_cmd "$name" "$ABSENT_MODEL" "$out"
    rc=$?
    why=""
    if [ $rc -eq 0 ] || [ $rc -ge 124 ]; then why="exit code $rc"; fi
    grep -qF -- "$out" "$WORK/stderr" || why="$why; stderr does not name $out"
    grep -q "never-loaded-model" "$WORK/stderr" && why="$why; the model was opened before the output was checked"
    grep -q "\.tmp" "$WORK/stderr" && why="$why; the message names a temporary file"
    state >"$WORK/state.after"
    cmp -s "$WORK/state.before" "$WORK/state.after" || why="$why; $T changed: $(diff "$WORK/state.before" "$WORK/state.after" | tr '\n' ' ')"
    if [ -z "$why" ]; then
      echo "ok   $name refuses $what: $(head -1 "$WORK/stderr")"
    else
      fail "$name with OUT = $what: $why"
      sed 's/^/     stderr: /' "$WORK/stderr" | head -3
      rm -rf "$T" && mkdir -p "$T/dir" && mkfifo "$T/fifo" && ln -s "$WORK/victim" "$T/link" &&
        ln -s "$WORK/absent-victim" "$T/dangling" && echo "victim contents" >"$WORK/victim" && rm -f "$WORK/absent-victim"
    fi
  done
done
for dev in /dev/null /dev/full; do
  if [ -c $dev ]; then
    run_cmd convert "$TINY" $dev
    rc=$?
    if [ $rc -ne 0 ] && [ $rc -lt 124 ] && grep -qF "'$dev'" "$WORK/stderr" && [ -c $dev ]; then
      echo "ok   convert refuses $dev"
    else
      fail "convert -o $dev: exit $rc, $(head -1 "$WORK/stderr")"
    fi
  fi
done

# ---- what is written appears whole, alone, and replaces an existing file
OK=$WORK/ok
mkdir "$OK"
for name in $COMMANDS; do
  case $name in
    synth) model="" ;;
    *) model=$TINY ;;
  esac
  for round in new replace; do
    [ $round = replace ] && echo "old contents" >"$OK/$name"
    if ! run_cmd "$name" "$model" "$OK/$name"; then
      fail "$name ($round) exited with an error: $(tail -2 "$WORK/stderr")"
      continue
    fi
    listing=$(ls -A "$OK" | grep -v -x -E "$(echo $COMMANDS | tr ' ' '|')")
    if [ -n "$listing" ]; then
      fail "$name ($round) left files beside its output: $listing"
      rm -f "$OK"/.[!.]* "$OK"/*.tmp*
    elif [ ! -s "$OK/$name" ] || echo "old contents" | cmp -s - "$OK/$name"; then
      fail "$name ($round) did not write $OK/$name"
    else
      echo "ok   $name ($round) wrote its output and nothing else"
    fi
  done
done
for m in convert synth compress; do
  "$CLI" info -m "$OK/$m" >/dev/null 2>&1 || fail "info -m $OK/$m: the written model does not load"
done
grep -q "<svg" "$OK/stats-plot" 2>/dev/null || fail "stats --plot did not store gnuplot's SVG"

# ---- signals during compress: nothing but a complete OUT (and the journal of an interrupted run) is ever left
# The model is sized so one compress takes a second or two (the file written in its last ~10 %): the
# small shape first, the larger one where the small one is quick (Release; sanitizer builds are slower).
time_compress() {  # time_compress MODEL OUT -> milliseconds in $ms
  local t0
  t0=$(date +%s%N)
  "$CLI" compress -m "$1" --lowrank svd --rank-frac 0.25 --targets all -t 2 -o "$2" >/dev/null 2>&1 ||
    fail "uninterrupted compress of $1 failed"
  ms=$((($(date +%s%N) - t0) / 1000000))
}
mkdir "$WORK/ref"
BIG=$WORK/small.rwkvl
"$CLI" synth --arch 5 --layers 2 --embd 128 --vocab 32768 -o "$BIG" >/dev/null 2>&1 || fail "synth of the signal-test model"
time_compress "$BIG" "$WORK/ref/out.rwkvl"
if [ "$ms" -lt 700 ]; then
  rm -f "$BIG"
  BIG=$WORK/big.rwkvl
  "$CLI" synth --arch 5 --layers 4 --embd 256 --vocab 32768 -o "$BIG" >/dev/null 2>&1 || fail "synth of the signal-test model"
  time_compress "$BIG" "$WORK/ref/out.rwkvl"
fi
echo "     uninterrupted compress of $(basename "$BIG"): $ms ms"
COMPRESS=(compress -m "$BIG" --lowrank svd --rank-frac 0.25 --targets all -t 2)
set -m  # background jobs in their own process group: SIGINT is not ignored by them
i=0
resumed=0
for sig in INT TERM KILL INT TERM KILL INT TERM KILL; do
  i=$((i + 1))
  dir=$WORK/sig$i
  mkdir "$dir"
  existing=no
  if [ $((i % 2)) = 0 ]; then
    cp "$WORK/ref/out.rwkvl" "$dir/out.rwkvl"
    existing=yes
  fi
  # Mostly near the end, where the file is written; one in three anywhere from 20 %.
  if [ $((i % 3)) = 1 ]; then pct=$((20 + RANDOM % 70)); else pct=$((85 + RANDOM % 20)); fi
  delay=$((ms * pct / 100))
  "$CLI" "${COMPRESS[@]}" -o "$dir/out.rwkvl" >/dev/null 2>&1 &
  pid=$!
  sleep "$((delay / 1000)).$(printf '%03d' $((delay % 1000)))"
  kill -s $sig $pid 2>/dev/null
  wait $pid 2>/dev/null
  rc=$?
  outcome="exit $rc"
  [ $rc -gt 128 ] && outcome="killed by $(kill -l $((rc - 128)))"
  # An interrupted run keeps its journal (issue #19: --resume continues it): journal files only, and the resumed run
  # writes the uninterrupted run's bytes.
  if [ -d "$dir/out.rwkvl.journal" ]; then
    other=$(ls -A "$dir/out.rwkvl.journal" | grep -v -x -E 'journal\.json|spool|calib-[0-9]+\.bin' | tr '\n' ' ')
    [ -n "$other" ] && fail "SIG$sig at $pct% ($outcome): the journal holds other files: $other"
    if [ $rc = 0 ]; then
      fail "SIG$sig at $pct% ($outcome): a finished run left its journal"
    elif [ "$resumed" -ge 2 ]; then  # (two resumed runs are enough: compress_resume.sh kills at many more points)
      echo "ok   SIG$sig at $pct% ($outcome): left a journal (not resumed here)"
    elif resumed=$((resumed + 1)) && mv "$dir/out.rwkvl.journal" "$dir/resumed.rwkvl.journal" &&
      "$CLI" "${COMPRESS[@]}" -o "$dir/resumed.rwkvl" --resume >"$dir/resume.log" 2>&1 && cmp -s "$dir/resumed.rwkvl" "$WORK/ref/out.rwkvl" &&
      [ ! -e "$dir/resumed.rwkvl.journal" ]; then
      echo "ok   SIG$sig at $pct% ($outcome): the journal it left resumes to the uninterrupted run's bytes"
    else
      fail "SIG$sig at $pct% ($outcome): resuming from the journal it left failed: $(tail -1 "$dir/resume.log" 2>/dev/null)"
    fi
    rm -rf "$dir/out.rwkvl.journal" "$dir/resumed.rwkvl" "$dir/resumed.rwkvl.journal" "$dir/resume.log"
  fi
  listing=$(ls -A "$dir" | tr '\n' ' ')
  case "$listing" in
    "") if [ $existing = yes ] || [ $rc = 0 ]; then fail "SIG$sig at $pct% ($outcome): OUT is missing"; else echo "ok   SIG$sig at $pct% ($outcome, existing OUT: $existing): nothing left"; fi ;;
    "out.rwkvl ")
      if "$CLI" info -m "$dir/out.rwkvl" >/dev/null 2>&1; then
        echo "ok   SIG$sig at $pct% ($outcome, existing OUT: $existing): only a complete OUT"
      else
        fail "SIG$sig at $pct% ($outcome): OUT does not load"
      fi ;;
    *) fail "SIG$sig at $pct% ($outcome, existing OUT: $existing): left $listing" ;;
  esac
  rm -rf "$dir"
done
set +m

finish "all output-safety checks passed"
