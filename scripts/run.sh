#!/usr/bin/env bash
# The main job, from a fresh machine: set up (scripts/setup.sh: packages, the default model,
# the build), quantize the default model with GPTQ W4 g128, chat with the original and the
# quantized model, and measure both perplexities on WikiText-2 test. Idempotent: a second run
# reuses the build and the quantized checkpoint.
#
#   scripts/run.sh
#   QF_RECIPE=rtn-w8 QF_PPL_CHUNKS=0 scripts/run.sh       # another recipe; all windows
#
# Settings (environment):
#   QF_RECIPE        recipe to quantize with (default gptq-w4g128; `qforge quantize --help` lists them)
#   QF_CALIB_SAMPLES, QF_CALIB_SEQLEN   calibration windows (default 32 x 512: ~2-3 min on 2 cores)
#   QF_PPL_CTX       perplexity window (default 2048)
#   QF_PPL_CHUNKS    windows scored (default 8, about 16k tokens: a minute per model on 2 cores;
#                    0 = the whole test set, ~300k tokens)
#   QF_PROMPT        the chat prompt
#   QF_DEVICE        cpu or cuda (default: cuda when a GPU is present)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
scripts/setup.sh
BUILD_DIR=${QF_BUILD_DIR:-$ROOT/build}
QF=$BUILD_DIR/bin/qforge
MODEL=${QF_MODEL:-$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf}
RECIPE=${QF_RECIPE:-gptq-w4g128}
QUANTIZED=$ROOT/models/SmolLM2-135M-Instruct.$RECIPE
PROMPT=${QF_PROMPT:-What is the capital of France, and what is it famous for? Answer in two sentences.}
CTX=${QF_PPL_CTX:-2048}
CHUNKS=${QF_PPL_CHUNKS:-8}
DEVICE_ARGS=()
[ -n "${QF_DEVICE:-}" ] && DEVICE_ARGS=(--device "$QF_DEVICE")
PPL_ARGS=(--ctx "$CTX")
[ "$CHUNKS" != 0 ] && PPL_ARGS+=(--chunks "$CHUNKS")
say() { printf '\n\033[1m[run] %s\033[0m\n' "$*" >&2; }

say "the default model"
"$QF" info "$MODEL"

if [ ! -f "$QUANTIZED/config.json" ]; then
  say "quantizing it with $RECIPE (calibration: WikiText-2 validation)"
  "$QF" quantize "$MODEL" --recipe "$RECIPE" -o "$QUANTIZED" \
    --samples "${QF_CALIB_SAMPLES:-32}" --seqlen "${QF_CALIB_SEQLEN:-512}" "${DEVICE_ARGS[@]}"
else
  say "$QUANTIZED exists: not quantizing again (delete it to redo)"
fi

for m in "$MODEL" "$QUANTIZED"; do
  say "chat with $(basename "$m")"
  "$QF" generate "$m" --chat -p "$PROMPT" -n 96 "${DEVICE_ARGS[@]}"
done

for m in "$MODEL" "$QUANTIZED"; do
  say "perplexity of $(basename "$m") on WikiText-2 test (ctx $CTX, $([ "$CHUNKS" = 0 ] && echo all || echo "$CHUNKS") windows)"
  "$QF" ppl "$m" "${PPL_ARGS[@]}" "${DEVICE_ARGS[@]}"
done
