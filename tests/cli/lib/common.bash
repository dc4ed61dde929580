# Shared by the CLI tests (tests/cli/*.sh), sourced first thing:
#   . "$(dirname "$0")/lib/common.bash" "$@"
# Every test is called as: TEST.sh RWKV_LITE SHARED_DIR BUILD_DIR (tests/CMakeLists.txt). This sets CLI, SHARED
# and BUILD and defines:
#   make_work NAME  WORK = a fresh folder under BUILD, removed when the test exits
#   fail MSG...     prints "FAIL MSG" and counts a failed check (a test may define its own)
#   finish [MSG]    exits 1 naming the number of failed checks, else prints MSG (or "all checks passed"), exits 0
# A test that cannot run here (missing reference data, a tool) exits 77: ctest reports it as skipped.
set -u
CLI=$1
SHARED=${2:-}
BUILD=${3:-${TMPDIR:-/tmp}}
failures=0

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
