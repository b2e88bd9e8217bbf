// Per-token FP8 E4M3 quantization on the device, shared by every kernel that produces a linear
// layer's FP8 input (w4a8_gemm.cu's quantize_fp8_per_token, norm.cu's add_rmsnorm_fp8,
// activation.cu's silu_mul_fp8): formats/quantize.h's fp8_e4m3:token exactly — s = absmax / 448
// (an IEEE division; F32 scales store it as is), code = e4m3(x / s) with an IEEE division,
// round to nearest even, saturating; a zero row has s = 0 and codes 0. Include from .cu files.
#pragma once

#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace qf::cuda::fp8_token {

__device__ __forceinline__ float scale_of(float absmax) { return __fdiv_rn(absmax, 448.f); }

// Eight values -> eight E4M3 codes (little-endian in the uint2), for a row of scale s.
__device__ __forceinline__ uint2 quantize8(const float (&v)[8], float s) {
  uint32_t w[2] = {0u, 0u};
  if (s != 0.f) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint32_t pair = __nv_cvt_float2_to_fp8x2(make_float2(__fdiv_rn(v[2 * j], s), __fdiv_rn(v[2 * j + 1], s)),
                                                     __NV_SATFINITE, __NV_E4M3);
      w[j / 2] |= pair << (16 * (j % 2));
    }
  }
  return make_uint2(w[0], w[1]);
}

// The maximum of `v` over the CTA (every thread gets it). fmaxf is exact and order-free. Uses
// 32 floats of shared memory; all threads must call it.
__device__ __forceinline__ float block_max(float v) {
  __shared__ float warp_max[32];
#pragma unroll
  for (int o = 16; o >= 1; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warps = (blockDim.x + 31) / 32;
  if (warps == 1) return v;
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = v;
  __syncthreads();
  float m = warp_max[0];
  for (int w = 1; w < warps; ++w) m = fmaxf(m, warp_max[w]);
  return m;
}

}  // namespace qf::cuda::fp8_token
