// cpu::rope_cos_sin + rope_apply: the rotate_half rotation, checked against the formula in
// double, plus the properties RoPE exists for. (Frequencies per rope_scaling kind are the
// runtime's, tested in tests/runtime/test_rope_frequencies.cpp.)
#include <gtest/gtest.h>

#include <cmath>

#include "backends/cpu/rope.h"
#include "cpu/cpu_test_util.h"

namespace qf::cpu {
namespace {

using cpu_test::random_floats;

std::vector<double> standard_inv_freq(int64_t head_dim, double base) {
  std::vector<double> f(head_dim / 2);
  for (int64_t j = 0; j < head_dim / 2; ++j) f[j] = std::pow(base, -2.0 * j / head_dim);
  return f;
}

void rope(std::vector<float>& x, const std::vector<int32_t>& pos, int64_t n_heads, int64_t head_dim,
          const std::vector<double>& inv_freq, double attention_factor = 1.0) {
  const int64_t h = head_dim / 2, n = pos.size();
  std::vector<float> c(n * h), s(n * h);
  rope_cos_sin(pos.data(), n, inv_freq.data(), h, attention_factor, c.data(), s.data());
  rope_apply(x.data(), n, n_heads, head_dim, n_heads * head_dim, c.data(), s.data());
}

TEST(CpuRope, MatchesRotateHalfFormula) {
  const int64_t n_heads = 3, head_dim = 64, h = 32;
  const std::vector<int32_t> pos = {0, 1, 7, 4095, 131071};
  auto x = random_floats(pos.size() * n_heads * head_dim, 1);
  auto orig = x;
  const auto inv_freq = standard_inv_freq(head_dim, 500000.0);
  rope(x, pos, n_heads, head_dim, inv_freq, 1.25);
  for (size_t i = 0; i < pos.size(); ++i)
    for (int64_t hd = 0; hd < n_heads; ++hd)
      for (int64_t j = 0; j < h; ++j) {
        const size_t base = (i * n_heads + hd) * head_dim;
        const double a = double(pos[i]) * inv_freq[j];
        const double c = std::cos(a) * 1.25, s = std::sin(a) * 1.25;
        const double lo = orig[base + j], hi = orig[base + j + h];
        const double e_lo = lo * c - hi * s, e_hi = hi * c + lo * s;
        const double tol = 4 * std::ldexp(std::abs(lo) + std::abs(hi), -24) * 1.25;
        ASSERT_NEAR(x[base + j], e_lo, tol) << "pos " << pos[i] << " j " << j;
        ASSERT_NEAR(x[base + j + h], e_hi, tol) << "pos " << pos[i] << " j " << j;
      }
}

TEST(CpuRope, PositionZeroIsIdentityAndRotationPreservesNorms) {
  const int64_t n_heads = 2, head_dim = 128;
  auto x = random_floats(n_heads * head_dim, 2);
  auto y = x;
  rope(y, {0}, n_heads, head_dim, standard_inv_freq(head_dim, 10000.0));
  EXPECT_EQ(x, y) << "cos 0 = 1, sin 0 = 0: position 0 must not change the vector";

  const std::vector<int32_t> pos = {1, 100, 8191, 100000};
  auto z = random_floats(pos.size() * n_heads * head_dim, 3);
  auto before = z;
  rope(z, pos, n_heads, head_dim, standard_inv_freq(head_dim, 10000.0));
  for (size_t i = 0; i < pos.size() * n_heads; ++i)
    for (int64_t j = 0; j < head_dim / 2; ++j) {
      // Each (j, j + head_dim/2) pair is rotated: its length is unchanged.
      const size_t b = i * head_dim;
      const double n0 = std::hypot(double(before[b + j]), double(before[b + j + head_dim / 2]));
      const double n1 = std::hypot(double(z[b + j]), double(z[b + j + head_dim / 2]));
      ASSERT_NEAR(n1, n0, 1e-6 * (n0 + 1e-3)) << "pair " << j;
    }
}

TEST(CpuRope, ScoresDependOnlyOnRelativePosition) {
  // <rope(q, m), rope(k, n)> is a function of m - n: the reason RoPE is used at all.
  const int64_t head_dim = 64;
  const auto inv_freq = standard_inv_freq(head_dim, 10000.0);
  const auto q = random_floats(head_dim, 4), k = random_floats(head_dim, 5);
  auto score = [&](int32_t m, int32_t n) {
    auto qq = q, kk = k;
    rope(qq, {m}, 1, head_dim, inv_freq);
    rope(kk, {n}, 1, head_dim, inv_freq);
    double s = 0;
    for (int64_t i = 0; i < head_dim; ++i) s += double(qq[i]) * kk[i];
    return s;
  };
  const double s_ref = score(10, 3);
  EXPECT_NEAR(score(1007, 1000), s_ref, 1e-4);
  EXPECT_NEAR(score(50007, 50000), s_ref, 1e-4);
  EXPECT_GT(std::abs(score(10, 9) - s_ref), 1e-3) << "a different distance must give another score";
}

}  // namespace
}  // namespace qf::cpu
