#!/usr/bin/env bash
# The files compiled with wider instruction sets than the build's baseline (*_avx2.cpp, *_avx512.cpp) must not define
# a function that other files may define too (an inline function, a template instantiation: "weak" symbols that the
# linker keeps one copy of, for every file): the kept copy could be the AVX-512 one, and a CPU without AVX-512 would
# then run it from baseline code and die (SIGILL). Their own code lives in namespaces of their instruction set
# (isa_avx2, isa_avx512, Eigen renamed Eigen_avx2 / Eigen_avx512, or internal linkage); anything else weak fails.
# usage: check_isa_objects.sh LIBRARY  (the static library, e.g. build/librwkvlite.a: its members as linked)
set -u
LIB=${1:?usage: check_isa_objects.sh LIBRARY}
command -v nm >/dev/null && command -v ar >/dev/null || { echo "skip: nm or ar not found"; exit 77; }
mapfile -t OBJS < <(ar t "$LIB" | grep -E '_avx(2|512)\.cpp\.o$' | sort)
if [ ${#OBJS[@]} -eq 0 ]; then
  echo "skip: no AVX2/AVX-512 objects in $LIB (not an x86-64 build)"
  exit 77
fi
TMP=$(mktemp -d) || exit 1
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && ar x "$LIB" "${OBJS[@]}") || { echo "FAIL cannot extract the objects from $LIB"; exit 1; }
bad=0
for name in "${OBJS[@]}"; do
  o=$TMP/$name
  shared=$(nm -C "$o" | awk '$2 ~ /^[WVu]$/ {sub(/^[^ ]* [^ ]* /, ""); print}' |
    grep -v -E 'Eigen_avx2|Eigen_avx512|isa_avx2|isa_avx512|^DW\.ref\.__gxx_personality_v0$')
  if [ -n "$shared" ]; then
    echo "FAIL $(basename "$o") defines weak symbols the baseline may share:"
    echo "$shared" | head -20 | sed 's/^/       /'
    bad=$((bad + 1))
  else
    echo "ok   $(basename "$o")"
  fi
done
[ $bad -eq 0 ] || exit 1
echo "all ${#OBJS[@]} wide-instruction-set objects keep their functions to themselves"
