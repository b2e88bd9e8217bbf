// RTN (round to nearest): each block's scale from its range, every weight rounded to the nearest
// point of its block's grid; optionally a clipping search per block. Works onto any scaled (or
// unscaled float) Format: INT2..INT8 symmetric or asymmetric, FPx, FP8, with tensor, channel or
// group scales in any scale type, with or without a tensor scale on top.
//
// Weights are [rows, cols] = [output channels, input channels], row-major, as a linear layer
// y = x W^T stores them; a scale block never spans two rows except for per-tensor scales.
#pragma once

#include <cstdint>
#include <string_view>

#include "quant/grid.h"

namespace qf {

// The second moment of a linear layer's inputs over the calibration tokens, H = X^T X
// ([cols x cols], row-major, symmetric; X is [tokens, cols]), or its diagonal only (cols
// values: the per-input-channel sums of squares). GPTQ's Hessian is 2 X^T X; the factor does
// not change any result here. Accumulate it in double: a sum of 10^5..10^6 products keeps only
// about half of F32's digits.
struct HessianView {
  const double* data = nullptr;
  int64_t dim = 0;
  bool diagonal = false;

  bool empty() const { return data == nullptr; }
  // Throws qf::Error naming `what` unless dim == cols and the values are finite with a
  // non-negative diagonal.
  void validate(int64_t cols, std::string_view what) const;
};

// The layer-output error of replacing W by Q: tr((W - Q) H (W - Q)^T) = ||X W^T - X Q^T||^2
// with a full H = X^T X; sum_ij H_jj (W - Q)_ij^2 with a diagonal one (the cross-channel terms
// dropped: exact for uncorrelated inputs); the squared Frobenius norm ||W - Q||^2 with none.
// Computed in double.
double layer_output_error(const float* w, const float* q, int64_t rows, int64_t cols, const HessianView& h);

// Clipping search: a block's range is shrunk by each factor 1, 1 - (1 - min_factor) / steps,
// ..., min_factor (by default 1.00, 0.99, ..., 0.50: 51 candidates, the grid of the task and
// close to AWQ's and GPTQ's own searches), the scale taken from the shrunk range as usual
// (formats' block_scale: [c lo, c hi] for asymmetric ints, c absmax otherwise), and the factor
// with the smallest objective kept; elements beyond the shrunk range clip to the grid's ends.
// Candidates whose stored scale equals the previous candidate's (narrow scale types round
// nearby factors to the same scale) are skipped. Factor 1 is always a candidate and wins ties,
// so the search can only lower the objective.
struct ClipSearch {
  bool enabled = false;
  float min_factor = 0.5f;
  int steps = 50;

  float factor(int k) const { return 1.0f - (1.0f - min_factor) * float(k) / float(steps); }
  void validate() const;
};

// The scale of one block, elements x[r * ld + c] for r < rows, c < cols, chosen by `clip`
// (factor 1 only when it is disabled) to minimise sum_rc weight_c (x - round(x))^2, weight_c =
// column_weights[c] (e.g. the block's slice of diag(H)) or 1 when column_weights is null.
// tensor_scale and saturate as in formats' block_scale.
BlockScale search_block_scale(const Format& format, const float* x, int64_t rows, int64_t cols, int64_t ld,
                              const double* column_weights, float tensor_scale, const ClipSearch& clip,
                              bool saturate = false);

struct RtnOptions {
  ClipSearch clip;
  // The clip search's objective (ignored without clip.enabled):
  //   none:     the block's weight MSE, sum (w - q)^2;
  //   diagonal: the block's share of the diagonal output error, sum H_jj (w - q)^2;
  //   full:     the row's full output error e^T H e (e = w - q over the row), minimised by one
  //             sweep of coordinate descent over the row's blocks in column order, each block
  //             choosing its factor with the others fixed: exact coupling across groups. Cost
  //             per row O(cols^2 + candidates * cols * G) (G = cols per channel), so per-channel
  //             scales with a full H are slow for wide layers; per-tensor scales reject it.
  HessianView hessian;
};

// RTN-quantizes w [rows, cols] onto `format`. Without a clip search the result equals
// formats' quantize(w, rows, cols, format) code for code.
QuantizedWeight rtn_quantize(const float* w, int64_t rows, int64_t cols, const Format& format,
                             const RtnOptions& options = {});

}  // namespace qf
