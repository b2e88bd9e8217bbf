// FireQ's RoPE-aware scaling (quant/rope_scale.h) on hand-made statistics and random vectors:
// the pre-RoPE scale is equal within each RoPE pair and keeps every q.k after RoPE; the
// post-RoPE scale picks the top_k channels per KV head and their partners, resets their
// pre-RoPE scale, and keeps q.k too. The whole model is checked in test_calibration.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backends/cpu/rope.h"
#include "core/error.h"
#include "quant_test_util.h"
#include "quant/rope_scale.h"

namespace qf {
namespace {

// Keys with a few outlier channels per head: k[t, h*d + c] ~ N(0, 1) * (1 + 9 [c is an outlier]).
std::vector<float> outlier_keys(int64_t tokens, int64_t kv_heads, int64_t d, uint64_t seed) {
  std::vector<float> k = quant_test::gaussian(tokens * kv_heads * d, seed);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t h = 0; h < kv_heads; ++h)
      for (int64_t c : {int64_t(3) + h, d / 2 + 5, d - 1}) k[size_t((t * kv_heads + h) * d + c)] *= 10.0f;
  return k;
}

std::vector<float> rope_tables(int64_t tokens, int64_t d, std::vector<float>& sin) {
  std::vector<int32_t> pos(static_cast<size_t>(tokens));
  for (int64_t i = 0; i < tokens; ++i) pos[size_t(i)] = int32_t(7 * i + 3);
  std::vector<double> inv(static_cast<size_t>(d / 2));
  for (int64_t j = 0; j < d / 2; ++j) inv[size_t(j)] = std::pow(10000.0, -2.0 * double(j) / double(d));
  std::vector<float> cos(size_t(tokens * d / 2));
  sin.resize(cos.size());
  cpu::rope_cos_sin(pos.data(), tokens, inv.data(), d / 2, 1.0, cos.data(), sin.data());
  return cos;
}

TEST(QuantRopeScale, StatisticsAreThePairNormsBeforeAndTheAbsmaxAfterRope) {
  const int64_t T = 40, kvh = 2, d = 16, kv = kvh * d;
  const std::vector<float> k = outlier_keys(T, kvh, d, 1);
  std::vector<float> sin, rot = k;
  const std::vector<float> cos = rope_tables(T, d, sin);
  cpu::rope_apply(rot.data(), T, kvh, d, kv, cos.data(), sin.data());
  KeyStatistics st(kvh, d);
  st.add(k.data(), rot.data(), 25, kv);
  st.add(k.data() + 25 * kv, rot.data() + 25 * kv, T - 25, kv);
  EXPECT_EQ(st.tokens, T);
  for (int64_t h = 0; h < kvh; ++h)
    for (int64_t j = 0; j < d / 2; ++j) {
      double m = 0, m_rot = 0;
      for (int64_t t = 0; t < T; ++t) {
        m = std::max(m, std::hypot(double(k[size_t(t * kv + h * d + j)]), double(k[size_t(t * kv + h * d + j + d / 2)])));
        m_rot = std::max(m_rot, std::hypot(double(rot[size_t(t * kv + h * d + j)]),
                                           double(rot[size_t(t * kv + h * d + j + d / 2)])));
      }
      EXPECT_NEAR(st.pair_norm_max[size_t(h * d / 2 + j)], m, 1e-5 * m);
      EXPECT_NEAR(m_rot, m, 1e-5 * m) << "RoPE keeps each pair's norm";
    }
  for (int64_t i = 0; i < kv; ++i) {
    float m = 0;
    for (int64_t t = 0; t < T; ++t) m = std::max(m, std::fabs(rot[size_t(t * kv + i)]));
    EXPECT_EQ(st.rotated_absmax[size_t(i)], m);
  }
}

TEST(QuantRopeScale, ScalesArePairEqualAndPickTheTopChannels) {
  const int64_t kvh = 2, d = 8, half = 4;
  KeyStatistics st(kvh, d);
  st.pair_norm_max = {1, 2, 4, 0.5f, 8, 0.25f, 4, 0};  // the last pair never fired: scale 1
  st.rotated_absmax = {1, 9, 1, 1, 1, 1, 7, 1,     // head 0: channels 1 and 6 (partners 5, 2)
                       3, 1, 1, 1, 1, 1, 1, 2};    // head 1: channel 8 (partner 12) and 15 (partner 11)
  RopeScaleTransform t;
  t.top_k = 2;
  {
    RopeScaleTransform pre_only = t;
    pre_only.post = false;
    const RopeScales s = rope_aware_scales(st, pre_only);
    EXPECT_TRUE(s.post.empty());
    ASSERT_EQ(s.pre.size(), size_t(kvh * d));
    for (int64_t h = 0; h < kvh; ++h)
      for (int64_t j = 0; j < half; ++j) {
        EXPECT_EQ(s.pre[size_t(h * d + j)], s.pre[size_t(h * d + j + half)]) << "pair " << j;
        const float m = st.pair_norm_max[size_t(h * half + j)];
        EXPECT_EQ(s.pre[size_t(h * d + j)], m > 0 ? 1.0f / m : 1.0f);
      }
  }
  const RopeScales s = rope_aware_scales(st, t);
  ASSERT_EQ(s.post.size(), size_t(kvh * d));
  const std::vector<float> post = {1, 1.0f / 9, 1, 1, 1, 1, 1.0f / 7, 1, 1.0f / 3, 1, 1, 1, 1, 1, 1, 0.5f};
  // Partners keep their own max (1 here) as the divisor: beta / 1 = 1, so only the top
  // channels move in this example; the partners' pre-RoPE scale is reset all the same.
  for (size_t i = 0; i < post.size(); ++i) EXPECT_FLOAT_EQ(s.post[i], post[i]) << i;
  for (int64_t i : {1, 5, 2, 6, 8, 12, 11, 15}) EXPECT_EQ(s.pre[size_t(i)], 1.0f) << i;
  EXPECT_EQ(s.pre[0], 1.0f);          // pair (0, 4) of head 0: 1 / 1
  EXPECT_EQ(s.pre[3], 2.0f);          // pair (3, 7): 1 / 0.5
  EXPECT_EQ(s.pre[7], 2.0f);
  EXPECT_EQ(s.pre[9], 4.0f);          // head 1 pair (9, 13): 1 / 0.25
  EXPECT_EQ(s.pre[13], 4.0f);
  EXPECT_EQ(s.pre[10], 0.25f);        // head 1 pair (10, 14): 1 / 4
  // Post only: the chosen channels go to the level of the head's other pairs (beta / alpha x
  // their largest max norm): head 0's other pairs (0, 4) and (3, 7) peak at 1, head 1's (9, 13)
  // and (10, 14) at 4.
  RopeScaleTransform post_only = t;
  post_only.pre = false;
  const RopeScales p = rope_aware_scales(st, post_only);
  EXPECT_TRUE(p.pre.empty());
  const std::vector<float> post_level = {1, 1.0f / 9, 1, 1, 1, 1, 1.0f / 7, 1, 4.0f / 3, 1, 1, 4, 4, 1, 1, 2};
  ASSERT_EQ(p.post.size(), post_level.size());
  for (size_t i = 0; i < post_level.size(); ++i) EXPECT_FLOAT_EQ(p.post[i], post_level[i]) << i;
  RopeScaleTransform bad = t;
  bad.top_k = 0;
  EXPECT_THROW(rope_aware_scales(st, bad), Error);
}

// q.k after RoPE is unchanged by merging the pre scale into q/k and applying the post scale,
// for every query head of the group (GQA 6 heads over 2 KV heads).
TEST(QuantRopeScale, MergedAndPostScalesKeepEveryScore) {
  const int64_t T = 12, heads = 6, kvh = 2, d = 16, hidden = 20, group = heads / kvh;
  const int64_t qd = heads * d, kv = kvh * d;
  const std::vector<float> wq0 = quant_test::gaussian(qd * hidden, 3), wk0 = quant_test::gaussian(kv * hidden, 4);
  const std::vector<float> x = quant_test::gaussian(T * hidden, 5);
  std::vector<float> sin;
  const std::vector<float> cos = rope_tables(T, d, sin);
  auto project = [&](const std::vector<float>& w, int64_t rows) {
    std::vector<float> y(size_t(T * rows));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t r = 0; r < rows; ++r) {
        double acc = 0;
        for (int64_t c = 0; c < hidden; ++c) acc += double(x[size_t(t * hidden + c)]) * w[size_t(r * hidden + c)];
        y[size_t(t * rows + r)] = float(acc);
      }
    return y;
  };
  // Statistics from the keys themselves, with outlier-ish channels from the random weights.
  std::vector<float> k0 = project(wk0, kv), q0 = project(wq0, qd);
  std::vector<float> k0r = k0;
  cpu::rope_apply(k0r.data(), T, kvh, d, kv, cos.data(), sin.data());
  KeyStatistics st(kvh, d);
  st.add(k0.data(), k0r.data(), T, kv);
  RopeScaleTransform tr;
  const RopeScales s = rope_aware_scales(st, tr);
  std::vector<float> wq = wq0, wk = wk0;
  merge_pre_rope_scale(wq.data(), wk.data(), hidden, s.pre, heads, kvh, d);
  std::vector<float> q = project(wq, qd), k = project(wk, kv);
  cpu::rope_apply(q0.data(), T, heads, d, qd, cos.data(), sin.data());
  cpu::rope_apply(k0.data(), T, kvh, d, kv, cos.data(), sin.data());
  cpu::rope_apply(q.data(), T, heads, d, qd, cos.data(), sin.data());
  cpu::rope_apply(k.data(), T, kvh, d, kv, cos.data(), sin.data());
  apply_post_rope_scale(q.data(), qd, k.data(), kv, T, s.post.data(), heads, kvh, d);
  double changed = 0;
  for (size_t i = 0; i < k.size(); ++i) changed = std::max(changed, double(std::fabs(k[i] - k0[i])));
  EXPECT_GT(changed, 0.1) << "the keys must actually change";
  // Each pre-scaled pair now has max norm alpha = 1 (up to the rounding of the merged product).
  for (int64_t i = 0; i < kv; ++i) {
    float m = 0;
    for (int64_t t = 0; t < T; ++t) m = std::max(m, std::fabs(k[size_t(t * kv + i)]));
    EXPECT_LE(m, 1.0f + 1e-4f) << "channel " << i;
  }
  for (int64_t t = 0; t < T; ++t)
    for (int64_t u = 0; u < T; ++u)
      for (int64_t qh = 0; qh < heads; ++qh) {
        double a = 0, b = 0, mag = 0;
        for (int64_t c = 0; c < d; ++c) {
          const int64_t qi = t * qd + qh * d + c, ki = u * kv + (qh / group) * d + c;
          a += double(q[size_t(qi)]) * k[size_t(ki)];
          b += double(q0[size_t(qi)]) * k0[size_t(ki)];
          mag += std::fabs(double(q0[size_t(qi)]) * k0[size_t(ki)]);
        }
        // F32 rounding of the scaled weights and products (a few ulps of each term): 1e-5 of the
        // sum of |terms|; a scale on one side only moves scores by O(1) of them.
        ASSERT_NEAR(a, b, 1e-5 * mag + 1e-6) << "token " << t << " key " << u << " head " << qh;
      }
}

}  // namespace
}  // namespace qf
