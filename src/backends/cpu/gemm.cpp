// Blocked FP32 GEMM in plain C++ that GCC/Clang vectorise with -march=x86-64-v3 (AVX2 + FMA).
//
// The classic three-level scheme (Goto/BLIS, as in llm.c's CPU matmul and ggml's sgemm):
//   * B is packed, one tile of kKC rows of k by kNC columns at a time, into panels of kNR
//     columns stored k-major ([k][kNR]); BF16/F16 weights are widened to F32 while packing, so
//     the inner loop only ever sees F32 and a weight matrix is never converted as a whole;
//   * a micro-kernel keeps a kMR x kNR block of C in registers and, for each k, broadcasts one
//     A value per row and multiplies it by the kNR packed B values with FMAs.
// Register budget (AVX2: 16 ymm registers of 8 floats): the 6 x 16 accumulator block is
// 12 registers, two more hold the B row, one the broadcast A value: 15 of 16.
// Cache budget: a packed panel (kKC x kNR floats = 16 KiB) stays in L1 while the micro-kernel
// sweeps the rows; the packed tile (kKC x kNC floats = 64 KiB) and the A block of a task
// (kMC x kKC floats = 192 KiB) stay in L2.
//
// Determinism: the k loop always runs 0..K-1 in order with one std::fma per step and the
// k-tile boundaries are multiples of kKC counted from 0, so the value of C[m,n] does not depend
// on M, on the tile a row falls in or on the thread (see gemm.h).
#include "backends/cpu/gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "backends/cpu/half.h"
#include "core/error.h"
#include "core/thread_pool.h"

namespace qf::cpu {
namespace {

constexpr int64_t kMR = 4;    // rows of the register block
constexpr int64_t kNR = 16;   // columns of the register block (two AVX2 vectors)
constexpr int64_t kKC = 256;  // k extent of a packed tile
constexpr int64_t kNC = 64;   // columns of a task (four panels)
constexpr int64_t kMC = 192;  // rows of a task (a multiple of kMR)
static_assert(kNC % kNR == 0 && kMC % kMR == 0);

// B(k, n) as F32, for either layout.
template <typename T, BLayout L>
inline float b_at(const T* B, int64_t ldb, int64_t k, int64_t n) {
  const T v = (L == BLayout::NK) ? B[n * ldb + k] : B[k * ldb + n];
  if constexpr (std::is_same_v<T, float>) return v;
  else return widen_half<T>(v);
}

// Packs B(k0..k0+kc, n0..n0+nc) into ceil(nc/kNR) panels of [kc][kNR] floats; the columns of
// the last panel past nc are zero (the micro-kernel computes them and they are not stored).
template <typename T, BLayout L>
void pack_b(const T* B, int64_t ldb, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* packed) {
  for (int64_t p = 0; p < nc; p += kNR) {
    const int64_t cols = std::min(kNR, nc - p);
    float* panel = packed + (p / kNR) * kc * kNR;
    if constexpr (L == BLayout::NK) {
      // Column j of the panel is row n0+p+j of W: read the panel's rows as kNR streams,
      // write the panel contiguously.
      const T* rows = B + (n0 + p) * ldb + k0;
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t j = 0; j < cols; ++j) {
          const T v = rows[j * ldb + k];
          if constexpr (std::is_same_v<T, float>) panel[k * kNR + j] = v;
          else panel[k * kNR + j] = widen_half<T>(v);
        }
    } else {
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t j = 0; j < cols; ++j) panel[k * kNR + j] = b_at<T, L>(B, ldb, k0 + k, n0 + p + j);
    }
    for (int64_t k = 0; k < kc; ++k)
      for (int64_t j = cols; j < kNR; ++j) panel[k * kNR + j] = 0.0f;
  }
}

// C block (ROWS x cols) (+)= A block (ROWS x kc) · panel (kc x kNR). first: the accumulators
// start at 0 (first k tile); otherwise they continue from the partial sums stored in C.
// ROWS is a template parameter so every row count gets fully unrolled, register-resident
// accumulators; each element still sees the same fma sequence, so results do not depend on it.
template <int ROWS>
void micro_kernel(int64_t kc, const float* __restrict A, int64_t lda, const float* __restrict panel,
                  float* __restrict C, int64_t ldc, int64_t cols, bool first) {
  float acc[ROWS][kNR];
  for (int r = 0; r < ROWS; ++r)
    for (int64_t j = 0; j < kNR; ++j) acc[r][j] = (first || j >= cols) ? 0.0f : C[r * ldc + j];
  for (int64_t k = 0; k < kc; ++k) {
    const float* b = panel + k * kNR;
    // Fully unrolled, the ROWS x kNR accumulators become ROWS x 2 ymm registers.
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) {
      const float a = A[r * lda + k];
#pragma GCC unroll 16
      for (int64_t j = 0; j < kNR; ++j) acc[r][j] = std::fma(a, b[j], acc[r][j]);
    }
  }
  for (int r = 0; r < ROWS; ++r)
    for (int64_t j = 0; j < cols; ++j) C[r * ldc + j] = acc[r][j];
}

void micro_kernel_rows(int64_t rows, int64_t kc, const float* A, int64_t lda, const float* panel, float* C,
                       int64_t ldc, int64_t cols, bool first) {
  switch (rows) {
    case 6: return micro_kernel<6>(kc, A, lda, panel, C, ldc, cols, first);
    case 5: return micro_kernel<5>(kc, A, lda, panel, C, ldc, cols, first);
    case 4: return micro_kernel<4>(kc, A, lda, panel, C, ldc, cols, first);
    case 3: return micro_kernel<3>(kc, A, lda, panel, C, ldc, cols, first);
    case 2: return micro_kernel<2>(kc, A, lda, panel, C, ldc, cols, first);
    case 1: return micro_kernel<1>(kc, A, lda, panel, C, ldc, cols, first);
  }
  QF_ASSERT(false);
}

// One task: rows [m0, m0+mc) x columns [n0, n0+nc) of C, all of K.
template <typename T, BLayout L>
void gemm_block(int64_t m0, int64_t mc, int64_t n0, int64_t nc, int64_t K, const float* A, int64_t lda,
                const T* B, int64_t ldb, float* C, int64_t ldc) {
  thread_local std::vector<float> packed;
  packed.resize(static_cast<size_t>(kKC * kNC));
  for (int64_t k0 = 0; k0 < K; k0 += kKC) {
    const int64_t kc = std::min(kKC, K - k0);
    pack_b<T, L>(B, ldb, k0, kc, n0, nc, packed.data());
    for (int64_t m = m0; m < m0 + mc; m += kMR) {
      const int64_t rows = std::min(kMR, m0 + mc - m);
      for (int64_t p = 0; p < nc; p += kNR)
        micro_kernel_rows(rows, kc, A + m * lda + k0, lda, packed.data() + (p / kNR) * kc * kNR,
                          C + m * ldc + n0 + p, ldc, std::min(kNR, nc - p), k0 == 0);
    }
  }
}

template <typename T, BLayout L>
void gemm_typed(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const T* B, int64_t ldb, float* C,
                int64_t ldc, bool parallel) {
  if (K == 0) {  // an empty sum: every C element is 0
    for (int64_t m = 0; m < M; ++m) std::fill(C + m * ldc, C + m * ldc + N, 0.0f);
    return;
  }
  const int64_t m_tasks = (M + kMC - 1) / kMC, n_tasks = (N + kNC - 1) / kNC;
  auto run = [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t mt = t / n_tasks, nt = t % n_tasks;
      const int64_t m0 = mt * kMC, n0 = nt * kNC;
      gemm_block<T, L>(m0, std::min(kMC, M - m0), n0, std::min(kNC, N - n0), K, A, lda, B, ldb, C, ldc);
    }
  };
  if (parallel) parallel_for(m_tasks * n_tasks, 1, run);
  else run(0, m_tasks * n_tasks);
}

template <BLayout L>
void gemm_layout(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const void* B, DType b_dtype,
                 int64_t ldb, float* C, int64_t ldc, bool parallel) {
  switch (b_dtype) {
    case DType::F32:
      return gemm_typed<float, L>(M, N, K, A, lda, static_cast<const float*>(B), ldb, C, ldc, parallel);
    case DType::BF16:
      return gemm_typed<Bf16Bits, L>(M, N, K, A, lda, static_cast<const Bf16Bits*>(B), ldb, C, ldc, parallel);
    case DType::F16:
      return gemm_typed<F16Bits, L>(M, N, K, A, lda, static_cast<const F16Bits*>(B), ldb, C, ldc, parallel);
    default:
      fail("cpu gemm: weights of dtype ", dtype_name(b_dtype), " are not supported (F32, BF16 or F16)");
  }
}

}  // namespace

void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const void* B, DType b_dtype, int64_t ldb,
          BLayout b_layout, float* C, int64_t ldc, bool parallel) {
  QF_CHECK(M >= 0 && N >= 0 && K >= 0, "cpu gemm: negative size M=", M, " N=", N, " K=", K);
  if (M == 0 || N == 0) return;
  QF_CHECK(lda >= K && ldc >= N && ldb >= (b_layout == BLayout::NK ? K : N), "cpu gemm: a leading dimension is "
           "smaller than its row (lda=", lda, " ldb=", ldb, " ldc=", ldc, ")");
  if (b_layout == BLayout::NK) gemm_layout<BLayout::NK>(M, N, K, A, lda, B, b_dtype, ldb, C, ldc, parallel);
  else gemm_layout<BLayout::KN>(M, N, K, A, lda, B, b_dtype, ldb, C, ldc, parallel);
}

void linear(const float* x, int64_t M, int64_t K, const void* W, DType w_dtype, int64_t N, const float* bias,
            float* y) {
  gemm(M, N, K, x, K, W, w_dtype, K, BLayout::NK, y, N, /*parallel=*/true);
  if (bias) {
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) y[m * N + n] += bias[n];
  }
}

}  // namespace qf::cpu
