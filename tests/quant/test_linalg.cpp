#include "quant/linalg.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "quant_test_util.h"

namespace qf {
namespace {

using quant_test::matmul;

std::vector<double> random_matrix(int64_t m, int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd;
  std::vector<double> a(static_cast<size_t>(m * n));
  for (auto& x : a) x = nd(rng);
  return a;
}

// A symmetric positive definite matrix B B^T + n I.
std::vector<double> random_spd(int64_t n, uint64_t seed) {
  const std::vector<double> b = random_matrix(n, n, seed);
  std::vector<double> a(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = i == j ? double(n) : 0.0;
      for (int64_t k = 0; k < n; ++k) s += b[size_t(i * n + k)] * b[size_t(j * n + k)];
      a[size_t(i * n + j)] = s;
    }
  return a;
}

std::vector<double> transpose(const std::vector<double>& a, int64_t n) {
  std::vector<double> t(a.size());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) t[size_t(j * n + i)] = a[size_t(i * n + j)];
  return t;
}

double max_abs_identity_error(const std::vector<double>& a, int64_t n) {
  double e = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) e = std::max(e, std::abs(a[size_t(i * n + j)] - (i == j ? 1.0 : 0.0)));
  return e;
}

// Sizes around the 64-wide blocks and 4 x 8 register tiles of linalg.cpp.
const int64_t kSizes[] = {1, 3, 8, 63, 64, 65, 130, 257};

TEST(QuantLinalg, DgemmAddMatchesNaiveProduct) {
  for (auto [m, n, k] : {std::tuple{1, 1, 1}, {5, 7, 3}, {67, 130, 300}, {128, 64, 513}}) {
    const std::vector<double> a = random_matrix(m, k, 1), b = random_matrix(k, n, 2), c0 = random_matrix(m, n, 3);
    std::vector<double> c = c0;
    dgemm_add(m, n, k, -0.5, a.data(), k, b.data(), n, c.data(), n);
    const std::vector<double> ab = matmul(a.data(), b.data(), m, k, n);
    for (int64_t i = 0; i < m * n; ++i) ASSERT_NEAR(c[size_t(i)], c0[size_t(i)] - 0.5 * ab[size_t(i)], 1e-11 * k) << i;
  }
}

TEST(QuantLinalg, DgemmAddLowerOnlyUpdatesEveryLowerElement) {
  const int64_t n = 200, k = 70;
  const std::vector<double> a = random_matrix(n, k, 4), b = random_matrix(k, n, 5);
  std::vector<double> c(static_cast<size_t>(n * n), 0.0);
  dgemm_add(n, n, k, 1.0, a.data(), k, b.data(), n, c.data(), n, /*lower_only=*/true);
  const std::vector<double> ab = matmul(a.data(), b.data(), n, k, n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j <= i; ++j) ASSERT_NEAR(c[size_t(i * n + j)], ab[size_t(i * n + j)], 1e-11 * k) << i << "," << j;
}

TEST(QuantLinalg, CholeskyReconstructsTheMatrix) {
  for (int64_t n : kSizes) {
    const std::vector<double> a = random_spd(n, 10 + n);
    std::vector<double> l = a;
    cholesky_lower(l.data(), n, "test matrix");
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_GT(l[size_t(i * n + i)], 0);
      for (int64_t j = i + 1; j < n; ++j) ASSERT_EQ(l[size_t(i * n + j)], 0.0) << "upper triangle not cleared";
    }
    const std::vector<double> llt = matmul(l.data(), transpose(l, n).data(), n, n, n);
    for (int64_t i = 0; i < n * n; ++i) ASSERT_NEAR(llt[size_t(i)], a[size_t(i)], 1e-12 * 4 * n) << "n=" << n;
  }
}

TEST(QuantLinalg, CholeskyRejectsAnIndefiniteMatrixNamingIt) {
  const int64_t n = 70;
  std::vector<double> a = random_spd(n, 3);
  a[size_t(66 * n + 66)] = -1.0;  // a negative diagonal entry: not positive definite
  try {
    cholesky_lower(a.data(), n, "the Hessian of blk.0.attn_q");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the Hessian of blk.0.attn_q"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("positive definite"), std::string::npos) << e.what();
  }
}

TEST(QuantLinalg, LowerTriangularInverse) {
  for (int64_t n : kSizes) {
    std::vector<double> l = random_spd(n, 20 + n);
    cholesky_lower(l.data(), n, "m");
    std::vector<double> x = l;
    invert_lower_triangular(x.data(), n);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i + 1; j < n; ++j) ASSERT_EQ(x[size_t(i * n + j)], 0.0);
    EXPECT_LT(max_abs_identity_error(matmul(l.data(), x.data(), n, n, n), n), 1e-12 * n) << "n=" << n;
  }
}

TEST(QuantLinalg, InverseCholeskyUpperFactorsTheInverse) {
  for (int64_t n : kSizes) {
    const std::vector<double> a = random_spd(n, 30 + n);
    const std::vector<double> u = inverse_cholesky_upper(a.data(), n, "m");
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_GT(u[size_t(i * n + i)], 0) << "diagonal must be positive";
      for (int64_t j = 0; j < i; ++j) ASSERT_EQ(u[size_t(i * n + j)], 0.0) << "not upper triangular";
    }
    // U^T U = A^{-1}  <=>  U^T U A = I.
    const std::vector<double> utu = matmul(transpose(u, n).data(), u.data(), n, n, n);
    EXPECT_LT(max_abs_identity_error(matmul(utu.data(), a.data(), n, n, n), n), 1e-11 * n) << "n=" << n;
  }
}

TEST(QuantLinalg, HouseholderQr) {
  for (int64_t n : kSizes) {
    std::vector<double> a = random_matrix(n, n, 40 + n);
    if (n > 3) {  // a zero column below the diagonal and a negative pivot exercise both sign paths
      for (int64_t i = 1; i < n; ++i) a[size_t(i * n + 0)] = 0;
      a[0] = -2.0;
    }
    std::vector<double> q(a.size()), r(a.size());
    householder_qr(a.data(), n, q.data(), r.data());
    EXPECT_LT(max_abs_identity_error(matmul(transpose(q, n).data(), q.data(), n, n, n), n), 1e-13 * n) << "n=" << n;
    const std::vector<double> qr = matmul(q.data(), r.data(), n, n, n);
    for (int64_t i = 0; i < n * n; ++i) ASSERT_NEAR(qr[size_t(i)], a[size_t(i)], 1e-12 * n) << "n=" << n;
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_GE(r[size_t(i * n + i)], 0.0) << "R's diagonal must be non-negative";
      for (int64_t j = 0; j < i; ++j) ASSERT_EQ(r[size_t(i * n + j)], 0.0);
    }
  }
}

}  // namespace
}  // namespace qf
