// Calibration: run calibration text through a Llama-family model block by block, on the CPU or
// the GPU (fp32_device.h), and
// collect, for every linear layer's input, the statistics the weight algorithms need — the
// Hessian H = X^T X, per-channel absmax and a histogram for percentiles, per-token ranges —
// while the caller quantizes each layer as soon as its statistics are complete.
//
// The sequential scheme (GPTQ's, "true sequential" in AutoGPTQ's terms): within block l the
// four distinct linear inputs are met in the order of the forward pass,
//     attention_in (q, k, v) -> attention_out (o) -> mlp_in (gate, up) -> mlp_act (down),
// and each group is handed to the caller's `quantize` callback before the next input is
// computed, so every statistic is taken on the activations the *quantized* model produces:
// block l sees the outputs of the quantized blocks < l, o_proj sees attention over quantized
// q/k/v, down_proj sees the quantized gate/up. Consequently the Hessian collected for a layer
// equals X^T X of that layer's input in a plain forward pass of the finished quantized model
// (tests/quant/test_calibration.cpp checks exactly this against the CPU engine).
//
// Numerics: the forward pass is the CPU engine's (the same ops in the same order, FP32, weights
// widened to F32), so on the CPU device its activations are bit-identical to the engine's; the
// GPU device computes the same FP32 ops in other summation orders. H is accumulated as
// an F32 GEMM per chunk of windows (<= chunk_tokens tokens: relative rounding ~ sqrt(m) * 2^-24,
// about 3e-6 for the CPU's m = 2048 and 8e-6 for the GPU's 16384, far below the statistic's own
// sampling noise) and summed across chunks in double, so the total over 10^5..10^6 tokens does
// not lose F32's digits.
//
// Memory (the device's: host or GPU): the residual stream of all windows [N*L, hidden] and the
// attention outputs [N*L, heads*head_dim] in F32, plus one chunk's intermediates and one block's
// weights (twice on the GPU: the host keeps the callbacks' copy); nothing scales with the number
// of layers. Default model, 128 x 2048 windows: 2 x 604 MB. For a 7B
// model (hidden 4096) that is 2 x 4.3 GB; bound it with fewer samples or a shorter seqlen (the
// GPTQ paper's 128 x 2048 is not sacred: 128 x 512 changes little), or stream the residual
// stream through a file-backed mapping (not done here).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "formats/format.h"
#include "io/checkpoint.h"
#include "quant/fp32_device.h"
#include "quant/recipe.h"
#include "quant/rope_scale.h"
#include "quant/rtn.h"

namespace qf {

// ---- calibration windows ----

// N windows of L consecutive tokens from `tokens`, at start offsets drawn uniformly from
// [0, size - L] by a 64-bit Mersenne Twister seeded with `seed` (start = draw mod (size-L+1):
// the modulo bias is below (size/2^64), and unlike std::uniform_int_distribution the mapping is
// the same on every standard library, so a seed names the same windows everywhere). Windows may
// overlap, as in GPTQ's sampling. Throws if the text has fewer than L tokens.
std::vector<std::vector<int32_t>> draw_calibration_windows(std::span<const int32_t> tokens, int64_t samples,
                                                           int64_t seqlen, uint64_t seed);

// ---- statistics of one linear input ----

enum class LinearInput : uint8_t { attention_in, attention_out, mlp_in, mlp_act };
inline constexpr LinearInput kLinearInputs[] = {LinearInput::attention_in, LinearInput::attention_out,
                                                LinearInput::mlp_in, LinearInput::mlp_act};
const char* linear_input_name(LinearInput input);  // "attention_in", ...
LinearInput input_of(LinearKind kind);
std::vector<LinearKind> linears_reading(LinearInput input);  // q/k/v, o, gate/up, down

// Magnitudes |x| are histogrammed per channel in bins of a quarter octave: bin b >= 1 holds
// |x| in [2^((b-1)/4 + kHistogramMinExp2), 2^(b/4 + kHistogramMinExp2)) (read off the float's
// exponent and top two mantissa bits — not exactly quarter octaves: the edges are at mantissas
// 1, 1.25, 1.5, 1.75), bin 0 holds 0 and values below the range, the last bin everything above.
inline constexpr int kHistogramMinExp2 = -40;
inline constexpr int kHistogramOctaves = 80;  // 2^-40 .. 2^40
inline constexpr int kHistogramBins = 1 + 4 * kHistogramOctaves;

struct ActivationStats {
  int64_t channels = 0;
  int64_t tokens = 0;
  std::vector<double> hessian;              // X^T X, [channels, channels] row-major (a sum, not a mean)
  std::vector<float> channel_absmax;        // max over tokens of |x[t, c]|
  std::vector<uint32_t> channel_histogram;  // [channels, kHistogramBins]
  std::vector<float> token_min, token_max;  // per token, over channels

  HessianView hessian_view() const { return {hessian.data(), channels, false}; }
  // The q-quantile (q in [0, 1]) of |x| over the tokens of channel c, from the histogram: the
  // upper edge of the bin holding it (so within a factor 2^(1/4) above the true value),
  // capped by the channel's absmax.
  float channel_percentile(int64_t channel, double q) const;
  // The q-quantile over tokens of max(|token_min|, |token_max|): how the per-token absmax (an
  // FP8 per-token activation scale is absmax / 448) is distributed. Exact.
  float token_absmax_percentile(double q) const;
};

// ---- the sequential pass ----

// One linear layer of the block being calibrated, as the callback sees it.
struct CalibratedLinear {
  std::string name;  // canonical weight name, e.g. model.layers.3.self_attn.q_proj.weight
  LinearKind kind;
  int64_t rows = 0, cols = 0;  // [out, in]
  // The weight the forward pass uses, F32 row-major. The callback replaces it by the values the
  // quantized layer computes with (its dequantized weight); later stages use those.
  std::vector<float> weight;
  // Set by the callback when the quantized layer rounds its input (recipe "activations"): later
  // stages round this layer's input to it, as the runtime will.
  std::optional<Format> activations;
};

// Called once per linear input of each block, in forward order, with that input's statistics
// and the linears reading it (q, k, v together; gate and up together).
using QuantizeLinears = std::function<void(int64_t layer, LinearInput input, const ActivationStats& stats,
                                           std::span<CalibratedLinear> linears)>;

struct CalibrationModel {
  const Checkpoint* checkpoint = nullptr;  // config, norms, linear weights (any float dtype)
  // The embedding table the quantized model will run with (e.g. rounded to BF16 by the recipe);
  // undefined: the checkpoint's.
  Tensor embedding;
  // RoPE for windows of the calibration length: runtime/rope_frequencies.h computes it (the
  // quant library sits below the runtime, so it is passed in).
  std::vector<double> rope_inv_freq;
  double rope_attention_factor = 1.0;
  // The KV cache format the quantized model simulates, if any (rounded after RoPE, per token and
  // KV head, as the CPU engine writes its cache).
  std::optional<Format> kv_cache;
  // The query format the quantized model simulates, if any (each (token, query head) row rounded
  // after RoPE and the post-RoPE scale, as the CPU engine does).
  std::optional<Format> query;
};

// RoPE-aware scaling (recipe transform "rope_scale", quant/rope_scale.h). Called once per block,
// after attention_in's smoothing and before q/k/v are quantized, with the statistics of the
// block's keys over all calibration tokens: the k_proj output of the (smoothed, unquantized)
// weights, before and after RoPE. Returns the scales: the pass merges `pre` into the q_proj /
// k_proj rows (and biases) before the `quantize` callback sees them, and applies `post` after
// RoPE in the block's attention, as the engine does with the checkpoint's k_post_rope_scale.
// Either part may be empty (none).
using RopeScaleBlock = std::function<RopeScales(int64_t layer, const KeyStatistics& stats)>;

// Channel-wise smoothing (recipe transform "smooth", quant/smooth.h) of an input that follows an
// RMSNorm (attention_in, mlp_in only). Called before that stage's `quantize` with its statistics,
// the linears reading it (still unquantized and unsmoothed) and a sample of its input rows
// [sample_rows, channels] (evenly spaced over all calibration tokens); returns the scales s
// (channels values, finite and > 0), or an empty vector for no smoothing. The pass then merges
// s (smooth.h merge_smoothing_into_norm: the norm weight g /= s, the linears' columns *= s),
// uses the new norm for the rest of the pass, and recomputes the stage's statistics on the
// smoothed input, so `quantize` sees the smoothed weights and statistics, and the guarantee in
// the header comment (statistics equal a plain forward of the finished model) still holds for
// a model that carries the new norm weights.
using SmoothInput = std::function<std::vector<float>(int64_t layer, LinearInput input, const ActivationStats& stats,
                                                     std::span<const CalibratedLinear> linears, const float* sample,
                                                     int64_t sample_rows)>;

struct CalibrationOptions {
  // Where the pass computes (fp32_device.h); null: the CPU.
  Fp32Device* device = nullptr;
  // Windows per chunk = max(1, chunk_tokens / seqlen); 0: the device's default.
  int64_t chunk_tokens = 0;
  SmoothInput smooth;            // optional
  // At most this many rows in `smooth`'s sample: 1024 rows x the linears' outputs rank the
  // alphas reliably, and FireQ's search (21 alphas x 2 inputs x blocks, each an RTN of the
  // layers and a [rows, n] x [n, outputs] product) costs ~3 min on 2 cores for the default model.
  int64_t smooth_sample_rows = 1024;
  // Called after a smoothing was merged, with the RMSNorm weight the pass now uses (F32): the
  // quantized model must carry it (input_layernorm for attention_in, post_attention_layernorm
  // for mlp_in).
  std::function<void(int64_t layer, LinearInput input, std::span<const float> norm_weight)> on_norm_changed;
  RopeScaleBlock rope_scale;  // optional
  // Called after each (layer, input) stage has been quantized: for progress bars.
  std::function<void(int64_t layer, LinearInput input)> on_stage_done;
};

// Runs `windows` (all of one length L) through the model block by block, calling `quantize`
// for every linear input of every block (see the header comment). Throws qf::Error for windows
// of unequal length, token ids outside the vocabulary, or a model config the CPU engine rejects.
void calibrate_sequentially(const CalibrationModel& model, const std::vector<std::vector<int32_t>>& windows,
                            const QuantizeLinears& quantize, const CalibrationOptions& options = {});

}  // namespace qf
