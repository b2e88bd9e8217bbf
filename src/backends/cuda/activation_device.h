// SwiGLU's elementwise product for device code: silu(g) * u = g / (1 + exp(-g)) * u in FP32, spelled
// with IEEE intrinsics (no contraction, no fast math) so that every kernel that computes it
// (activation.cu's silu_mul kernels, gemv.cu's fused gate/up GEMV) gets the same bits as the CPU
// twin cpu::silu_mul (backends/cpu/ops.h).
#pragma once

#include <cuda_runtime.h>

namespace qf::cuda {

__device__ __forceinline__ float silu_times(float g, float u) {
  return __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), u);
}

}  // namespace qf::cuda
