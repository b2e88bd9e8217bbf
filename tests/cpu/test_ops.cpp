// cpu::embedding, rmsnorm, add_rmsnorm, silu_mul against double-precision formulas written here.
#include <gtest/gtest.h>

#include <cmath>

#include "backends/cpu/ops.h"
#include "core/error.h"
#include "cpu/cpu_test_util.h"

namespace qf::cpu {
namespace {

using cpu_test::random_floats;

std::vector<double> rmsnorm_exact(const float* x, int64_t dim, const float* w, double eps) {
  double ss = 0;
  for (int64_t i = 0; i < dim; ++i) ss += double(x[i]) * x[i];
  const double inv = 1.0 / std::sqrt(ss / dim + eps);
  std::vector<double> y(dim);
  for (int64_t i = 0; i < dim; ++i) y[i] = x[i] * inv * w[i];
  return y;
}

TEST(CpuOps, RmsNormMatchesFormula) {
  for (int64_t dim : {1L, 7L, 576L, 4099L}) {
    const int64_t rows = 13;
    auto x = random_floats(rows * dim, 1, 3.0f), w = random_floats(dim, 2);
    std::vector<float> y(rows * dim);
    const float eps = 1e-5f;
    rmsnorm(x.data(), rows, dim, w.data(), eps, y.data());
    for (int64_t r = 0; r < rows; ++r) {
      auto e = rmsnorm_exact(x.data() + r * dim, dim, w.data(), eps);
      // Three FP32 roundings (inverse root, two products): 4 ulp of the result's magnitude.
      for (int64_t i = 0; i < dim; ++i)
        ASSERT_NEAR(y[r * dim + i], e[i], 4 * std::ldexp(std::abs(e[i]), -23) + 1e-30) << "dim " << dim;
    }
  }
}

TEST(CpuOps, RmsNormEpsilonMattersForSmallRows) {
  // A zero row gives 0, not NaN; a tiny row is damped by eps as the formula says.
  const int64_t dim = 8;
  std::vector<float> x(dim, 0.0f), w(dim, 1.0f), y(dim);
  rmsnorm(x.data(), 1, dim, w.data(), 1e-5f, y.data());
  for (float v : y) EXPECT_EQ(v, 0.0f);
  std::fill(x.begin(), x.end(), 1e-3f);
  rmsnorm(x.data(), 1, dim, w.data(), 1e-5f, y.data());
  EXPECT_NEAR(y[0], 1e-3 / std::sqrt(1e-6 + 1e-5), 1e-6);
}

TEST(CpuOps, AddRmsNormUpdatesResidualAndNormalises) {
  const int64_t rows = 5, dim = 96;
  auto res = random_floats(rows * dim, 3), delta = random_floats(rows * dim, 4), w = random_floats(dim, 5);
  auto res_before = res;
  std::vector<float> y(rows * dim);
  add_rmsnorm(res.data(), delta.data(), rows, dim, w.data(), 1e-6f, y.data());
  for (int64_t i = 0; i < rows * dim; ++i) ASSERT_EQ(res[i], res_before[i] + delta[i]);
  std::vector<float> y2(rows * dim);
  rmsnorm(res.data(), rows, dim, w.data(), 1e-6f, y2.data());
  EXPECT_EQ(y, y2) << "the fused form must equal add then rmsnorm";
}

TEST(CpuOps, SiluMul) {
  auto g = random_floats(1000, 6, 4.0f), u = random_floats(1000, 7);
  std::vector<float> out(1000);
  silu_mul(g.data(), u.data(), 1000, out.data());
  for (int i = 0; i < 1000; ++i) {
    const double e = double(g[i]) / (1.0 + std::exp(-double(g[i]))) * u[i];
    ASSERT_NEAR(out[i], e, 8 * std::ldexp(std::abs(e), -24) + 1e-30) << g[i];
  }
  // In place over gate.
  auto g2 = g;
  silu_mul(g2.data(), u.data(), 1000, g2.data());
  EXPECT_EQ(g2, out);
}

TEST(CpuOps, EmbeddingGathersRowsOfEveryDtype) {
  const int64_t vocab = 11, dim = 6;
  auto table = random_floats(vocab * dim, 8);
  std::vector<uint16_t> tb(table.size()), th(table.size());
  std::vector<double> vh(table.size());
  std::mt19937 rng(9);
  for (size_t i = 0; i < table.size(); ++i) {
    tb[i] = cpu_test::bf16_bits(table[i]);
    auto h = cpu_test::random_f16(rng);
    th[i] = h.bits;
    vh[i] = h.value;
  }
  const std::vector<int32_t> tokens = {3, 0, 10, 3};
  std::vector<float> out(tokens.size() * dim);
  embedding(table.data(), DType::F32, vocab, dim, tokens.data(), tokens.size(), out.data());
  for (size_t i = 0; i < tokens.size(); ++i)
    for (int64_t j = 0; j < dim; ++j) ASSERT_EQ(out[i * dim + j], table[tokens[i] * dim + j]);
  embedding(tb.data(), DType::BF16, vocab, dim, tokens.data(), tokens.size(), out.data());
  for (size_t i = 0; i < tokens.size(); ++i)
    for (int64_t j = 0; j < dim; ++j) ASSERT_EQ(out[i * dim + j], cpu_test::bf16_value(tb[tokens[i] * dim + j]));
  embedding(th.data(), DType::F16, vocab, dim, tokens.data(), tokens.size(), out.data());
  for (size_t i = 0; i < tokens.size(); ++i)
    for (int64_t j = 0; j < dim; ++j) ASSERT_EQ(out[i * dim + j], vh[tokens[i] * dim + j]);

  const std::vector<int32_t> bad = {1, 11};
  try {
    embedding(table.data(), DType::F32, vocab, dim, bad.data(), 2, out.data());
    FAIL() << "an out-of-range token id must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token id 11"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace qf::cpu
