// Per-input-channel smoothing (SmoothQuant, Xiao et al. 2022; FireQ's channel-wise smoothing):
// divide an activation channel by s_j and multiply the weight column it meets by s_j. The
// product is unchanged, (X diag(s)^-1)(W diag(s))^T = X W^T, while the activation's outlier
// channels shrink and the weight absorbs part of their range, which makes both easier to
// quantize. The division is merged into whatever produces the activation:
//   * an RMSNorm: y = x / rms(x) * g, so g_j /= s_j (the norm's rms is of x, not of y: exact);
//   * a preceding linear whose output is the activation: its output rows (and bias) /= s_j —
//     v_proj -> o_proj (attention mixes tokens, P V, never channels, so scaling V's channels
//     commutes with it) and up_proj -> down_proj (SiLU(gate) * up is linear in up, so
//     scaling up's rows scales the product channel by channel; scaling gate would not be exact).
// The multiplication goes into every linear that reads the activation (q, k and v all read
// the attention norm's output), so their weight absmax is taken over all of them.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "formats/format.h"

namespace qf {

// A linear layer y = x W^T + b to merge into: W [rows = out, cols = in] row-major, bias
// (rows values) or null.
struct LinearRef {
  float* weight = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  float* bias = nullptr;
};

// absmax[j] = max(absmax[j], max_r |x[r, j]|) for x [rows, cols]: per-channel statistics of
// activations (rows = tokens) or of a weight's input columns (rows = output channels). Start
// from zeros; call once per batch / per linear to combine.
void accumulate_column_absmax(const float* x, int64_t rows, int64_t cols, float* absmax);

// SmoothQuant's scales s_j = act_absmax_j^alpha / weight_absmax_j^(1 - alpha), alpha in [0, 1]
// (0: no activation shrinking; 1: all of the activation's range moved into the weight).
// A channel with act_absmax or weight_absmax 0 carries nothing to balance and gets s_j = 1;
// s_j is then clamped to [1e-5, 1e5] so that a nearly-dead channel cannot blow the other
// side up (SmoothQuant clamps the activation statistic at 1e-5 for the same reason).
std::vector<float> smoothing_scales(const float* act_absmax, const float* weight_absmax, int64_t n, float alpha);

// 0, 0.05, ..., 1 (21 values): the grid SmoothQuant's and FireQ's alpha sweeps use.
std::vector<float> default_alpha_grid();

struct AlphaChoice {
  float alpha = 0;
  std::vector<float> scales;
  double loss = 0;
};
// The alpha of `alphas` whose scales minimise loss(scales) (e.g. the caller's quantized output
// error of the smoothed layer on calibration data); the first one on ties.
AlphaChoice choose_smoothing_alpha(const float* act_absmax, const float* weight_absmax, int64_t n,
                                   const std::vector<float>& alphas,
                                   const std::function<double(const std::vector<float>& scales)>& loss);

// FireQ's calibration loss for a smoothing of one activation X [m, n] read by several linears:
//     loss(s) = sum over the linears of || Qa(X diag(1/s)) Qw(W diag(s))^T - X W^T ||_F^2
// where Qw is round to nearest onto the layer's weight format (rtn.h: fast, and GPTQ's error
// tracks RTN's closely enough to rank alphas; the chosen s is then quantized by the recipe's own
// algorithm) and Qa rounds each row to the layer's activation format (none: unrounded). The
// reference X W^T is the unquantized, unsmoothed output, so the loss measures what smoothing
// plus quantization does to the function the layer computes. X is a sample of the calibration
// rows (the caller bounds m: every evaluation costs 2 m n sum(rows) FLOPs plus the rounding).
struct SmoothingTarget {
  const float* weight = nullptr;  // [rows, n] row-major, unsmoothed
  int64_t rows = 0;
  Format weights;                     // Qw
  std::optional<Format> activations;  // Qa
};
class SmoothingLoss {
 public:
  // Keeps pointers to x and the weights (they must outlive this object); computes X W^T once.
  SmoothingLoss(const float* x, int64_t m, int64_t n, std::vector<SmoothingTarget> linears);
  double operator()(const std::vector<float>& s) const;
  // max_j over all linears of |W[:, j]|: smoothing_scales' weight statistic.
  std::vector<float> weight_absmax() const;

 private:
  const float* x_;
  int64_t m_, n_;
  std::vector<SmoothingTarget> linears_;
  std::vector<std::vector<float>> reference_;  // X W^T per linear, [m, rows]
};

// W[:, j] *= s[j] for every j (each linear's cols must equal n).
void scale_input_channels(std::span<const LinearRef> linears, const float* s, int64_t n);

// g[j] /= s[j] (the RMSNorm's weight, n values) and each following linear's column j *= s[j].
void merge_smoothing_into_norm(float* norm_weight, int64_t n, const float* s, std::span<const LinearRef> next);

// The producing linear's output row j (and bias j) /= s[j] (prev.rows == n) and each following
// linear's column j *= s[j].
void merge_smoothing_into_linear(const LinearRef& prev, const float* s, int64_t n, std::span<const LinearRef> next);

// v_proj -> o_proj with grouped-query attention: v has n_kv_heads * head_dim output rows, o has
// n_heads * head_dim input columns, and query head h reads kv head h / (n_heads / n_kv_heads).
// v's rows /= s (s: n_kv_heads * head_dim values), o's column (h, d) *= s[(kv head of h), d].
void merge_smoothing_into_v_o(const LinearRef& v_proj, const LinearRef& o_proj, const float* s, int64_t head_dim);

// Folds an RMSNorm's weight into the following linears (QuaRot's first step before rotating the
// residual stream, which the norm's per-channel weight would not commute with): each linear's
// column j *= g[j], then g := 1.
void fold_norm_weight(float* norm_weight, int64_t n, std::span<const LinearRef> next);

}  // namespace qf
