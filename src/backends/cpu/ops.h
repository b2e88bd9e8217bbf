// The element-wise and row-wise Llama ops on the CPU, FP32. Each is the reference ("CPU twin")
// of a GPU kernel: plain pointers and sizes, row-major, no allocation, and the formula it
// computes written next to it. Rows are independent, so batching never changes a result.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace qf::cpu {

// out[i, :] = table[tokens[i], :] for i < n_tokens; table [vocab, dim] in F32, BF16 or F16.
// Throws qf::Error naming the token if an id is outside [0, vocab).
void embedding(const void* table, DType table_dtype, int64_t vocab, int64_t dim, const int32_t* tokens,
               int64_t n_tokens, float* out);

// RMSNorm (Llama): y[r, i] = x[r, i] / sqrt(mean_i(x[r, i]^2) + eps) * weight[i], for r < rows.
// The mean of squares is accumulated in double, then the inverse root is rounded to float
// once, as HF computes it in FP32 (x * rsqrt(var + eps)) * weight. y may alias x.
void rmsnorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* y);

// The residual stream's fused form: residual += delta, then y = rmsnorm(residual).
// (Every Llama block does this twice; the GPU fuses it into one kernel.)
void add_rmsnorm(float* residual, const float* delta, int64_t rows, int64_t dim, const float* weight, float eps,
                 float* y);

// SwiGLU's gate: out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)). out may alias
// gate or up.
void silu_mul(const float* gate, const float* up, int64_t n, float* out);

// dst[i] = src[i] widened exactly to F32; src in F32, BF16 or F16 (others throw).
void widen_to_f32(const void* src, DType dtype, int64_t n, float* dst);

// a[i] += b[i].
void add_inplace(float* a, const float* b, int64_t n);

}  // namespace qf::cpu
