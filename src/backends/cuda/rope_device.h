// RoPE's per-token arithmetic on the device, shared by rope.cu (in place) and rope_kv.cu (fused
// with the KV-cache append), so that both rotate expression for expression alike.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "backends/cuda/attention_ptx.h"

namespace qf::cuda::rope_device {

constexpr int kMaxHalfDim = 128;  // head_dim up to 256

// The token's (cos, sin) table: computed in double (positions up to 2^20 and more keep their
// phase), stored as float, scaled by the attention factor. Every thread of the CTA calls it; it
// ends with __syncthreads, so the table is ready on return.
__device__ inline void fill_table(double pos, const double* __restrict__ inv_freq, int half, double attention_factor,
                                  float* s_cos, float* s_sin) {
  for (int j = threadIdx.x; j < half; j += blockDim.x) {
    double s, c;
    sincos(pos * inv_freq[j], &s, &c);
    s_cos[j] = static_cast<float>(c * attention_factor);
    s_sin[j] = static_cast<float>(s * attention_factor);
  }
  __syncthreads();
}

// One pair (x_j, x_{j+half}) rotated by (c, s): one product rounded, the other fused into an
// FMA. Spelled with intrinsics, which the compiler neither contracts nor reorders, so every
// kernel that rotates (rope.cu, rope_kv.cu's BF16 and quantized paths) gets the same bits.
__device__ __forceinline__ void rotate_pair(float lo, float hi, float c, float s, float& new_lo, float& new_hi) {
  new_lo = __fmaf_rn(lo, c, -__fmul_rn(hi, s));
  new_hi = __fmaf_rn(hi, c, __fmul_rn(lo, s));
}

// Rotates the 8 pairs (x[j0 + e], x[half + j0 + e]) of one head row, returning the two halves as
// 16-byte vectors for the caller to store where it wants.
__device__ inline void rotate8(const __nv_bfloat16* x, int half, int j0, const float* s_cos, const float* s_sin,
                               uint4& out_lo, uint4& out_hi) {
  float lo[8], hi[8], new_lo[8], new_hi[8];
  ptx::bf16x8_to_float(*reinterpret_cast<const uint4*>(x + j0), lo);
  ptx::bf16x8_to_float(*reinterpret_cast<const uint4*>(x + half + j0), hi);
#pragma unroll
  for (int e = 0; e < 8; ++e) rotate_pair(lo[e], hi[e], s_cos[j0 + e], s_sin[j0 + e], new_lo[e], new_hi[e]);
  out_lo = ptx::float_to_bf16x8(new_lo);
  out_hi = ptx::float_to_bf16x8(new_hi);
}

}  // namespace qf::cuda::rope_device
