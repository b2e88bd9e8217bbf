#!/usr/bin/env bash
# Builds HERE (nvcc, no GPU needed) the peer binaries that scripts/device.sh's step "peers" runs
# beside qforge's own kernels, into .carry/bin (carried with the rest of .carry). The peers'
# sources are fetched copies OUTSIDE the repository: they are never committed, never copied into
# it; only our harnesses (bench/peers/) are qforge code.
#
#   scripts/build_device.sh && scripts/build_peers.sh       # here (either order: see below)
#   scripts/build_peers.sh fp6_llm                           # one peer
#   run(command="QF_DEVICE_STEPS='gemm peers' scripts/device.sh", carry=[".carry"])
#
#   peer (binary)                   fetched copy (env to override)      built from
#   fp6_llm (peer_fp6_llm)          /work/peers/fp6_llm (QF_PEER_FP6_LLM)  its csrc/fp6_linear.cu + bench/peers/fp6_llm_bench.cu
#   cutlass_int4_fp8                /work/peers/cutlass (QF_PEER_CUTLASS)  CUTLASS's examples/55_hopper_mixed_dtype_gemm/
#     (peer_cutlass_int4_fp8)                                              55_hopper_int4_fp8_gemm.cu, unchanged
#                                                                          (run by scripts/peer_cutlass_int4_fp8.py)
#
# Arguments name the peers to build (default: all of the table). The binaries link libstdc++ and
# the CUDA runtime statically, like qforge's (the GPU machine has only the driver and CUDA 13's
# libraries). Objects go to $QF_PEER_BUILD_DIR (default build-peers/). build_device.sh keeps
# peer_* binaries in .carry/bin, so either order works; its 40 MiB check counts them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${QF_PEER_BUILD_DIR:-$ROOT/build-peers}
CARRY_BIN=$ROOT/.carry/bin
NVCC=${NVCC:-nvcc}
say() { printf '\033[1m[build_peers]\033[0m %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# How to get a fetched copy (the message when one is missing).
fetch_help() {  # fetch_help NAME OWNER/REPO DIR [PATHS...]: PATHS, the parts the build needs
  local name=$1 repo=$2 dir=$3
  shift 3
  cat >&2 <<EOF
[build_peers] $name: no fetched copy at $dir.
  Fetch it OUTSIDE the repository (it is never committed nor copied into qforge):
    git clone --depth 1 https://github.com/$repo $dir
  or, in a session with the fetch tool: fetch github:$repo gives a bare git directory G; then
    mkdir -p $dir && git --git-dir=G archive HEAD $* | tar -x -C $dir && git --git-dir=G rev-parse HEAD > $dir/PEER_COMMIT
  (PEER_COMMIT, or a .git directory, lets the binary report the peer's commit.)
EOF
  exit 1
}

peer_commit() {  # the fetched copy's commit, for the JSON the harness writes
  if [ -f "$1/PEER_COMMIT" ]; then head -c 40 "$1/PEER_COMMIT"
  elif [ -d "$1/.git" ]; then git -C "$1" rev-parse HEAD
  else echo unknown; fi
}

build_fp6_llm() {
  local src=${QF_PEER_FP6_LLM:-/work/peers/fp6_llm}
  local csrc=$src/fp6_llm/csrc
  [ -f "$csrc/fp6_linear.cu" ] || fetch_help fp6_llm usyd-fsalab/fp6_llm "$src"
  local commit
  commit=$(peer_commit "$src")
  mkdir -p "$BUILD/fp6_llm"
  # The peer's flags (its fp6_llm/Makefile: -DNO_PYTORCH, C++17, -maxrregcount=255, fast math),
  # for sm_90 (SMS=90: it uses only mma.sync and cp.async, Ampere instructions that Hopper runs).
  local arch=("-gencode=arch=compute_90,code=sm_90")
  local peer_flags=(-O3 -std=c++17 -DNO_PYTORCH -maxrregcount=255 --use_fast_math "${arch[@]}")
  say "fp6_llm ($commit): compiling its fp6_linear.cu (about a minute)"
  "$NVCC" "${peer_flags[@]}" -I"$csrc" -c "$csrc/fp6_linear.cu" -o "$BUILD/fp6_llm/fp6_linear.o"
  say "fp6_llm: compiling our harness bench/peers/fp6_llm_bench.cu"
  "$NVCC" -O3 -std=c++17 "${arch[@]}" -I"$csrc" -I"$ROOT/src" -DQF_PEER_COMMIT="\"$commit\"" \
    -c "$ROOT/bench/peers/fp6_llm_bench.cu" -o "$BUILD/fp6_llm/fp6_llm_bench.o"
  # qforge's device helpers (DeviceBuffer, fill_u16, device_sleep), which the harness uses.
  "$NVCC" -O3 -std=c++20 "${arch[@]}" -I"$ROOT/src" -c "$ROOT/src/backends/cuda/device.cu" -o "$BUILD/fp6_llm/device_cu.o"
  "$NVCC" -O3 -std=c++20 -I"$ROOT/src" -c "$ROOT/src/backends/cuda/device.cpp" -o "$BUILD/fp6_llm/device.o"
  mkdir -p "$CARRY_BIN"
  "$NVCC" "${arch[@]}" --cudart=static -Xcompiler -static-libstdc++,-static-libgcc \
    "$BUILD/fp6_llm/fp6_llm_bench.o" "$BUILD/fp6_llm/fp6_linear.o" "$BUILD/fp6_llm/device_cu.o" \
    "$BUILD/fp6_llm/device.o" -o "$CARRY_BIN/peer_fp6_llm"
  strip --strip-unneeded "$CARRY_BIN/peer_fp6_llm"
  record_commit fp6_llm "$commit"
}

# CUTLASS's own Hopper INT4 x FP8 example, built unchanged (sm_90a: wgmma and TMA). Only
# examples/55_hopper_mixed_dtype_gemm, examples/common, include and tools/util/include are needed.
# One translation unit of CUTLASS 3 templates: several minutes and a few GB of RAM (one job).
build_cutlass_int4_fp8() {
  local src=${QF_PEER_CUTLASS:-/work/peers/cutlass}
  local ex=$src/examples/55_hopper_mixed_dtype_gemm
  if [ ! -f "$ex/55_hopper_int4_fp8_gemm.cu" ] || [ ! -d "$src/include/cute" ] || [ ! -d "$src/tools/util/include" ]; then
    fetch_help cutlass_int4_fp8 NVIDIA/cutlass "$src" examples/55_hopper_mixed_dtype_gemm examples/common include tools/util/include
  fi
  local commit
  commit=$(peer_commit "$src")
  mkdir -p "$BUILD/cutlass"
  local arch=("-gencode=arch=compute_90a,code=sm_90a")
  local obj=$BUILD/cutlass/55_hopper_int4_fp8_gemm.o
  # The fetched copy does not change under us: an object newer than the example is reused
  # (QF_PEER_REBUILD=1 forces the compile).
  if [ "${QF_PEER_REBUILD:-0}" != 1 ] && [ "$obj" -nt "$ex/55_hopper_int4_fp8_gemm.cu" ]; then
    say "cutlass_int4_fp8 ($commit): reusing $obj"
  else
    say "cutlass_int4_fp8 ($commit): compiling examples/55_hopper_mixed_dtype_gemm/55_hopper_int4_fp8_gemm.cu (several minutes)"
    "$NVCC" -O3 -std=c++17 -DNDEBUG --expt-relaxed-constexpr "${arch[@]}" -diag-suppress 20012 \
      -I"$src/include" -I"$src/tools/util/include" -I"$src/examples/common" -I"$ex" \
      -c "$ex/55_hopper_int4_fp8_gemm.cu" -o "$obj.tmp"
    mv "$obj.tmp" "$obj"
  fi
  mkdir -p "$CARRY_BIN"
  "$NVCC" "${arch[@]}" --cudart=static -Xcompiler -static-libstdc++,-static-libgcc \
    "$obj" -o "$CARRY_BIN/peer_cutlass_int4_fp8"
  strip --strip-unneeded "$CARRY_BIN/peer_cutlass_int4_fp8"
  record_commit cutlass_int4_fp8 "$commit"
}

# .carry/peer_commits: "NAME COMMIT" per peer, for the JSON device.sh writes.
record_commit() {
  local f=$ROOT/.carry/peer_commits
  { grep -v "^$1 " "$f" 2>/dev/null || true; echo "$1 $2"; } >"$f.tmp" && mv "$f.tmp" "$f"
}

peers=("$@")
[ ${#peers[@]} -gt 0 ] || peers=(fp6_llm cutlass_int4_fp8)
for p in "${peers[@]}"; do
  case $p in
    fp6_llm) build_fp6_llm ;;
    cutlass_int4_fp8) build_cutlass_int4_fp8 ;;
    *) die "unknown peer '$p' (known: fp6_llm, cutlass_int4_fp8)" ;;
  esac
done

say "peer binaries:"
ls -l "$CARRY_BIN"/peer_* >&2
for b in "$CARRY_BIN"/peer_*; do
  if ldd "$b" | grep -E "libstdc\+\+|libcudart" >&2; then die "$b links libstdc++ or libcudart dynamically"; fi
done
size_mib=$(( $(du -sb "$ROOT/.carry" | cut -f1) / 1048576 ))
say ".carry is now ${size_mib} MiB (build_device.sh's limit: 40 MiB of the 64 MiB a device call carries)"
