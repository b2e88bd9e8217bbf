#include "quant/linalg.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"

namespace qf {
namespace {

// dgemm_add's blocking (the float scheme of backends/cpu/gemm.cpp, for doubles):
//   * a task owns a kTile x kTile tile of C, so tasks never write the same memory;
//   * B is packed one k-slab of kKC rows at a time into panels of kNR columns ([k][kNR],
//     zero-padded), which the micro-kernel reads contiguously: kKC x kNR doubles = 16 KiB, L1;
//   * the micro-kernel holds a kMR x kNR block of C in registers: 4 x 8 doubles = 8 AVX2
//     registers of accumulators, two for the B row, one for the broadcast A value.
constexpr int64_t kTile = 64;
constexpr int64_t kKC = 256;
constexpr int64_t kMR = 4;
constexpr int64_t kNR = 8;
static_assert(kTile % kMR == 0 && kTile % kNR == 0);

// Cholesky / triangular inverse block size: the unblocked work on a panel is O(n kNb^2), the
// blocked rest goes through dgemm_add.
constexpr int64_t kNb = 64;

template <int ROWS>
void micro_kernel(int64_t kc, double alpha, const double* __restrict A, int64_t lda, const double* __restrict panel,
                  double* __restrict C, int64_t ldc, int64_t cols) {
  double acc[ROWS][kNR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    const double* b = panel + k * kNR;
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; ++r) {
      const double a = A[r * lda + k];
#pragma GCC unroll 8
      for (int64_t j = 0; j < kNR; ++j) acc[r][j] = std::fma(a, b[j], acc[r][j]);
    }
  }
  for (int r = 0; r < ROWS; ++r)
    for (int64_t j = 0; j < cols; ++j) C[r * ldc + j] += alpha * acc[r][j];
}

void micro_kernel_rows(int64_t rows, int64_t kc, double alpha, const double* A, int64_t lda, const double* panel,
                       double* C, int64_t ldc, int64_t cols) {
  switch (rows) {
    case 4: return micro_kernel<4>(kc, alpha, A, lda, panel, C, ldc, cols);
    case 3: return micro_kernel<3>(kc, alpha, A, lda, panel, C, ldc, cols);
    case 2: return micro_kernel<2>(kc, alpha, A, lda, panel, C, ldc, cols);
    case 1: return micro_kernel<1>(kc, alpha, A, lda, panel, C, ldc, cols);
  }
  QF_ASSERT(false);
}

// C[M x N] += alpha A · B on the calling thread (one task's worth).
void dgemm_add_serial(int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda, const double* B,
                      int64_t ldb, double* C, int64_t ldc) {
  thread_local std::vector<double> packed;
  const int64_t panels = (N + kNR - 1) / kNR;
  packed.resize(size_t(panels * kKC * kNR));
  for (int64_t k0 = 0; k0 < K; k0 += kKC) {
    const int64_t kc = std::min(kKC, K - k0);
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t cols = std::min(kNR, N - p * kNR);
      double* panel = packed.data() + p * kKC * kNR;
      for (int64_t k = 0; k < kc; ++k) {
        const double* b = B + (k0 + k) * ldb + p * kNR;
        for (int64_t j = 0; j < kNR; ++j) panel[k * kNR + j] = j < cols ? b[j] : 0.0;
      }
    }
    for (int64_t m = 0; m < M; m += kMR)
      for (int64_t p = 0; p < panels; ++p)
        micro_kernel_rows(std::min(kMR, M - m), kc, alpha, A + m * lda + k0, lda, packed.data() + p * kKC * kNR,
                          C + m * ldc + p * kNR, ldc, std::min(kNR, N - p * kNR));
  }
}

// Forward substitution on one kNb-sized diagonal block: the inverse of the m x m lower
// triangle at l (leading dimension ld) into inv (m x m, row-major).
void invert_small_lower(const double* l, int64_t ld, int64_t m, double* inv) {
  std::fill(inv, inv + m * m, 0.0);
  for (int64_t i = 0; i < m; ++i) {
    const double d = l[i * ld + i];
    inv[i * m + i] = 1.0 / d;
    for (int64_t j = 0; j < i; ++j) {
      double s = 0;
      for (int64_t p = j; p < i; ++p) s += l[i * ld + p] * inv[p * m + j];
      inv[i * m + j] = -s / d;
    }
  }
}

}  // namespace

void dgemm_add(int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda, const double* B,
               int64_t ldb, double* C, int64_t ldc, bool lower_only, int64_t diagonal_offset) {
  if (M <= 0 || N <= 0 || K <= 0) return;
  struct Task {
    int64_t i0, j0;
  };
  std::vector<Task> tasks;
  for (int64_t i0 = 0; i0 < M; i0 += kTile)
    for (int64_t j0 = 0; j0 < N; j0 += kTile) {
      const int64_t last_row = std::min(i0 + kTile, M) - 1 + diagonal_offset;
      if (!lower_only || j0 <= last_row) tasks.push_back({i0, j0});
    }
  // Largest tiles first would not matter: all tiles are the same size except at the edges.
  parallel_for(int64_t(tasks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const Task& task = tasks[size_t(t)];
      dgemm_add_serial(std::min(kTile, M - task.i0), std::min(kTile, N - task.j0), K, alpha, A + task.i0 * lda, lda,
                       B + task.j0, ldb, C + task.i0 * ldc + task.j0, ldc);
    }
  });
}

void cholesky_lower(double* a, int64_t n, std::string_view what) {
  std::vector<double> panel_t;  // L21^T of the current panel, [kb x (n - k1)]
  for (int64_t k0 = 0; k0 < n; k0 += kNb) {
    const int64_t k1 = std::min(k0 + kNb, n), kb = k1 - k0;
    // 1. The diagonal block, unblocked (earlier panels' contributions are already subtracted).
    for (int64_t j = k0; j < k1; ++j) {
      double d = a[j * n + j];
      for (int64_t p = k0; p < j; ++p) d -= a[j * n + p] * a[j * n + p];
      QF_CHECK(d > 0 && std::isfinite(d), "Cholesky of ", what, ": the pivot of column ", j, " is ", d,
               "; the matrix is not (numerically) positive definite");
      const double ljj = std::sqrt(d);
      a[j * n + j] = ljj;
      for (int64_t i = j + 1; i < k1; ++i) {
        double s = a[i * n + j];
        for (int64_t p = k0; p < j; ++p) s -= a[i * n + p] * a[j * n + p];
        a[i * n + j] = s / ljj;
      }
    }
    if (k1 == n) break;
    // 2. The panel below it: L21 = A21 L11^{-T}, row by row.
    parallel_for(n - k1, 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = k1 + begin; i < k1 + end; ++i)
        for (int64_t j = k0; j < k1; ++j) {
          double s = a[i * n + j];
          for (int64_t p = k0; p < j; ++p) s -= a[i * n + p] * a[j * n + p];
          a[i * n + j] = s / a[j * n + j];
        }
    });
    // 3. The trailing matrix: A22 -= L21 L21^T (lower triangle).
    const int64_t rest = n - k1;
    panel_t.resize(size_t(kb * rest));
    for (int64_t i = 0; i < rest; ++i)
      for (int64_t p = 0; p < kb; ++p) panel_t[size_t(p * rest + i)] = a[(k1 + i) * n + k0 + p];
    dgemm_add(rest, rest, kb, -1.0, a + k1 * n + k0, n, panel_t.data(), rest, a + k1 * n + k1, n, /*lower_only=*/true);
  }
  for (int64_t i = 0; i < n; ++i) std::fill(a + i * n + i + 1, a + (i + 1) * n, 0.0);
}

void invert_lower_triangular(double* l, int64_t n) {
  std::vector<double> inv_diag, t;
  for (int64_t i0 = 0; i0 < n; i0 += kNb) {
    const int64_t i1 = std::min(i0 + kNb, n), m = i1 - i0;
    inv_diag.resize(size_t(m * m));
    invert_small_lower(l + i0 * n + i0, n, m, inv_diag.data());
    if (i0 > 0) {
      // T = L[i0:i1, 0:i0] · X[0:i0, 0:i0], where rows < i0 already hold X = L^{-1}. X is lower
      // triangular, so column tile [j0, j1) of T needs only rows j0.. of X.
      t.assign(size_t(m * i0), 0.0);
      const int64_t tiles = (i0 + kTile - 1) / kTile;
      parallel_for(tiles, 1, [&](int64_t begin, int64_t end) {
        for (int64_t tile = begin; tile < end; ++tile) {
          const int64_t j0 = tile * kTile, j1 = std::min(j0 + kTile, i0);
          dgemm_add_serial(m, j1 - j0, i0 - j0, 1.0, l + i0 * n + j0, n, l + j0 * n + j0, n, t.data() + j0, i0);
        }
      });
      // X[i0:i1, 0:i0] = -L_ii^{-1} T (only now: T read these rows of L).
      parallel_for(tiles, 1, [&](int64_t begin, int64_t end) {
        for (int64_t tile = begin; tile < end; ++tile) {
          const int64_t j0 = tile * kTile, j1 = std::min(j0 + kTile, i0);
          for (int64_t r = 0; r < m; ++r) std::fill(l + (i0 + r) * n + j0, l + (i0 + r) * n + j1, 0.0);
          dgemm_add_serial(m, j1 - j0, m, -1.0, inv_diag.data(), m, t.data() + j0, i0, l + i0 * n + j0, n);
        }
      });
    }
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c <= r; ++c) l[(i0 + r) * n + i0 + c] = inv_diag[size_t(r * m + c)];
  }
}

std::vector<double> inverse_cholesky_upper(const double* a, int64_t n, std::string_view what) {
  // b = P a P (P reverses the order), so the lower Cholesky factor of b is P R P.
  std::vector<double> b(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) b[size_t(i * n + j)] = a[(n - 1 - i) * n + (n - 1 - j)];
  cholesky_lower(b.data(), n, what);
  invert_lower_triangular(b.data(), n);
  std::vector<double> u(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) u[size_t(i * n + j)] = b[size_t((n - 1 - i) * n + (n - 1 - j))];
  return u;
}

void householder_qr(const double* a, int64_t n, double* q, double* r) {
  // Work on the transpose, so that each column of a (what a reflector acts on) is a contiguous
  // row: at[j * n + i] = a[i][j].
  std::vector<double> at(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) at[size_t(j * n + i)] = a[i * n + j];
  // Reflector k is I - 2 v_k v_k^T with v_k unit, zero before index k; v_k = 0 means none.
  std::vector<double> v(size_t(n * n), 0.0);
  std::vector<double> diag(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) {
    double* x = at.data() + k * n;
    double norm2 = 0;
    for (int64_t i = k; i < n; ++i) norm2 += x[i] * x[i];
    const double norm = std::sqrt(norm2);
    if (norm == 0) {
      diag[size_t(k)] = 0;
      continue;
    }
    const double alpha = x[k] >= 0 ? -norm : norm;  // R_kk; -sign(x_k) |x| avoids cancellation in v
    double* vk = v.data() + k * n;
    double vnorm2 = 0;
    for (int64_t i = k; i < n; ++i) {
      vk[i] = x[i] - (i == k ? alpha : 0.0);
      vnorm2 += vk[i] * vk[i];
    }
    const double inv_vnorm = 1.0 / std::sqrt(vnorm2);
    for (int64_t i = k; i < n; ++i) vk[i] *= inv_vnorm;
    diag[size_t(k)] = alpha;
    parallel_for(n - k - 1, 8, [&](int64_t begin, int64_t end) {
      for (int64_t j = k + 1 + begin; j < k + 1 + end; ++j) {
        double* col = at.data() + j * n;
        double dot = 0;
        for (int64_t i = k; i < n; ++i) dot += vk[i] * col[i];
        for (int64_t i = k; i < n; ++i) col[i] -= 2 * dot * vk[i];
      }
    });
  }
  // Signs making R's diagonal non-negative: row k of R and column k of Q flip together.
  std::vector<double> sign(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) sign[size_t(k)] = diag[size_t(k)] < 0 ? -1.0 : 1.0;
  if (r) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        r[i * n + j] = j < i ? 0.0 : sign[size_t(i)] * (j == i ? diag[size_t(i)] : at[size_t(j * n + i)]);
  }
  if (q) {
    // Q = H_0 H_1 ... H_{n-1}: each row of the identity times the reflectors, in order.
    parallel_for(n, 8, [&](int64_t begin, int64_t end) {
      std::vector<double> row(static_cast<size_t>(n));
      for (int64_t i = begin; i < end; ++i) {
        std::fill(row.begin(), row.end(), 0.0);
        row[size_t(i)] = 1.0;
        for (int64_t k = 0; k < n; ++k) {
          const double* vk = v.data() + k * n;
          double dot = 0;
          for (int64_t c = k; c < n; ++c) dot += row[size_t(c)] * vk[c];
          if (dot != 0)
            for (int64_t c = k; c < n; ++c) row[size_t(c)] -= 2 * dot * vk[c];
        }
        for (int64_t c = 0; c < n; ++c) q[i * n + c] = row[size_t(c)] * sign[size_t(c)];
      }
    });
  }
}

}  // namespace qf
