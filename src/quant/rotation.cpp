#include "quant/rotation.h"

#include <cmath>
#include <random>

#include "backends/cpu/gemm.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "quant/linalg.h"

namespace qf {
namespace {

// A double in [0, 1) from the top 53 bits of one mt19937_64 draw.
double uniform01(std::mt19937_64& rng) { return double(rng() >> 11) * 0x1.0p-53; }

// Standard normal samples by Box-Muller, two per pair of uniforms; 1 - u keeps the log finite.
std::vector<double> portable_gaussian(int64_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<double> v(static_cast<size_t>(count));
  const double two_pi = 6.283185307179586476925286766559;
  for (int64_t i = 0; i < count; i += 2) {
    const double radius = std::sqrt(-2.0 * std::log(1.0 - uniform01(rng)));
    const double angle = two_pi * uniform01(rng);
    v[size_t(i)] = radius * std::cos(angle);
    if (i + 1 < count) v[size_t(i + 1)] = radius * std::sin(angle);
  }
  return v;
}

// x [rows, n] := x · B^T (b_layout NK) or x · B (KN), B dense n x n, through a temporary.
void dense_rows(float* x, int64_t rows, int64_t n, const std::vector<float>& b, cpu::BLayout layout) {
  std::vector<float> out(static_cast<size_t>(rows * n));
  cpu::gemm(rows, n, n, x, n, b.data(), DType::F32, n, layout, out.data(), n, /*parallel=*/true);
  std::copy(out.begin(), out.end(), x);
}

}  // namespace

Rotation Rotation::hadamard(int64_t n) {
  Rotation r;
  r.kind_ = Kind::hadamard;
  r.n_ = n;
  r.hadamard_.emplace(n);
  return r;
}

Rotation Rotation::randomized_hadamard(int64_t n, uint64_t seed) {
  Rotation r = hadamard(n);
  r.kind_ = Kind::randomized_hadamard;
  std::mt19937_64 rng(seed);
  r.signs_.resize(size_t(n));
  for (auto& s : r.signs_) s = (rng() >> 63) != 0 ? -1.0f : 1.0f;
  return r;
}

Rotation Rotation::random_orthogonal(int64_t n, uint64_t seed) {
  QF_CHECK(n >= 1, "random orthogonal rotation: size ", n, " must be >= 1");
  const std::vector<double> g = portable_gaussian(n * n, seed);
  std::vector<double> q(static_cast<size_t>(n * n));
  householder_qr(g.data(), n, q.data(), nullptr);
  return from_matrix(std::vector<float>(q.begin(), q.end()), n);
}

Rotation Rotation::from_matrix(std::vector<float> matrix, int64_t n) {
  QF_CHECK(n >= 1 && int64_t(matrix.size()) == n * n, "rotation: a ", n, " x ", n, " matrix needs ", n * n,
           " values, got ", matrix.size());
  Rotation r;
  r.kind_ = Kind::dense;
  r.n_ = n;
  r.dense_ = std::move(matrix);
  r.dense_t_.resize(r.dense_.size());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) r.dense_t_[size_t(j * n + i)] = r.dense_[size_t(i * n + j)];
  return r;
}

void Rotation::apply(float* x, bool transpose) const { apply_rows(x, 1, transpose); }

void Rotation::apply_rows(float* x, int64_t count, bool transpose) const {
  switch (kind_) {
    case Kind::hadamard: return hadamard_->apply_rows(x, count, transpose);
    case Kind::randomized_hadamard: {
      // R x = H (s ⊙ x);  R^T x = s ⊙ (H^T x).
      if (!transpose)
        for (int64_t r = 0; r < count; ++r)
          for (int64_t i = 0; i < n_; ++i) x[r * n_ + i] *= signs_[size_t(i)];
      hadamard_->apply_rows(x, count, transpose);
      if (transpose)
        for (int64_t r = 0; r < count; ++r)
          for (int64_t i = 0; i < n_; ++i) x[r * n_ + i] *= signs_[size_t(i)];
      return;
    }
    case Kind::dense:
      // Row x := R x is X R^T: B = R used transposed (NK); with transpose X R: B = R as KN.
      return dense_rows(x, count, n_, dense_, transpose ? cpu::BLayout::KN : cpu::BLayout::NK);
  }
}

void Rotation::apply_columns(float* x, int64_t cols, bool transpose) const {
  switch (kind_) {
    case Kind::hadamard: return hadamard_->apply_columns(x, cols, transpose);
    case Kind::randomized_hadamard: {
      // R X = H (diag(s) X);  R^T X = diag(s) (H^T X).
      if (!transpose)
        for (int64_t i = 0; i < n_; ++i)
          for (int64_t c = 0; c < cols; ++c) x[i * cols + c] *= signs_[size_t(i)];
      hadamard_->apply_columns(x, cols, transpose);
      if (transpose)
        for (int64_t i = 0; i < n_; ++i)
          for (int64_t c = 0; c < cols; ++c) x[i * cols + c] *= signs_[size_t(i)];
      return;
    }
    case Kind::dense: {
      std::vector<float> out(static_cast<size_t>(n_ * cols));
      cpu::gemm(n_, cols, n_, transpose ? dense_t_.data() : dense_.data(), n_, x, DType::F32, cols, cpu::BLayout::KN,
                out.data(), cols, /*parallel=*/true);
      std::copy(out.begin(), out.end(), x);
      return;
    }
  }
}

std::vector<float> Rotation::matrix() const {
  if (kind_ == Kind::dense) return dense_;
  std::vector<float> m(static_cast<size_t>(n_ * n_), 0.0f);
  for (int64_t i = 0; i < n_; ++i) m[size_t(i * n_ + i)] = 1.0f;
  apply_columns(m.data(), n_);
  return m;
}

void rotate_linear_input(float* w, int64_t out, int64_t in, const Rotation& r) {
  QF_CHECK(r.size() == in, "rotate_linear_input: a rotation of size ", r.size(), " cannot rotate the ", in,
           " input channels of a [", out, ", ", in, "] weight");
  r.apply_rows(w, out);
}

void rotate_linear_output(float* w, int64_t out, int64_t in, const Rotation& r, float* bias) {
  QF_CHECK(r.size() == out, "rotate_linear_output: a rotation of size ", r.size(), " cannot rotate the ", out,
           " output channels of a [", out, ", ", in, "] weight");
  r.apply_columns(w, in);
  if (bias) r.apply(bias);
}

}  // namespace qf
