// The CPU matrix product every reference layer is built from: C[M,N] = A[M,K] · B, FP32
// accumulation, B stored as F32, BF16 or F16 (widened to F32 exactly, one tile at a time).
//
// Semantics the rest of qforge relies on (the CPU engine is the oracle GPU kernels and
// quantized formats are compared against, so these are promises, not accidents):
//   * every C[m,n] is the sum over k = 0, 1, ..., K-1, in that order, of A[m,k]*B[k,n], each
//     step one fused multiply-add (std::fma) into an FP32 accumulator that starts at 0;
//   * hence a row of C depends only on the same row of A and on B: not on M, on which other
//     rows are in the call, on the thread count or on the blocking. Running a batch of
//     sequences, or one token after another with a KV cache, gives bit-identical results.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace qf::cpu {

// How the B operand is laid out in memory (row-major in both cases).
enum class BLayout {
  NK,  // B is given as W[N,K] with row stride ldb and used transposed: C = A · W^T
       // (a linear layer's weight, or the keys in Q·K^T)
  KN,  // B[K,N] with row stride ldb: C = A · B (the values in P·V)
};

// C[m*ldc + n] = sum_k A[m*lda + k] * B(k, n), for m < M, n < N. b_dtype: F32, BF16 or F16.
// parallel: spread the work over qf::parallel_for (pass false when already inside a parallel
// loop; the result is the same either way).
void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const void* B, DType b_dtype,
          int64_t ldb, BLayout b_layout, float* C, int64_t ldc, bool parallel);

// A linear layer: y[M,N] = x[M,K] · W[N,K]^T (+ bias[N] when not null), every matrix dense
// row-major. W in F32, BF16 or F16; x, bias and y in F32. Multi-threaded. The bias is added
// after the full sum, as y = (x·W^T) + b.
void linear(const float* x, int64_t M, int64_t K, const void* W, DType w_dtype, int64_t N, const float* bias,
            float* y);

}  // namespace qf::cpu
