#!/usr/bin/env bash
# Issue #14, item 8: the thread count changes neither what compress writes nor the logits of a sparse-FFN
# file. For the v5.2 and v7 tiny models, a recipe with every pass (asvd 1/4 + int8 + sparse FFN with
# predictors + cluster head, the cluster head calibrated through the sparse FFN) is written with --threads 1
# and --threads 2 and the files compared byte for byte; then the logits of the sparse file (predict, exact
# and dense modes, sequence and RNN mode) compared bit for bit between -t 1, -t 2 and -t 3.
# usage: compress_threads.sh RWKV_LITE SHARED_DIR BUILD_DIR
. "$(dirname "$0")/lib/common.bash" "$@"
DIR=$SHARED/reference/tiny-rwkv
if [ ! -d "$DIR" ] || [ ! -f "$SHARED/data/wikitext2-valid.txt" ]; then
  echo "skip: $DIR or $SHARED/data not found"
  exit 77
fi
make_work threads
head -c 12000 "$SHARED/data/wikitext2-valid.txt" >"$WORK/calib.txt"
TEXT="The quick brown fox jumps over the lazy dog, and then it runs away into the forest."

for m in 5v2-730K 7v0-834K; do
  model=$DIR/tiny-rwkv-$m-FP32.bin
  for t in 1 2; do
    if ! "$CLI" compress -m "$model" -o "$WORK/$m-t$t.rwkvl" --threads $t --lowrank asvd --rank-frac 0.25 \
      --quant int8 --sparse-ffn --epochs 2 --cluster-head 16 --head-epochs 2 --calib "$WORK/calib.txt" \
      --calib-tokens 1024 >"$WORK/$m-t$t.log" 2>&1; then
      fail "$m: compress --threads $t: $(tail -1 "$WORK/$m-t$t.log")"
      continue 2
    fi
  done
  if cmp -s "$WORK/$m-t1.rwkvl" "$WORK/$m-t2.rwkvl"; then
    echo "ok   $m: compress writes the same bytes with 1 and 2 threads"
  else
    fail "$m: compress --threads 1 and --threads 2 wrote different files ($(cmp "$WORK/$m-t1.rwkvl" "$WORK/$m-t2.rwkvl" | head -1))"
  fi
  for mode in predict exact dense; do
    for chunk in 0 1; do
      for t in 1 2 3; do
        "$CLI" logits -m "$WORK/$m-t1.rwkvl" --text "$TEXT" --ffn-mode $mode --chunk $chunk -t $t \
          -o "$WORK/logits-$t.bin" >/dev/null 2>"$WORK/logits.err" || fail "$m $mode: logits -t $t: $(tail -1 "$WORK/logits.err")"
      done
      # The same through the neuron cache (streamed neurons, a different code path), with 2 threads.
      "$CLI" logits -m "$WORK/$m-t1.rwkvl" --text "$TEXT" --ffn-mode $mode --chunk $chunk -t 2 --ffn-cache 60% \
        -o "$WORK/logits-c.bin" >/dev/null 2>"$WORK/logits.err" || fail "$m $mode: logits --ffn-cache: $(tail -1 "$WORK/logits.err")"
      if cmp -s "$WORK/logits-1.bin" "$WORK/logits-2.bin" && cmp -s "$WORK/logits-1.bin" "$WORK/logits-3.bin" &&
        cmp -s "$WORK/logits-1.bin" "$WORK/logits-c.bin"; then
        echo "ok   $m: --ffn-mode $mode --chunk $chunk: the same logits bits with 1, 2 and 3 threads and with a cache"
      else
        fail "$m: --ffn-mode $mode --chunk $chunk: logits differ between -t 1, 2, 3 and --ffn-cache"
      fi
    done
  done
done
finish
