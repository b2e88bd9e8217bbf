#!/usr/bin/env bash
# Builds every test with AddressSanitizer + UndefinedBehaviorSanitizer (CPU only) and runs them,
# except those labelled slow, and model unless QF_SANITIZE_MODEL=1 (a model forward pass under
# the sanitizers is slow). Fails on a failing test or on any sanitizer report, including one a
# test survived.
#
#   scripts/sanitize.sh                 # build-asan/, the default compiler (gcc or $CXX)
#   QF_SANITIZE_MODEL=1 scripts/sanitize.sh             # include the tests that load the model
#   CXX=clang++ CC=clang scripts/sanitize.sh -R io     # extra arguments go to ctest
#   QF_ASAN_BUILD_DIR=... QF_JOBS=2 scripts/sanitize.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${QF_ASAN_BUILD_DIR:-$(pwd)/build-asan}
JOBS=${QF_JOBS:-$(nproc)}
say() { printf '\033[1m[sanitize]\033[0m %s\n' "$*" >&2; }

if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  say "configuring $BUILD_DIR (ASan + UBSan, no CUDA)"
  # RelWithDebInfo: optimised enough to keep the test run short, with line numbers in reports.
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQF_SANITIZE=ON -DQF_CUDA=OFF >/dev/null
fi
say "building ($JOBS jobs)"
cmake --build "$BUILD_DIR" -j "$JOBS"

# halt_on_error / abort: the first report ends the test process, so ctest sees a failure.
# detect_leaks: LeakSanitizer reports at exit, which fails the process as well.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:abort_on_error=1:strict_string_checks=1:check_initialization_order=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:abort_on_error=1}
EXCLUDE='model|slow'
[ "${QF_SANITIZE_MODEL:-0}" = 1 ] && EXCLUDE='slow'
LOG="$BUILD_DIR/sanitize-ctest.log"
say "running the tests (labels excluded: $EXCLUDE); log: $LOG"
status=0
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" -LE "$EXCLUDE" "$@" 2>&1 | tee "$LOG" || status=$?
# A report inside a process that still exited 0 (a sanitizer configured to recover, a child
# process) would not fail ctest: look for one in the output as well.
if grep -qE "ERROR: (Address|Leak)Sanitizer|runtime error:|SUMMARY: (Address|UndefinedBehavior|Leak)Sanitizer" "$LOG"; then
  say "sanitizer report found in $LOG"
  status=1
fi
[ "$status" -eq 0 ] && say "clean: no test failed and no sanitizer report" || say "FAILED"
exit "$status"
