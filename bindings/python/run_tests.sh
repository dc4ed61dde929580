#!/usr/bin/env bash
# ctest `python_package`: pytest over bindings/python/tests with a python3 that has pytest (Debian's
# /usr/bin/python3 with python3-pytest first). usage: run_tests.sh LIBRWKVLITE_SO RWKV_LITE SHARED_DIR
set -u
export RWKVL_LIBRARY=$1 RWKVL_CLI=$2 RWKVL_SHARED_DIR=$3
export RWKVL_TOKENIZER_DIR=${RWKVL_TOKENIZER_DIR:-$3/reference/tokenizers}
for py in /usr/bin/python3 python3; do
  if "$py" -c "import pytest" 2>/dev/null; then
    exec "$py" -m pytest -q -p no:cacheprovider "$(dirname "$0")/tests"
  fi
done
echo "skip: no python3 with pytest (scripts/install-deps.sh --test installs python3-pytest)"
exit 77
