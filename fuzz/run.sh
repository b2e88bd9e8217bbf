#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for SECONDS (default 180)
# on a corpus seeded by fuzz_make_seeds. Findings (crash-*, leak-*, timeout-*, oom-*) land in
# $BUILD_DIR/findings/<target>/; the corpora grow in $BUILD_DIR/corpus/<target>/.
#   fuzz/run.sh [SECONDS] [TARGET...]        e.g. fuzz/run.sh 60 fuzz_gguf
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-180}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(fuzz_gguf fuzz_safetensors fuzz_hf_config)
BUILD_DIR=${QF_FUZZ_BUILD_DIR:-$(pwd)/build-fuzz}
JOBS=${QF_JOBS:-$(nproc)}

if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
    -DCMAKE_CXX_COMPILER=clang++ -DQF_FUZZ=ON -DQF_CUDA=OFF -DQF_TESTS=OFF >/dev/null
fi
cmake --build "$BUILD_DIR" -j "$JOBS" --target fuzz_make_seeds "${TARGETS[@]}"

SEEDS="$BUILD_DIR/seeds"
rm -rf "$SEEDS" && "$BUILD_DIR/fuzz/fuzz_make_seeds" "$SEEDS"
status=0
for t in "${TARGETS[@]}"; do
  kind=${t#fuzz_}
  corpus="$BUILD_DIR/corpus/$t" findings="$BUILD_DIR/findings/$t"
  mkdir -p "$corpus" "$findings"
  echo "== $t: ${SECONDS_EACH}s"
  # -rss_limit_mb: an input that makes the parser allocate more than this is a finding too.
  if ! "$BUILD_DIR/fuzz/$t" "$corpus" "$SEEDS/$kind" -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 \
       -max_len=65536 -timeout=10 -artifact_prefix="$findings/" -print_final_stats=1 2>"$findings/log.txt"; then
    status=1
    echo "!! $t found something: see $findings/"
  fi
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|stat::new_units_added)|^#[0-9]+ +DONE" "$findings/log.txt" || true
done
exit $status
