#!/usr/bin/env bash
# Builds rwkv.cpp (commit 4358e70, the one measured in docs/BENCHMARKS) with its ggml (c8bd0fe) as the side-by-side
# peer of side_by_side.sh, plus the harness rwkvcpp_peer.c beside this script.
# usage: build-rwkvcpp.sh RWKVCPP_GIT_DIR GGML_GIT_DIR OUT_DIR [--official-eps]
#   RWKVCPP_GIT_DIR, GGML_GIT_DIR: git directories (clones or bare snapshots) of RWKV/rwkv.cpp and ggerganov/ggml.
#   --official-eps: rwkv.cpp runs RWKV-5.x with GroupNorm eps 1e-5 where the official code (and rwkv-lite on .pth
#   files) uses 64e-5; this makes rwkv.cpp use 64e-5 so perplexities of .pth-derived models compare like with like.
# rwkv.cpp is built with -march=native (RWKV_NATIVE): the peer gets every instruction this machine has, as
# rwkv-lite picks its kernels at run time. Needs: cmake, a C/C++ compiler, git. Files a snapshot lacks (large test models) are skipped.
set -eu
if [ $# -lt 3 ]; then sed -n 2,8p "$0" >&2; exit 2; fi
R=$1; G=$2; O=$3; EPS=${4:-}
HERE=$(cd "$(dirname "$0")" && pwd)
RC=4358e70; GC=c8bd0fee71dc8328d93be301bbee06bc10d30429
for d in "$R" "$G"; do git --git-dir="$d" rev-parse -q --verify HEAD >/dev/null || { echo "not a git directory: $d" >&2; exit 1; }; done
git --git-dir="$R" cat-file -e "$RC^{commit}" 2>/dev/null || { echo "$R lacks rwkv.cpp commit $RC" >&2; exit 1; }
git --git-dir="$G" cat-file -e "$GC^{commit}" 2>/dev/null || { echo "$G lacks ggml commit $GC" >&2; exit 1; }
mkdir -p "$O"; O=$(cd "$O" && pwd)
S="$O/rwkv.cpp"; rm -rf "$S"; mkdir -p "$S"
# Only the blobs the snapshot holds (bare snapshots may lack large files; rwkv.cpp's tests do not need them).
git --git-dir="$R" ls-tree -r "$RC" | while read -r mode type hash path; do
  [ "$type" = blob ] || continue
  if git --git-dir="$R" cat-file -e "$hash" 2>/dev/null; then printf '%s\0' "$path"; else echo "skipped (not in the snapshot): $path" >&2; fi
done | xargs -0 git --git-dir="$R" archive "$RC" -- | tar x -C "$S"
mkdir -p "$S/ggml" && git --git-dir="$G" archive "$GC" | tar x -C "$S/ggml"
if [ "$EPS" = --official-eps ]; then
  grep -q 'x = ggml_norm(ctx, x, 1e-5f);' "$S/rwkv_graph.inc" || { echo "rwkv_graph.inc: the v5 group norm line moved" >&2; exit 1; }
  sed -i 's/x = ggml_norm(ctx, x, 1e-5f);/x = ggml_norm(ctx, x, 64e-5f);/' "$S/rwkv_graph.inc"
fi
cmake -S "$S" -B "$S/build" -DCMAKE_BUILD_TYPE=Release -DRWKV_STANDALONE=ON -DRWKV_NATIVE=ON >"$O/cmake.log" 2>&1 || { echo "cmake failed, see $O/cmake.log" >&2; exit 1; }
cmake --build "$S/build" -j"$(nproc)" --target rwkv >"$O/build.log" 2>&1 || { echo "rwkv.cpp build failed, see $O/build.log" >&2; exit 1; }
lib=$(find "$S/build" -name 'librwkv.so' | head -n 1)
[ -n "$lib" ] || { echo "no librwkv.so under $S/build" >&2; exit 1; }
cc -O2 -Wall "$HERE/rwkvcpp_peer.c" -I "$S" -L "$(dirname "$lib")" -lrwkv -lm -Wl,-rpath,"$(dirname "$lib")" -o "$O/rwkvcpp_peer"
echo "built $O/rwkvcpp_peer against $lib"
