#include "backends/cuda/cublaslt.h"

#include <algorithm>
#include <vector>

#include "backends/cuda/cuda_check.h"

namespace qf::cuda {

namespace {

// The largest power of two (capped at 256, cuBLASLt's default assumption) dividing the address.
// cuBLASLt's heuristic must be told how aligned the pointers are, or it may pick a kernel that
// needs more than they have.
uint32_t pointer_alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && (a & (align - 1)) != 0) align >>= 1;
  return align;
}

}  // namespace

// Descriptors of one problem, created once and kept for the life of the CublasLt.
struct CublasLt::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr;  // W:  column-major [K, N], ld K, used transposed
  cublasLtMatrixLayout_t b = nullptr;  // x:  column-major [K, M], ld K
  cublasLtMatrixLayout_t c = nullptr;  // y:  column-major [N, M], ld N (C and D)
  // The heuristic's candidates, best first. The first call tries them in order and keeps the
  // first one cublasLtMatmul accepts (the heuristic does not see everything cublasLtMatmul
  // checks, e.g. the alignment of FP8 scale pointers).
  std::vector<cublasLtMatmulAlgo_t> candidates;
  size_t chosen = 0;
  bool validated = false;

  ~Plan() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

size_t CublasLt::PlanKeyHash::operator()(const PlanKey& k) const {
  size_t h = static_cast<size_t>(k.kind);
  for (uint64_t v : {uint64_t(k.m), uint64_t(k.n), uint64_t(k.k), uint64_t(k.align_x), uint64_t(k.align_w),
                     uint64_t(k.align_y)})
    h = h * 0x100000001B3ull ^ v;
  return h;
}

CublasLt::CublasLt() = default;

CublasLt::~CublasLt() {
  plans_.clear();  // descriptors before the handle
  if (handle_) cublasLtDestroy(handle_);
}

void CublasLt::prepare() {
  if (handle_) return;
  QF_CUBLAS_CHECK(cublasLtCreate(&handle_));
  workspace_ = DeviceBuffer(kWorkspaceBytes, "the cuBLASLt workspace");
}

bool CublasLt::fp8_supports(int64_t m, int64_t n, int64_t k) {
  // Hopper FP8: TN only, leading dimensions (K for both operands, bytes) multiples of 16, and
  // the output's leading dimension N (BF16) a multiple of 8 elements; we ask N % 16 for margin.
  return m >= 1 && n >= 16 && k >= 16 && k % 16 == 0 && n % 16 == 0;
}

CublasLt::Plan& CublasLt::plan_for(const PlanKey& key, const float* x_scale, const float* w_scale) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;

  prepare();
  auto plan = std::make_unique<Plan>();
  const bool fp8 = key.kind == Kind::fp8 || key.kind == Kind::fp8_fast_accum || key.kind == Kind::fp8_rowwise;
  const bool f32 = key.kind == Kind::f32 || key.kind == Kind::f32_gram || key.kind == Kind::f32_update;
  const cudaDataType_t in_type = fp8 ? CUDA_R_8F_E4M3 : f32 ? CUDA_R_32F : CUDA_R_16BF;

  QF_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // The Gram matrix x^T x: with x [m, c] row-major = column-major X [c, m], G = X · X^T, i.e.
  // (cuBLAS's m, n, k) = (c, c, tokens), A = X not transposed, B = X transposed.
  // The GPTQ update c[m, n] -= a[m, k] · b[k, n] (row-major, strided): column-major C^T = C^T -
  // B^T A^T with B^T = b as a column-major [n, k] (ld ld_w) and A^T = a as [k, m] (ld ld_x), both
  // not transposed; key (m, n, k) = (m, n, k) of the row-major product.
  const bool gram = key.kind == Kind::f32_gram, update = key.kind == Kind::f32_update;
  const cublasOperation_t trans_a = gram || update ? CUBLAS_OP_N : CUBLAS_OP_T,
                          trans_b = gram ? CUBLAS_OP_T : CUBLAS_OP_N;
  QF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof trans_a));
  QF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof trans_b));
  if (fp8) {
    // The scale pointers are set here too (not only per call) because the heuristic takes
    // their presence into account.
    QF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_scale, sizeof w_scale));
    QF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &x_scale, sizeof x_scale));
    const int8_t fast = key.kind == Kind::fp8_fast_accum ? 1 : 0;
    QF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof fast));
    if (key.kind == Kind::fp8_rowwise) {
      // cuBLAS's A is our W (its rows are the output's columns): N scales; its B is x: M scales.
      const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
      QF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof mode));
      QF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof mode));
    }
  }
  if (update) {
    QF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a, in_type, key.n, key.k, key.ld_w));
    QF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->b, in_type, key.k, key.m, key.ld_x));
  } else if (gram) {  // key: (m, n, k) = (c, c, tokens); both operands are X [c, tokens], ld c
    QF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a, in_type, key.n, key.k, key.n));
    QF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->b, in_type, key.m, key.k, key.m));
  } else {
    QF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a, in_type, key.k, key.n, key.k));
    QF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->b, in_type, key.k, key.m, key.k));
  }
  const cudaDataType_t out_type = key.kind == Kind::bf16_f32out || f32 ? CUDA_R_32F : CUDA_R_16BF;
  QF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->c, out_type, key.n, key.m, update ? key.ld_y : key.n));

  cublasLtMatmulPreference_t pref = nullptr;
  QF_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  struct PrefGuard {
    cublasLtMatmulPreference_t p;
    ~PrefGuard() { cublasLtMatmulPreferenceDestroy(p); }
  } guard{pref};
  const size_t ws = kWorkspaceBytes;
  QF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  // Split-K partial sums in FP32 only: the in-place and output-type reduction schemes add up
  // partial results stored in BF16, which costs bits our GEMV and the CPU twin keep. (PyTorch
  // allows them by default; see docs/benchmarks.md on the baseline.) FP8 is left to cuBLASLt's
  // defaults, as PyTorch's scaled_mm does: its kernels accumulate in FP32 regardless.
  if (!fp8) {
    const uint32_t reductions = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    QF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &reductions, sizeof reductions));
  }
  QF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &key.align_w, sizeof key.align_w));
  QF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &key.align_x, sizeof key.align_x));
  QF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &key.align_y, sizeof key.align_y));
  QF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &key.align_y, sizeof key.align_y));

  constexpr int kMaxCandidates = 8;
  cublasLtMatmulHeuristicResult_t results[kMaxCandidates] = {};
  int returned = 0;
  QF_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(handle_, plan->op, plan->a, plan->b, plan->c, plan->c, pref,
                                                 kMaxCandidates, results, &returned));
  for (int i = 0; i < returned; ++i)
    if (results[i].state == CUBLAS_STATUS_SUCCESS) plan->candidates.push_back(results[i].algo);
  QF_CHECK(!plan->candidates.empty(), "cuBLASLt has no ",
           fp8 ? (key.kind == Kind::fp8_fast_accum ? "FP8 E4M3 (fast accumulation)"
                  : key.kind == Kind::fp8_rowwise  ? "FP8 E4M3 (row-wise scales)"
                                                   : "FP8 E4M3")
           : f32 ? "FP32" : "BF16", " GEMM for M=", key.m, " N=", key.n, " K=", key.k,
           " (pointer alignment x ", key.align_x, ", W ", key.align_w, ", y ", key.align_y, " bytes)");
  return *plans_.emplace(key, std::move(plan)).first->second;
}

void CublasLt::run(Plan& plan, const void* x, const void* w, void* y, cudaStream_t stream, float alpha, float beta) {
  auto matmul = [&](const cublasLtMatmulAlgo_t& algo) {
    return cublasLtMatmul(handle_, plan.op, &alpha, w, plan.a, x, plan.b, &beta, y, plan.c, y, plan.c, &algo,
                          workspace_.data(), workspace_.size(), stream);
  };
  if (plan.validated) {
    QF_CUBLAS_CHECK(matmul(plan.candidates[plan.chosen]));
    return;
  }
  // First call of this shape: the first candidate that runs becomes the plan's algorithm.
  // Refusals are synchronous (argument checks), so trying the next one is safe.
  cublasStatus_t st = CUBLAS_STATUS_NOT_SUPPORTED;
  for (; plan.chosen < plan.candidates.size(); ++plan.chosen) {
    st = matmul(plan.candidates[plan.chosen]);
    if (st != CUBLAS_STATUS_NOT_SUPPORTED) break;
  }
  QF_CHECK(plan.chosen < plan.candidates.size(), "cuBLASLt refused all ", plan.candidates.size(),
           " algorithms its heuristic offered (CUBLAS_STATUS_NOT_SUPPORTED); set CUBLASLT_LOG_LEVEL=5 to see why");
  QF_CUBLAS_CHECK(st);
  plan.validated = true;
}

void CublasLt::linear_f32(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k,
                          cudaStream_t stream) {
  QF_CHECK(m >= 1 && n >= 1 && k >= 1, "cuBLASLt FP32 linear: bad shape M=", m, " N=", n, " K=", k);
  const PlanKey key{Kind::f32, m, n, k, pointer_alignment(x), pointer_alignment(w), pointer_alignment(y)};
  run(plan_for(key, nullptr, nullptr), x, w, y, stream);
}

void CublasLt::gram_f32(const float* x, float* g, int64_t m, int64_t c, cudaStream_t stream) {
  QF_CHECK(m >= 1 && c >= 1, "cuBLASLt FP32 Gram matrix: bad shape ", m, " x ", c);
  const PlanKey key{Kind::f32_gram, c, c, m, pointer_alignment(x), pointer_alignment(x), pointer_alignment(g)};
  run(plan_for(key, nullptr, nullptr), x, x, g, stream);
}

void CublasLt::gemm_subtract_f32(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                                 int64_t m, int64_t n, int64_t k, cudaStream_t stream) {
  QF_CHECK(m >= 1 && n >= 1 && k >= 1 && lda >= k && ldb >= n && ldc >= n, "cuBLASLt FP32 update: bad shape M=", m,
           " N=", n, " K=", k, " (strides ", lda, ", ", ldb, ", ", ldc, ")");
  PlanKey key{Kind::f32_update, m, n, k, pointer_alignment(a), pointer_alignment(b), pointer_alignment(c)};
  key.ld_x = lda, key.ld_w = ldb, key.ld_y = ldc;
  run(plan_for(key, nullptr, nullptr), a, b, c, stream, -1.f, 1.f);
}

void CublasLt::linear_bf16(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, int64_t m, int64_t n,
                           int64_t k, cudaStream_t stream) {
  QF_CHECK(m >= 1 && n >= 1 && k >= 1, "cuBLASLt BF16 linear: bad shape M=", m, " N=", n, " K=", k);
  const PlanKey key{Kind::bf16, m, n, k, pointer_alignment(x), pointer_alignment(w), pointer_alignment(y)};
  run(plan_for(key, nullptr, nullptr), x, w, y, stream);
}

void CublasLt::linear_bf16_f32out(const __nv_bfloat16* x, const __nv_bfloat16* w, float* y, int64_t m, int64_t n,
                                  int64_t k, cudaStream_t stream) {
  QF_CHECK(m >= 1 && n >= 1 && k >= 1, "cuBLASLt BF16 linear (FP32 out): bad shape M=", m, " N=", n, " K=", k);
  const PlanKey key{Kind::bf16_f32out, m, n, k, pointer_alignment(x), pointer_alignment(w), pointer_alignment(y)};
  run(plan_for(key, nullptr, nullptr), x, w, y, stream);
}

void CublasLt::linear_fp8(const __nv_fp8_e4m3* x, const float* x_scale, const __nv_fp8_e4m3* w, const float* w_scale,
                          __nv_bfloat16* y, int64_t m, int64_t n, int64_t k, bool fast_accum, cudaStream_t stream) {
  run_fp8(fast_accum ? Kind::fp8_fast_accum : Kind::fp8, x, x_scale, w, w_scale, y, m, n, k, stream);
}

void CublasLt::linear_fp8_rowwise(const __nv_fp8_e4m3* x, const float* x_scale, const __nv_fp8_e4m3* w,
                                  const float* w_scale, __nv_bfloat16* y, int64_t m, int64_t n, int64_t k,
                                  cudaStream_t stream) {
  run_fp8(Kind::fp8_rowwise, x, x_scale, w, w_scale, y, m, n, k, stream);
}

void CublasLt::run_fp8(Kind kind, const __nv_fp8_e4m3* x, const float* x_scale, const __nv_fp8_e4m3* w,
                       const float* w_scale, __nv_bfloat16* y, int64_t m, int64_t n, int64_t k, cudaStream_t stream) {
  const char* what = kind == Kind::fp8_rowwise ? "cuBLASLt FP8 row-wise linear" : "cuBLASLt FP8 linear";
  QF_CHECK(fp8_supports(m, n, k), what, ": unsupported shape M=", m, " N=", n, " K=", k,
           " (Hopper FP8 GEMMs need N and K multiples of 16)");
  QF_CHECK(x_scale && w_scale, what, ": the scales (device pointers) are required");
  const PlanKey key{kind, m, n, k, pointer_alignment(x), pointer_alignment(w), pointer_alignment(y)};
  QF_CHECK(key.align_x >= 16 && key.align_w >= 16 && key.align_y >= 16, what, ": x, W and y must be 16-byte aligned");
  // Measured on the H100 (CUDA 13.0, 2026-11-23): with a scale pointer 4 bytes past a 16-byte
  // boundary cublasLtMatmul refuses every algorithm the heuristic offers (NOT_SUPPORTED), at
  // every shape; 16-byte aligned, the first one runs.
  QF_CHECK(pointer_alignment(x_scale) >= 16 && pointer_alignment(w_scale) >= 16, what,
           ": the scale pointers must be 16-byte aligned (cuBLASLt refuses others)");
  Plan& plan = plan_for(key, x_scale, w_scale);
  // Per call: the plan may have been made with other scale tensors.
  QF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_scale, sizeof w_scale));
  QF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &x_scale, sizeof x_scale));
  run(plan, x, w, y, stream);
}

}  // namespace qf::cuda
