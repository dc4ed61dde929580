# Shared by the CLI tests (tests/cli/*.sh), sourced first thing:
#   . "$(dirname "$0")/lib/common.bash" "$@"
# Every test is called as: TEST.sh RWKV_LITE SHARED_DIR BUILD_DIR (tests/CMakeLists.txt). This sets CLI, SHARED
# and BUILD and defines:
#   make_work NAME  WORK = a fresh folder under BUILD, removed when the test exits
#   fail MSG...     prints "FAIL MSG" and counts a failed check (a test may define its own)
#   release_build   true for a Release build (sanitizer builds run the reference-model figures on less data)
#   finish [MSG]    exits 1 naming the number of failed checks, else prints MSG (or "all checks passed"), exits 0
#   need_shared PATH...  every PATH (reference data under SHARED) must exist, else the test stops: exit 1
#                   (a failure), or exit 77 (skipped) when RWKVL_ALLOW_NO_SHARED=1
#   have_shared PATH...  for a part of a test: true when every PATH exists; else false, after counting a
#                   failure (or, with RWKVL_ALLOW_NO_SHARED=1, printing that the part is skipped)
# Reference data that silently disappears must not turn its checks into skips: a missing ../shared fails
# unless RWKVL_ALLOW_NO_SHARED=1 says it may. A missing tool (python3) exits 77: ctest reports a skip.
set -u
CLI=$1
SHARED=${2:-}
BUILD=${3:-${TMPDIR:-/tmp}}
failures=0
# Tolerances (max abs logit difference), the same figures as tests/support/compare.h, where they are
# explained with what they were measured at.
TINY_FP32_LOGIT_TOL=1e-5        # kTinyFp32LogitTol: tiny FP32 models vs expected-logits-*.bin
REFERENCE_MODEL_LOGIT_TOL=1e-5  # kReferenceModelLogitTol: the .pth reference model vs its float64 logits

missing_shared() {
  local p missing=""
  for p in "$@"; do [ -e "$p" ] || missing="$missing $p"; done
  echo "${missing# }"
}

need_shared() {
  local missing
  missing=$(missing_shared "$@")
  [ -z "$missing" ] && return 0
  if [ "${RWKVL_ALLOW_NO_SHARED:-}" = 1 ]; then
    echo "skip: reference data missing: $missing (RWKVL_ALLOW_NO_SHARED=1)"
    exit 77
  fi
  echo "FAIL reference data missing: $missing (shared folder '$SHARED'; set RWKVL_ALLOW_NO_SHARED=1 to skip)"
  exit 1
}

have_shared() {
  local missing
  missing=$(missing_shared "$@")
  [ -z "$missing" ] && return 0
  if [ "${RWKVL_ALLOW_NO_SHARED:-}" = 1 ]; then
    echo "skip part: reference data missing: $missing (RWKVL_ALLOW_NO_SHARED=1)"
  else
    fail "reference data missing: $missing (shared folder '$SHARED'; set RWKVL_ALLOW_NO_SHARED=1 to skip)"
  fi
  return 1
}

# True for a Release build of the tool. Tests that check a published figure on the reference model run it in
# full there; sanitizer builds (10-20x slower) run the same code paths on less data and check what that allows.
release_build() {
  "$CLI" --version 2>/dev/null | grep -q "| Release |"
}

fail() {
  echo "FAIL $*"
  failures=$((failures + 1))
}

make_work() {
  WORK=$(mktemp -d "${BUILD%/}/cli-$1.XXXXXX") || exit 1
  trap 'rm -rf "$WORK"' EXIT
}

finish() {
  if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
  fi
  echo "${1:-all checks passed}"
  exit 0
}
