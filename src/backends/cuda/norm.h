// RMSNorm on the GPU, plain and fused with the residual add that precedes every norm of a Llama
// block. BF16 activations, FP32 weights and math. CPU twins: cpu::rmsnorm, cpu::add_rmsnorm
// (backends/cpu/ops.h), whose formula this follows step for step:
//   inv_rms = 1 / sqrt(mean_i(x_i^2) + eps)      (rounded to float once)
//   y_i     = (x_i * inv_rms) * weight_i         (rounded to bf16)
// Rows are contiguous ([rows, dim]); dim must be a multiple of 8 (16-byte vectors) and at most
// 32768; pointers 16-byte aligned. One CTA per row, each thread holding up to 4 vectors of
// the row in registers between the two passes, so x is read from memory once.
// Launched programmatically (pdl.h), the kernels read `weight` before they wait for the kernel
// before them: the weight must not be written by a kernel of the same programmatic chain (model
// weights never are; a plain launch or a copy in between ends any chain).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace qf::cuda {

// y = rmsnorm(x) * weight. y may alias x.
void rmsnorm(const __nv_bfloat16* x, int64_t rows, int64_t dim, const float* weight, float eps,
             __nv_bfloat16* y, cudaStream_t stream);

// residual += delta (rounded to the residual's type), then y = rmsnorm(residual) * weight,
// normalising the rounded residual (the value the next block adds to). A BF16 residual stream
// is what HF's BF16 models keep; an FP32 one costs 2 more bytes per element and keeps the GPU
// engine closer to the FP32 CPU engine.
void add_rmsnorm(__nv_bfloat16* residual, const __nv_bfloat16* delta, int64_t rows, int64_t dim,
                 const float* weight, float eps, __nv_bfloat16* y, cudaStream_t stream);
void add_rmsnorm(float* residual, const __nv_bfloat16* delta, int64_t rows, int64_t dim,
                 const float* weight, float eps, __nv_bfloat16* y, cudaStream_t stream);

// The same with an FP32 residual, and the normalised rows written as the input of a w4a8 linear
// (w4a8_gemm.h): FP8 E4M3 codes yq [rows, dim] and one F32 scale per row ys, the per-token
// quantization (fp8_e4m3:token) of the FP32 values, never rounded to BF16 first. FireQ fuses the
// quantization into the norm so that it costs no pass of its own.
void add_rmsnorm_fp8(float* residual, const __nv_bfloat16* delta, int64_t rows, int64_t dim, const float* weight,
                     float eps, __nv_fp8_e4m3* yq, float* ys, cudaStream_t stream);

}  // namespace qf::cuda
