// cpu::gemm / cpu::linear against a double-precision product written here.
#include <gtest/gtest.h>

#include <cmath>

#include "backends/cpu/gemm.h"
#include "core/error.h"
#include "cpu/cpu_test_util.h"

namespace qf::cpu {
namespace {

using cpu_test::random_floats;

// |y - exact| <= K * 2^-24 * sum_k |x_k w_k|: the bound of a K-term FP32 sum, each step
// rounded once (an fma rounds the product and the addition together), doubled for margin.
void expect_close_to_exact(const std::vector<float>& y, const std::vector<double>& exact,
                           const std::vector<double>& abs_sum, int64_t K, const char* what) {
  ASSERT_EQ(y.size(), exact.size());
  const double u = std::ldexp(1.0, -24);
  for (size_t i = 0; i < y.size(); ++i) {
    const double bound = 2.0 * double(std::max<int64_t>(K, 1)) * u * abs_sum[i] + 1e-30;
    ASSERT_LE(std::abs(double(y[i]) - exact[i]), bound) << what << " element " << i << " K=" << K;
  }
}

struct Case { int64_t M, N, K; };
const Case kCases[] = {{1, 1, 1},   {1, 17, 33},   {3, 16, 16},   {5, 65, 257},
                       {7, 130, 300}, {13, 64, 512}, {200, 37, 70}, {193, 100, 9}};

TEST(CpuGemm, LinearF32MatchesDoubleReference) {
  for (const Case& c : kCases) {
    auto x = random_floats(c.M * c.K, 1), w = random_floats(c.N * c.K, 2), b = random_floats(c.N, 3);
    std::vector<float> y(c.M * c.N);
    linear(x.data(), c.M, c.K, w.data(), DType::F32, c.N, b.data(), y.data());
    std::vector<double> exact(y.size()), abs_sum(y.size());
    for (int64_t m = 0; m < c.M; ++m)
      for (int64_t n = 0; n < c.N; ++n) {
        double s = 0, a = 0;
        for (int64_t k = 0; k < c.K; ++k) {
          s += double(x[m * c.K + k]) * w[n * c.K + k];
          a += std::abs(double(x[m * c.K + k]) * w[n * c.K + k]);
        }
        exact[m * c.N + n] = s + b[n];
        abs_sum[m * c.N + n] = a + std::abs(b[n]);
      }
    expect_close_to_exact(y, exact, abs_sum, c.K + 1, "F32");
  }
}

TEST(CpuGemm, LinearBF16AndF16WeightsAreWidenedExactly) {
  std::mt19937 rng(7);
  for (const Case& c : kCases) {
    auto x = random_floats(c.M * c.K, 4), wf = random_floats(c.N * c.K, 5);
    std::vector<uint16_t> wb(wf.size()), wh(wf.size());
    std::vector<double> vb(wf.size()), vh(wf.size());
    for (size_t i = 0; i < wf.size(); ++i) {
      wb[i] = cpu_test::bf16_bits(wf[i]);
      vb[i] = cpu_test::bf16_value(wb[i]);
      const auto h = cpu_test::random_f16(rng);
      wh[i] = h.bits;
      vh[i] = h.value;
    }
    for (int half = 0; half < 2; ++half) {
      const auto& bits = half ? wh : wb;
      const auto& val = half ? vh : vb;
      std::vector<float> y(c.M * c.N);
      linear(x.data(), c.M, c.K, bits.data(), half ? DType::F16 : DType::BF16, c.N, nullptr, y.data());
      std::vector<double> exact(y.size()), abs_sum(y.size());
      for (int64_t m = 0; m < c.M; ++m)
        for (int64_t n = 0; n < c.N; ++n)
          for (int64_t k = 0; k < c.K; ++k) {
            exact[m * c.N + n] += double(x[m * c.K + k]) * val[n * c.K + k];
            abs_sum[m * c.N + n] += std::abs(double(x[m * c.K + k]) * val[n * c.K + k]);
          }
      expect_close_to_exact(y, exact, abs_sum, c.K, half ? "F16" : "BF16");
    }
  }
}

TEST(CpuGemm, KNLayoutAndLeadingDimensions) {
  // C = A · B with B [K, N] inside a wider buffer, A and C with padded rows.
  const int64_t M = 9, N = 21, K = 300, lda = K + 3, ldb = N + 5, ldc = N + 2;
  auto A = random_floats(M * lda, 8), B = random_floats(K * ldb, 9);
  std::vector<float> C(M * ldc, 123.0f);
  gemm(M, N, K, A.data(), lda, B.data(), DType::F32, ldb, BLayout::KN, C.data(), ldc, true);
  std::vector<float> y;
  std::vector<double> exact, abs_sum;
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      double s = 0, a = 0;
      for (int64_t k = 0; k < K; ++k) {
        s += double(A[m * lda + k]) * B[k * ldb + n];
        a += std::abs(double(A[m * lda + k]) * B[k * ldb + n]);
      }
      y.push_back(C[m * ldc + n]);
      exact.push_back(s);
      abs_sum.push_back(a);
    }
    for (int64_t n = N; n < ldc; ++n) EXPECT_EQ(C[m * ldc + n], 123.0f) << "wrote past the row end";
  }
  expect_close_to_exact(y, exact, abs_sum, K, "KN");
}

TEST(CpuGemm, RowResultDoesNotDependOnBatchOrThreads) {
  // The promise of gemm.h: a row of C is a function of its row of A and of B alone, bit for bit.
  const int64_t M = 211, N = 150, K = 777;
  auto x = random_floats(M * K, 10), w = random_floats(N * K, 11);
  std::vector<float> all(M * N), one(N);
  linear(x.data(), M, K, w.data(), DType::F32, N, nullptr, all.data());
  for (int64_t m : {0L, 5L, 191L, 192L, 210L}) {
    linear(x.data() + m * K, 1, K, w.data(), DType::F32, N, nullptr, one.data());
    for (int64_t n = 0; n < N; ++n) ASSERT_EQ(one[n], all[m * N + n]) << "row " << m << " col " << n;
    std::vector<float> serial(N);
    gemm(1, N, K, x.data() + m * K, K, w.data(), DType::F32, K, BLayout::NK, serial.data(), N, false);
    for (int64_t n = 0; n < N; ++n) ASSERT_EQ(serial[n], all[m * N + n]);
  }
}

TEST(CpuGemm, EmptySumIsZeroAndBadDtypeThrows) {
  std::vector<float> y(6, 5.0f);
  gemm(2, 3, 0, nullptr, 0, nullptr, DType::F32, 0, BLayout::NK, y.data(), 3, true);
  for (float v : y) EXPECT_EQ(v, 0.0f);
  std::vector<int32_t> w(4);
  std::vector<float> x(2);
  EXPECT_THROW(linear(x.data(), 1, 2, w.data(), DType::I32, 2, nullptr, y.data()), Error);
}

}  // namespace
}  // namespace qf::cpu
