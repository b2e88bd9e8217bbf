// cpu::attention against softmax(Q K^T * scale) V computed naively in double, with the causal
// mask and grouped-query heads, over a cache that already holds earlier tokens.
#include <gtest/gtest.h>

#include <cmath>

#include "backends/cpu/attention.h"
#include "core/error.h"
#include "cpu/cpu_test_util.h"

namespace qf::cpu {
namespace {

using cpu_test::random_floats;

struct Setup {
  int64_t n_heads, n_kv_heads, head_dim, capacity, n_tokens;
  int32_t first_pos;  // the cache already holds positions 0..first_pos-1
};

// Reference: for query i (position p) and head j, KV head j / group, over t = 0..p.
std::vector<double> naive_attention(const Setup& s, const std::vector<float>& q, const std::vector<int32_t>& pos,
                                    const std::vector<float>& kc, const std::vector<float>& vc, double scale) {
  const int64_t group = s.n_heads / s.n_kv_heads, d = s.head_dim, row = s.n_heads * d;
  std::vector<double> out(s.n_tokens * row);
  for (int64_t i = 0; i < s.n_tokens; ++i)
    for (int64_t j = 0; j < s.n_heads; ++j) {
      const int64_t kvh = j / group;
      std::vector<double> sc(pos[i] + 1);
      double mx = -1e300;
      for (int64_t t = 0; t <= pos[i]; ++t) {
        double dot = 0;
        for (int64_t x = 0; x < d; ++x) dot += double(q[i * row + j * d + x]) * kc[(kvh * s.capacity + t) * d + x];
        sc[t] = dot * scale;
        mx = std::max(mx, sc[t]);
      }
      double sum = 0;
      for (auto& v : sc) sum += (v = std::exp(v - mx));
      for (int64_t x = 0; x < d; ++x) {
        double o = 0;
        for (int64_t t = 0; t <= pos[i]; ++t) o += sc[t] / sum * vc[(kvh * s.capacity + t) * d + x];
        out[i * row + j * d + x] = o;
      }
    }
  return out;
}

void check(const Setup& s, uint32_t seed) {
  const int64_t row = s.n_heads * s.head_dim;
  auto q = random_floats(s.n_tokens * row, seed, 2.0f);
  auto kc = random_floats(s.n_kv_heads * s.capacity * s.head_dim, seed + 1, 2.0f);
  auto vc = random_floats(s.n_kv_heads * s.capacity * s.head_dim, seed + 2);
  std::vector<int32_t> pos(s.n_tokens);
  for (int64_t i = 0; i < s.n_tokens; ++i) pos[i] = s.first_pos + int32_t(i);
  const float scale = 1.0f / std::sqrt(float(s.head_dim));
  std::vector<float> out(s.n_tokens * row, NAN);
  attention(q.data(), row, s.n_tokens, pos.data(), kc.data(), vc.data(), s.capacity * s.head_dim, s.n_heads,
            s.n_kv_heads, s.head_dim, scale, out.data(), row);
  const auto ref = naive_attention(s, q, pos, kc, vc, scale);
  // The output is a convex combination of values of magnitude ~1: FP32 scores (sums of
  // head_dim products) and probabilities carry ~1e-6 relative error each.
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 2e-5) << "element " << i;

  // Causality: changing keys/values at positions after the last query changes nothing.
  for (int64_t h = 0; h < s.n_kv_heads; ++h)
    for (int64_t t = s.first_pos + s.n_tokens; t < s.capacity; ++t)
      for (int64_t x = 0; x < s.head_dim; ++x) {
        kc[(h * s.capacity + t) * s.head_dim + x] = 1e6f;
        vc[(h * s.capacity + t) * s.head_dim + x] = NAN;
      }
  std::vector<float> out2(out.size());
  attention(q.data(), row, s.n_tokens, pos.data(), kc.data(), vc.data(), s.capacity * s.head_dim, s.n_heads,
            s.n_kv_heads, s.head_dim, scale, out2.data(), row);
  EXPECT_EQ(out, out2) << "a query must not see later positions";

  // A query alone gives bit-identical output to the same query inside the block.
  for (int64_t i : {int64_t(0), s.n_tokens / 2, s.n_tokens - 1}) {
    std::vector<float> one(row);
    attention(q.data() + i * row, row, 1, pos.data() + i, kc.data(), vc.data(), s.capacity * s.head_dim, s.n_heads,
              s.n_kv_heads, s.head_dim, scale, one.data(), row);
    for (int64_t x = 0; x < row; ++x) ASSERT_EQ(one[x], out[i * row + x]) << "query " << i;
  }
}

TEST(CpuAttention, GroupedQueryCausalMatchesNaive) {
  check({/*heads*/ 6, /*kv*/ 2, /*dim*/ 16, /*capacity*/ 80, /*tokens*/ 37, /*first*/ 5}, 1);
}
TEST(CpuAttention, DefaultModelShape) { check({9, 3, 64, 300, 40, 200}, 2); }
TEST(CpuAttention, MultiHeadNoGrouping) { check({4, 4, 8, 20, 20, 0}, 3); }
TEST(CpuAttention, SingleDecodeToken) { check({8, 1, 128, 600, 1, 513}, 4); }

TEST(CpuAttention, RejectsUnevenGroupsAndPositionsOutsideTheCache) {
  std::vector<float> q(3 * 4), kc(2 * 4 * 4), vc(kc.size()), out(q.size());
  int32_t pos = 0;
  EXPECT_THROW(attention(q.data(), 12, 1, &pos, kc.data(), vc.data(), 16, 3, 2, 4, 1.0f, out.data(), 12), Error);
  pos = 4;  // capacity 16 / 4 = 4 positions: 0..3
  EXPECT_THROW(attention(q.data(), 12, 1, &pos, kc.data(), vc.data(), 16, 3, 1, 4, 1.0f, out.data(), 12), Error);
}

}  // namespace
}  // namespace qf::cpu
