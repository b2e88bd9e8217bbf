// Weight-only FPx x BF16 linear layer (FP6-LLM's TC-FPx on Hopper): y[M,N] = x[M,K] · W'^T with
// W' = decode(code) * s[n] (formats/quantize.h, one FP32 scale per output channel), BF16 x and y,
// FP32 accumulation on BF16 tensor cores. For every M: the kernel is tuned for M = 1..128 (decode
// and small batches, where reading 6 bits per weight instead of 16 is the whole gain) and runs any
// larger M correctly, one 64-row block of x after another.
//
// W is the blob prepack_fpx_weights makes (weight_prepack.h); the design is in fpx_gemm.cu and
// docs/kernels/fpx_gemm.md.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "formats/fpx.h"
#include "formats/quantize.h"

namespace qf::cuda {

// The FPx types with a compiled kernel: fp6_e3m2, fp6_e2m3, fp5_e2m2.
bool fpx_gemm_has_kernel(FpxType type);

// True if fpx_gemm runs this shape: a compiled type, M, N >= 1, K a positive multiple of 8 (x rows
// are read in 16-byte pieces, so each must start 16-byte aligned), all below 2^30.
bool fpx_gemm_supports(FpxType type, int64_t m, int64_t n, int64_t k);

// y = x · W'^T, asynchronous on `stream`. x and packed_w 16-byte aligned, y 2-byte aligned.
// Throws qf::Error for an unsupported type or shape or a misaligned pointer.
void fpx_gemm(FpxType type, const __nv_bfloat16* x, const void* packed_w, __nv_bfloat16* y, int64_t m, int64_t n,
              int64_t k, cudaStream_t stream);

// ---- the dequantize + cuBLAS path (linear.cpp's fpx_dequant_cublas_* kernels, for large M) ----
// At large M a GEMM is tensor-core bound and cuBLAS's wgmma kernels beat this mma.sync kernel;
// there the blob is expanded once per call and the GEMM left to cuBLASLt.

// w[n, k] (row-major BF16, 16-byte aligned) = decode(code), the codes' exact values WITHOUT the
// channel scale (every FPx value of these types is a BF16 number; decode(code) * s generally is
// not). Uses the kernel's own register dequantization (lowbit_dequant.h), so the GPU test of it
// also checks the hardware's mul.rn.bf16x2 on every code. Same shape rules as fpx_gemm_supports.
void fpx_dequantize_codes(FpxType type, const void* packed_w, __nv_bfloat16* w, int64_t n, int64_t k,
                          cudaStream_t stream);
// y[i, c] = bf16(float(y[i, c]) * s[c]) in place for the m x n output, s the blob's channel scales.
void fpx_scale_columns(FpxType type, const void* packed_w, __nv_bfloat16* y, int64_t m, int64_t n, int64_t k,
                       cudaStream_t stream);

// The CPU twin, on the host: y[i, n] (FP32, before any BF16 rounding) = scale_of(n) * sum_k
// x[i, k] * decode(code[n, k]) for the m rows of x [m, K] (F32, e.g. the BF16 activations widened),
// from the QuantizedMatrix's own element_value / scale_of (formats/quantize.h), the products and
// the sum in double (exact: FPx values have <= 4 significant bits, BF16 8). abs_sum (optional,
// same shape) receives |scale_of(n)| * sum_k |x w|, the scale of the accumulation error the tests
// state their bounds in. w: an fpx:channel or fpx:tensor matrix [N, K].
void fpx_linear_reference(const QuantizedMatrix& w, const float* x, int64_t m, float* y, float* abs_sum = nullptr);

}  // namespace qf::cuda
