// Quantizing a whole model by a recipe: the pipeline behind `qforge quantize`.
//
// For a recipe that needs calibration (GPTQ, a Hessian-weighted clip), calibration.h's
// sequential pass runs the windows block by block and every linear layer is quantized as soon
// as its input statistics are complete, so each layer sees the activations of the model
// quantized so far. Otherwise every linear is quantized from its weight alone (RTN), no forward
// pass. A recipe with the "smooth" transform (recipe.h) calibrates even with RTN: the pass
// smooths each block's attention_in and mlp_in (calibration.h SmoothInput) with scales chosen by
// smooth.h's SmoothingLoss, the QuantizedModel carries the smoothed RMSNorm weights, and the
// choices go into quantization.calibration["smoothing"]. Either way the result is a QuantizedModel (io/quantized_checkpoint.h) ready to write:
// packed linears, norms in F32, the embedding / LM head in the recipe's keep type, and per
// layer the formats and the reconstruction error.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <vector>

#include "io/checkpoint.h"
#include "io/quantized_checkpoint.h"
#include "quant/fp32_device.h"
#include "quant/recipe.h"

namespace qf {

struct QuantizeModelOptions {
  // Calibration windows (calibration.h draw_calibration_windows); required when
  // recipe.needs_calibration(), ignored otherwise.
  std::vector<std::vector<int32_t>> windows;
  // RoPE of the calibration length (runtime/rope_frequencies.h; the runtime sits above quant).
  std::vector<double> rope_inv_freq;
  double rope_attention_factor = 1.0;
  // Recorded as quantization_config.calibration ({"text", "samples", "seqlen", "seed", ...}).
  nlohmann::json calibration_info;
  // Where the calibration pass and GPTQ's deferred updates compute (fp32_device.h); null:
  // the CPU.
  Fp32Device* device = nullptr;
  // Called after each block (layer) is quantized, with the number done and the total.
  std::function<void(int64_t done, int64_t total)> on_block_done;
  // If set, receives the seconds spent in the weight algorithms (RTN / GPTQ and the error
  // report), so callers can tell them from the calibration forward pass and statistics.
  double* algorithm_seconds = nullptr;
};

// Quantizes `checkpoint` (an unquantized model: F32/F16/BF16 tensors) by `recipe`.
// LinearQuantization::relative_error is tr(E H E^T) / tr(W H W^T) on the calibration inputs
// when the recipe calibrates, else ||E||^2 / ||W||^2 (E = W - Q, W the weight the layer had
// when it was quantized).
QuantizedModel quantize_model(const Checkpoint& checkpoint, const Recipe& recipe, const QuantizeModelOptions& options);

}  // namespace qf
