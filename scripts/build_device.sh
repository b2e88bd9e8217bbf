#!/usr/bin/env bash
# Builds HERE (this machine has nvcc but no GPU) the binaries that scripts/device.sh runs on the
# GPU machine, and puts them in .carry/bin (git-ignored; the device tool carries it: name ".carry"
# in the run's carry list). The GPU machine builds nothing.
#
#   scripts/build_device.sh                # build-device/, Release, CUDA on
#   QF_DEVICE_BUILD_DIR=... scripts/build_device.sh
#
# The binaries link libstdc++ statically (top CMakeLists.txt, QF_STATIC_LIBSTDCXX) and the CUDA
# runtime statically (CUDA::cudart_static); cuBLASLt stays dynamic (libcublasLt.so.13, part of
# the GPU machine's CUDA 13 toolkit). Everything the run carries (the working tree plus .carry)
# must stay under the device tool's 64 MiB; this script fails if .carry/bin passes 40 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${QF_DEVICE_BUILD_DIR:-$ROOT/build-device}
CARRY_BIN=$ROOT/.carry/bin
# GPU test binaries to carry (each is a gtest binary that skips without a GPU).
TEST_BINARIES=${QF_DEVICE_TESTS:-test_cuda}
LIMIT_MIB=40
say() { printf '\033[1m[build_device]\033[0m %s\n' "$*" >&2; }

if [ ! -f "$BUILD/build.ninja" ]; then
  say "configuring $BUILD (CUDA on, Release)"
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DQF_CUDA=ON -DQF_TESTS=ON
fi
targets=(qforge)
for t in $TEST_BINARIES; do targets+=("$t"); done
say "building ${targets[*]}"
cmake --build "$BUILD" -j "$(nproc)" --target "${targets[@]}"

mkdir -p "$CARRY_BIN"
# Stale binaries go; the peers' (peer_*, scripts/build_peers.sh) stay: they are built separately.
find "$CARRY_BIN" -maxdepth 1 -type f ! -name 'peer_*' -delete
cp "$BUILD/bin/qforge" "$CARRY_BIN/"
for t in $TEST_BINARIES; do cp "$BUILD/tests/$t" "$CARRY_BIN/"; done
# Symbols are not needed on the device (the GPU code's line info lives in the fatbinary, which
# strip keeps); stripping roughly halves the host part.
strip --strip-unneeded "$CARRY_BIN"/*

# The data the ppl and quantize steps read (../shared does not travel; device.sh points
# QF_SHARED_DIR here), and the default model in two parts (one call carries at most 64 MiB).
SHARED=${QF_SHARED_DIR:-$ROOT/../shared}
if [ -d "$SHARED/data" ]; then
  mkdir -p "$ROOT/.carry/data"
  install -m 644 "$SHARED"/data/wikitext-2-raw-test.txt "$SHARED"/data/wikitext-2-valid-tokens.txt "$ROOT/.carry/data/"
fi
MODEL=$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$MODEL" ] && { [ ! -f "$ROOT/.model_part1" ] || [ "$MODEL" -nt "$ROOT/.model_part1" ]; }; then
  split -n 2 -d "$MODEL" "$ROOT/.model_part"
  mv "$ROOT/.model_part00" "$ROOT/.model_part1"
  mv "$ROOT/.model_part01" "$ROOT/.model_part2"
fi

say "carried binaries:"
ls -l "$CARRY_BIN" >&2
say "dynamic libraries the GPU machine must provide:"
ldd "$CARRY_BIN/qforge" | grep -v -E "linux-vdso|ld-linux" >&2 || true
size_mib=$(( $(du -sb "$ROOT/.carry" | cut -f1) / 1048576 ))
say "total ${size_mib} MiB (limit ${LIMIT_MIB} MiB of the 64 MiB the device tool carries)"
if [ "$size_mib" -ge "$LIMIT_MIB" ]; then
  say "error: .carry is too large to carry with the working tree"
  exit 1
fi
