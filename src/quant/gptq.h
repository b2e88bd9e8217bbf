// GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
// Pre-trained Transformers", Algorithm 1): quantize a linear layer's weight one input column at a
// time and spread each column's rounding error over the columns not yet quantized, weighted by
// the inverse Hessian, so the layer's output on the calibration inputs changes as little as it
// can. The CPU version is the reference (the "CPU twin") of the GPU one (GptqOptions::device).
//
// Per row w (an output channel), with H = X^T X the inputs' second moment (rtn.h HessianView)
// and U the upper Cholesky factor of H^{-1} (U^T U = H^{-1}), for columns j in order:
//     q_j = round(w_j) onto the grid;   err = (w_j - q_j) / U_jj;   w_k -= err * U_jk  (k > j)
// which is the optimal (OBS) compensation: it keeps the remaining weights the least-squares
// optimum given the columns already fixed, so the final error tr((W-Q) H (W-Q)^T) is exactly
// sum err^2 (reported as GptqResult::loss, with the damped H). Details:
//   * lazy batches: the update of the columns beyond the current block of `block_size` columns
//     is deferred and applied once per block as a matrix product (E · U[block, rest]), which
//     turns rank-1 updates into a GEMM (same result up to rounding);
//   * dampening: percdamp * mean(diag H) is added to H's diagonal (H is often singular:
//     fewer distinct tokens than channels, constant channels);
//   * dead columns (H_jj = 0: the input channel is always 0): H_jj := 1, the weight column := 0;
//     it cannot affect the output, and its codes dequantize to 0;
//   * group scales (Granularity::group) are computed when a group starts, from the current,
//     already-updated weights of the group (lazy groups; the paper's choice); or, with
//     static_groups, all from the original weights up front. Per-channel and per-tensor scales
//     always come from the original weights up front;
//   * act_order: columns are processed by descending H_jj (the most sensitive inputs first,
//     while the most other columns remain to absorb their error); it requires static_groups
//     when scales are per group, so group g still holds original columns g*G .. g*G+G-1 and
//     the stored layout is the same as without act_order;
//   * rows are independent (their scales too), so the sweep runs in parallel over chunks of
//     rows; the factorisation is in double (linalg.h says why) and multi-threaded.
// Onto any grid of formats/quantize.h: each element goes through WeightGrid::round, so the
// returned QuantizedMatrix dequantizes to exactly the values the error feedback assumed.
#pragma once

#include <cstdint>
#include <vector>

#include "quant/fp32_device.h"
#include "quant/grid.h"
#include "quant/rtn.h"

namespace qf {

struct GptqOptions {
  double percdamp = 0.01;      // dampening: percdamp * mean(diag H) added to the diagonal
  int64_t block_size = 128;    // columns per lazy batch (the paper's B = 128)
  bool act_order = false;      // process columns by descending diag(H)
  bool static_groups = false;  // group scales from the original weights, computed up front
  // A clipping search (weight MSE over the block, rtn.h) when a block's scale is chosen; off
  // by default, as in the paper.
  ClipSearch clip;
  // Where the deferred batch updates run (fp32_device.h); null: the CPU, row chunk by row
  // chunk. With a device (the GPU), the weights stay there and the host only rounds each batch's
  // columns; the result equals the CPU's up to the updates' FP32 summation order (a rare element
  // at a rounding tie may take the neighbouring code). Not a recipe setting: the caller's choice.
  Fp32Device* device = nullptr;
};

struct GptqResult {
  QuantizedWeight weight;
  // sum over elements of err^2 = (w - q)^2 / U_jj^2: GPTQ's own account of the output error
  // tr((W0 - Q) H' (W0 - Q)^T), with H' the dampened Hessian (dead diagonal entries set to 1)
  // and W0 the original weight with dead columns zeroed. Equal to it up to rounding.
  double loss = 0;
  double damping = 0;            // the value added to H's diagonal
  int64_t dead_columns = 0;      // input channels with H_jj = 0
  std::vector<int64_t> order;    // order[p] = the original column processed p-th
};

// GPTQ-quantizes w [rows, cols] (output channels x input channels) with the full Hessian
// `hessian` ([cols x cols]) onto `format`. Throws qf::Error naming the weight's shape and format
// on bad input (a non-finite weight, a Hessian of the wrong size or not positive definite after
// dampening, act_order with per-group scales but without static_groups).
GptqResult gptq_quantize(const float* w, int64_t rows, int64_t cols, const HessianView& hessian, const Format& format,
                         const GptqOptions& options = {});

}  // namespace qf
