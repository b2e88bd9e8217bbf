// The decode-time linear layer: y[M,N] = x[M,K] · W[N,K]^T for small M (1..16), BF16 in and out,
// FP32 accumulation, written to run at the speed of reading W once from HBM.
//
// At decode the batch M is a handful of tokens, so a linear layer does 2·M FLOPs per weight
// element read: for M <= 16 it is bound by the bytes of W, not by arithmetic (H100: ~3.0 TB/s
// against ~740 BF16 TFLOP/s, a ratio of ~250 FLOPs per byte), and the GEMM libraries, tuned
// for large tiles, leave a third of the bandwidth unused there. The design is in gemv.cu.
//
// Layout: all three matrices row-major and contiguous (x rows of K, W rows of K, y rows of N).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace qf::cuda {

// The largest M the kernel handles: two 8-wide tensor-core tiles (see gemv.cu).
inline constexpr int64_t kGemvMaxM = 16;

// True if gemv_bf16 can run this shape: 1 <= m <= kGemvMaxM, n >= 1, k a positive multiple of 8
// (rows are read in 16-byte pieces, so each row must start 16-byte aligned).
bool gemv_bf16_supports(int64_t m, int64_t n, int64_t k);

// y = x · W^T. x and w must be 16-byte aligned; y needs 2-byte alignment. Asynchronous on `stream`.
// Throws qf::Error for an unsupported shape or misaligned pointer.
void gemv_bf16(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, int64_t m, int64_t n,
               int64_t k, cudaStream_t stream);

// The same contract, software-pipelined on a persistent grid (gemv.cu, "gemv_bf16_v2"): a variant
// registered beside gemv_bf16 so that one `qforge bench gemm` run compares them.
void gemv_bf16_v2(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, int64_t m, int64_t n,
                  int64_t k, cudaStream_t stream);

// SwiGLU's first half in one kernel, for decode: act[m, c] = silu(g[m, c]) * u[m, c] for
// c < f, where [g | u] = x · W^T and W [2f, k] holds the gate rows then the up rows (the fused
// gate/up projection). The same bits as gemv_bf16_v2 into a [m, 2f] buffer followed by silu_mul
// (activation.h), without the SiLU kernel. 1 <= m <= kGemvMaxM, f a positive multiple of 16,
// k a positive multiple of 8; x and w 16-byte aligned.
void gemv_bf16_swiglu(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* act, int64_t m, int64_t f,
                      int64_t k, cudaStream_t stream);

}  // namespace qf::cuda
