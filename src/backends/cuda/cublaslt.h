// cuBLASLt, wrapped once: the row-major linear layer y[M,N] = x[M,K] · W[N,K]^T in BF16 and in
// FP8 E4M3 with per-tensor scales (BF16 output, FP32 accumulation both).
//
// The row-major to column-major mapping, done here and nowhere else: cuBLAS is column-major, and
// a row-major matrix [R,C] is the same bytes as a column-major matrix [C,R] (its transpose). So
//   y (row-major [M,N])  = column-major Y  [N,M], ld = N
//   W (row-major [N,K])  = column-major Wc [K,N], ld = K
//   x (row-major [M,K])  = column-major Xc [K,M], ld = K
// and y = x · W^T becomes Y = Wc^T · Xc: cuBLAS's (m, n, k) = (N, M, K) with A = W (transposed,
// "T") and B = x (not transposed, "N"). This is the "TN" layout, the only one Hopper's FP8
// GEMMs accept, and for BF16 it reads both operands along K, which is contiguous in memory.
//
// A CublasLt owns one handle and one workspace and caches, per problem (type, shape, pointer
// alignment), the descriptors and the algorithm cuBLASLt's heuristic picked, so that a shape's
// algorithm is chosen once, not per call, and a CUDA graph can capture the calls once each
// shape has run once. It is not thread-safe, and the workspace is shared by every call: use one
// CublasLt per stream.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <unordered_map>

#include "backends/cuda/device.h"

namespace qf::cuda {

class CublasLt {
 public:
  // 32 MiB: the workspace cuBLAS's documentation recommends for Hopper, where some kernels
  // (split-K, stream-K) need it to be chosen at all.
  static constexpr size_t kWorkspaceBytes = size_t{32} << 20;

  // Creates nothing on the GPU yet: the handle and the workspace are made on first use, so that
  // objects holding a CublasLt can be built (and their selection logic tested) without a GPU.
  CublasLt();
  ~CublasLt();
  CublasLt(const CublasLt&) = delete;
  CublasLt& operator=(const CublasLt&) = delete;

  // y = x · W^T in BF16 (FP32 accumulation and scaling).
  void linear_bf16(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, int64_t m, int64_t n,
                   int64_t k, cudaStream_t stream);

  // y = (x_scale · w_scale) · (x · W^T) with x, W in FP8 E4M3 and the scales FP32 values in
  // device memory (per tensor), y in BF16. Hopper requires K % 16 == 0 and 16-byte aligned
  // pointers (fp8_supports), the scale pointers included. fast_accum: accumulate inside the tensor cores only (faster, fewer
  // bits) instead of promoting partial sums to FP32 periodically (CUBLASLT_MATMUL_DESC_FAST_ACCUM).
  void linear_fp8(const __nv_fp8_e4m3* x, const float* x_scale, const __nv_fp8_e4m3* w, const float* w_scale,
                  __nv_bfloat16* y, int64_t m, int64_t n, int64_t k, bool fast_accum, cudaStream_t stream);

  // y[i, j] = (x_scale[i] · w_scale[j]) · (x · W^T)[i, j]: the same FP8 GEMM with one FP32 scale per
  // row of x (M values, e.g. per-token activation scales) and one per row of W (N values), applied
  // in cuBLASLt's epilogue (CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F on both operands, the mode
  // PyTorch's row-wise scaled_mm uses). Same shape and alignment rules as linear_fp8.
  void linear_fp8_rowwise(const __nv_fp8_e4m3* x, const float* x_scale, const __nv_fp8_e4m3* w, const float* w_scale,
                          __nv_bfloat16* y, int64_t m, int64_t n, int64_t k, cudaStream_t stream);

  // y = x · W^T in BF16 with an FP32 output (FP32 accumulation): the LM head, whose logits
  // would lose ~3 significant digits if rounded to BF16.
  void linear_bf16_f32out(const __nv_bfloat16* x, const __nv_bfloat16* w, float* y, int64_t m, int64_t n, int64_t k,
                          cudaStream_t stream);

  // y = x · W^T in FP32 (inputs, output and accumulation; CUBLAS_COMPUTE_32F, no TF32): the
  // calibration pass's linears (fp32_ops.h), whose statistics are those of FP32 math.
  void linear_f32(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k, cudaStream_t stream);

  // g[c, c] = x^T x for x [m, c] row-major, in FP32 (symmetric: row-major and column-major are the
  // same matrix up to each entry's summation order): the Hessian of a calibration chunk.
  void gram_f32(const float* x, float* g, int64_t m, int64_t c, cudaStream_t stream);

  // c[m, n] -= a[m, k] · b[k, n] in FP32, row-major with row strides lda, ldb, ldc (elements):
  // GPTQ's deferred update of the columns after a batch (quant/gptq.h), b a block of U's rows.
  void gemm_subtract_f32(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc, int64_t m,
                         int64_t n, int64_t k, cudaStream_t stream);

  static bool fp8_supports(int64_t m, int64_t n, int64_t k);

  // Creates the handle and the workspace now (before a CUDA graph capture, which forbids
  // cudaMalloc). The calls above do it on first use otherwise.
  void prepare();

  // Number of cached plans (one per distinct problem seen).
  size_t plan_count() const { return plans_.size(); }

 private:
  enum class Kind : uint8_t { bf16, fp8, fp8_fast_accum, fp8_rowwise, bf16_f32out, f32, f32_gram, f32_update };
  struct PlanKey {
    Kind kind;
    int64_t m, n, k;
    uint32_t align_x, align_w, align_y;
    int64_t ld_x = 0, ld_w = 0, ld_y = 0;  // f32_update's strides (the others are dense)
    bool operator==(const PlanKey&) const = default;
  };
  struct PlanKeyHash {
    size_t operator()(const PlanKey& k) const;
  };
  struct Plan;

  Plan& plan_for(const PlanKey& key, const float* x_scale, const float* w_scale);
  // y = alpha · op(w) op(x) + beta · y (beta = 0: y is not read).
  void run(Plan& plan, const void* x, const void* w, void* y, cudaStream_t stream, float alpha = 1.f, float beta = 0.f);
  void run_fp8(Kind kind, const __nv_fp8_e4m3* x, const float* x_scale, const __nv_fp8_e4m3* w, const float* w_scale,
               __nv_bfloat16* y, int64_t m, int64_t n, int64_t k, cudaStream_t stream);

  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer workspace_;
  std::unordered_map<PlanKey, std::unique_ptr<Plan>, PlanKeyHash> plans_;
};

}  // namespace qf::cuda
