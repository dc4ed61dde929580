#!/usr/bin/env bash
# The whole test suite: Release build + ctest, ASan/UBSan build + ctest, ThreadSanitizer on the threaded
# parts, the aarch64 build under qemu-user, and short libFuzzer runs of the loaders. Exits non-zero on the
# first failure. RWKVL_SKIP_TSAN=1, RWKVL_SKIP_AARCH64=1, RWKVL_SKIP_FUZZ=1 leave a stage out.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=$(nproc)
stage() {  # prints the time the previous stage took, then the next stage's title
  [[ -n "${STAGE_NAME:-}" ]] && echo "== ${STAGE_NAME}: $((SECONDS - STAGE_T0)) s"
  STAGE_NAME=$1 STAGE_T0=$SECONDS
  [[ -n "$1" ]] && echo "== $1"
  return 0
}

stage "dependencies"
bash scripts/install-deps.sh --test

stage "Release build + tests"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DRWKVL_WERROR=ON
cmake --build build -j"$JOBS"
ctest --test-dir build --output-on-failure -j"$JOBS"

stage "ASan + UBSan build + tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRWKVL_SANITIZE=ON -DRWKVL_BUILD_BENCH=OFF
cmake --build build-asan -j"$JOBS"
# cli_example_compress_and_eval compresses the reference model twice with the full recipe (k-means of 65,536
# head rows at K 200, 7 minutes under ASan) to compare the C example's bytes with the command's: the same
# library calls run under ASan in CompressApi.* (tiny model, the same recipe with a smaller K), and the
# comparison itself in the Release stage. cli_sparse_ffn_reference and cli_cluster_head_reference train the
# predictors and the cluster head on the reference model (5.5 and 3.4 minutes under ASan, a third of the stage's
# test time, which kept the whole run over an hour): the same passes and run-time paths run under ASan in
# CompressApi.*, CompressSpool.*, SparseTrain.*, SparseFfn*, ClusterHead.* and the head tests (tiny and synthesized
# models), cli_compress_reference and cli_memory_budget (every technique in one file); their figures are checked in
# the Release stage. cli_prune_reference (three prunings + perplexities of the reference model) and cli_prune_tiny
# (77 s under ASan) likewise: the pass, its options and the 2:4 files run under ASan in Prune.* and PrunePass.*.
# cli_stats_reference (134 s under ASan: 20,000 tokens of the reference model) checks figures; the same library call
# (rwkvl_ffn_sparsity_measure) runs under ASan in CompressApi.*. Three more checks of properties, not of memory
# safety, stay in Release (together 330 s of the stage's 1,630 s of test time under ASan): cli_compress_threads
# (the same bytes for any thread count: the threaded code runs under TSan and, single and multi-threaded, in
# CompressApi.*/CompressSpool.* here), cli_gguf_tiny (logits of GGUF files from the independent writer; the GGUF
# reader runs here in Gguf.*, every truncation and header byte flip, and under libFuzzer), and
# Compress.AsvdBeatsSvdOnEveryMatrix (an accuracy comparison of two factorisations run here by Compress.*).
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j"$JOBS" \
  -E '^(cli_example_compress_and_eval|cli_sparse_ffn_reference|cli_cluster_head_reference|cli_prune_reference|cli_prune_tiny|cli_stats_reference|cli_compress_threads|cli_gguf_tiny|Compress\.AsvdBeatsSvdOnEveryMatrix)$'


if [[ "${RWKVL_SKIP_TSAN:-0}" != "1" ]]; then
  # The threaded parts (thread pool, neuron cache and its prefetch thread, layer streaming with prefetch,
  # sessions, the server's slots, queue and shared state cache) under ThreadSanitizer: only the test programs that drive them are built.
  stage "ThreadSanitizer build + threaded tests"
  cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRWKVL_SANITIZE_THREAD=ON -DRWKVL_BUILD_BENCH=OFF \
    -DRWKVL_BUILD_EXAMPLES=OFF
  # rwkvl_threaded_tests (tests/CMakeLists.txt): test_threadpool, test_neuron_cache, test_session, test_head,
  # test_server, test_generation, test_storage, built in parallel.
  cmake --build build-tsan -j"$JOBS" --target rwkvl_threaded_tests
  # tests/tsan.supp: races TSan reports inside the uninstrumented cpp-httplib library (see the file).
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions="$PWD/tests/tsan.supp" ctest --test-dir build-tsan --output-on-failure -j"$JOBS" \
    -R '^(ThreadPool|NeuronCache|NeuronCacheRandom|MemoryPlan|Session|EmbCache|Storage|Server|Generate|PrefixCache)\.'
fi

if [[ -f scripts/test-aarch64.sh && "${RWKVL_SKIP_AARCH64:-0}" != "1" ]]; then
  stage "aarch64 (cross build, tests under qemu-user)"
  bash scripts/test-aarch64.sh
fi

if [[ -f scripts/fuzz.sh && "${RWKVL_SKIP_FUZZ:-0}" != "1" ]]; then
  stage "libFuzzer (short runs)"
  bash scripts/fuzz.sh 20
fi
stage ""
echo "== all tests passed in $SECONDS s"
