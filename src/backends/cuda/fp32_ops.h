// The F32 kernels of the GPU's Fp32Device (quant/fp32_device.h): the calibration pass, GPTQ's
// updates and the simulation engine (runtime/simulation_engine.h).
//
// They compute in FP32 end to end — the statistics GPTQ and the smoothing search read (Hessians
// X^T X, channel absmax and histograms), and a simulated evaluation, are those of the model as the
// CPU engine runs it, not of a BF16 engine — so these are FP32 twins of the CPU backend's ops, not
// the BF16 engine's kernels. Each kernel names its CPU twin; the twins agree up to FP32 rounding of a
// different summation order (tests/cuda/test_fp32_device.cpp states the bounds). Linears
// and X^T X go through cuBLASLt's FP32 GEMM (cublaslt.h linear_f32, gram_f32).
//
// All pointers are device pointers to dense row-major F32 unless said otherwise; every launch is
// checked (cuda_check.h).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace qf::cuda {

// y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w, the mean of squares accumulated in double as the
// CPU does (cpu::rmsnorm). y may alias x.
void rmsnorm_f32(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* y,
                 cudaStream_t stream);

// residual += delta, then y = rmsnorm(residual) (cpu::add_rmsnorm).
void add_rmsnorm_f32(float* residual, const float* delta, int64_t rows, int64_t dim, const float* weight, float eps,
                     float* y, cudaStream_t stream);

// out[i] = gate[i] / (1 + exp(-gate[i])) * up[i] (cpu::silu_mul). out may alias gate or up.
void silu_mul_f32(const float* gate, const float* up, int64_t n, float* out, cudaStream_t stream);

// a[i] += b[i] (cpu::add_inplace).
void add_f32(float* a, const float* b, int64_t n, cudaStream_t stream);

// y[r, j] += bias[j] for r < rows, j < cols.
void add_bias_f32(float* y, const float* bias, int64_t rows, int64_t cols, cudaStream_t stream);

// RoPE (rotate_half pairing, cpu::rope_apply) of tokens = windows * window_len rows of
// token_stride floats, token t at position t % window_len: cos/sin [window_len, head_dim / 2].
void rope_windows_f32(float* x, int64_t tokens, int64_t window_len, int64_t heads, int64_t head_dim,
                      int64_t token_stride, const float* cos, const float* sin, cudaStream_t stream);

// FireQ's post-RoPE scale (quant/rope_scale.h apply_post_rope_scale): key channel (h, c) *=
// post[h * head_dim + c]; query channel (qh, c) /= post[(qh / group) * head_dim + c].
void post_rope_scale_f32(float* q, int64_t q_stride, float* k, int64_t k_stride, int64_t tokens, const float* post,
                         int64_t heads, int64_t kv_heads, int64_t head_dim, cudaStream_t stream);

// Causal GQA attention of `windows` independent sequences. In window w, query i (row
// w * n_queries + i of q and out, [*, heads * head_dim]) sits at position first_position + i and
// attends to the keys and values at positions 0 .. its own: rows w * kv_window_rows + 0 .. of k, v
// ([*, kv_heads * head_dim]; the calibration windows: first_position 0, kv_window_rows =
// n_queries; an engine's cache: one window). Query head j reads KV head j / (heads / kv_heads).
// FP32 throughout, online softmax over tiles of 32 keys (cpu::attention computes the softmax in
// one pass over all keys: equal up to FP32 rounding). head_dim 64 or 128.
void attention_windows_f32(const float* q, const float* k, const float* v, int64_t windows, int64_t n_queries,
                           int64_t first_position, int64_t kv_window_rows, int64_t heads, int64_t kv_heads,
                           int64_t head_dim, float scale, float* out, cudaStream_t stream);

// Per-channel statistics of x [rows, cols] (quant/calibration.h ActivationStats), added into
// device arrays the caller zeroed / initialised:
//   absmax_bits[c]  = max(absmax_bits[c], bits of max_r |x[r, c]|)   (non-negative floats order
//                     as their bit patterns)
//   histogram[c * bins + bin(|x[r, c]|)] += 1, bin(v) = clamp((bits(v) >> 21) - first_quarter + 1,
//                     0, bins - 1), 0 for v == 0 (calibration.cpp histogram_bin, the same formula)
//   token_min[r], token_max[r] = min / max over c of x[r, c]
//   *nonfinite += number of non-finite values
void channel_statistics_f32(const float* x, int64_t rows, int64_t cols, int first_quarter, int bins,
                            uint32_t* absmax_bits, uint32_t* histogram, float* token_min, float* token_max,
                            unsigned long long* nonfinite, cudaStream_t stream);

}  // namespace qf::cuda
