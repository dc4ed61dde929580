#!/usr/bin/env bash
# The files compiled with wider instruction sets than the build's baseline (*_avx2.cpp, *_avx512.cpp) must not define
# a function that other files may define too (an inline function, a template instantiation: "weak" symbols that the
# linker keeps one copy of, for every file): the kept copy could be the AVX-512 one, and a CPU without AVX-512 would
# then run it from baseline code and die (SIGILL). Their own code lives in namespaces of their instruction set
# (isa_avx2, isa_avx512, Eigen renamed Eigen_avx2 / Eigen_avx512, or internal linkage); anything else weak fails.
# usage: check_isa_objects.sh OBJECT_DIR  (the library's object files, e.g. build/CMakeFiles/rwkvlite.dir)
set -u
DIR=${1:?usage: check_isa_objects.sh OBJECT_DIR}
command -v nm >/dev/null || { echo "skip: nm not found"; exit 77; }
mapfile -t OBJS < <(find "$DIR" \( -name '*_avx2.cpp.o' -o -name '*_avx512.cpp.o' \) | sort)
if [ ${#OBJS[@]} -eq 0 ]; then
  echo "skip: no AVX2/AVX-512 objects under $DIR (not an x86-64 build)"
  exit 77
fi
bad=0
for o in "${OBJS[@]}"; do
  shared=$(nm -C "$o" | awk '$2 ~ /^[WVuwv]$/ {sub(/^[^ ]* [^ ]* /, ""); print}' |
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
