#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs every test. GPU tests skip, and say so, where no GPU is
# present. Extra arguments go to ctest (e.g. -R tokenizer, -L model).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR=${QF_BUILD_DIR:-$(pwd)/build}
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)" "$@"
