#include "quant/smooth.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "backends/cpu/ops.h"
#include "core/error.h"
#include "formats/quantize.h"
#include "quant_test_util.h"

namespace qf {
namespace {

using quant_test::gaussian;
using quant_test::linear_ref;
using quant_test::max_abs;
using quant_test::max_abs_diff;

// Activations [tokens, n] with planted outlier channels (every 16th, x40), as LLM activations
// after a norm have.
std::vector<float> activations_with_outliers(int64_t tokens, int64_t n, uint64_t seed) {
  std::vector<float> x = gaussian(tokens * n, seed);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t j = 3; j < n; j += 16) x[size_t(t * n + j)] *= 40.0f;
  return x;
}

std::vector<float> column_absmax(const std::vector<float>& x, int64_t rows, int64_t cols) {
  std::vector<float> m(static_cast<size_t>(cols), 0.0f);
  accumulate_column_absmax(x.data(), rows, cols, m.data());
  return m;
}

TEST(QuantSmooth, ScalesFollowTheFormulaWithGuards) {
  const float act[] = {8, 0, 2, 1e-20f, 3};
  const float wmax[] = {2, 5, 0, 1, 1e-30f};
  const std::vector<float> s = smoothing_scales(act, wmax, 5, 0.5f);
  EXPECT_FLOAT_EQ(s[0], 2.0f);  // sqrt(8) / sqrt(2)
  EXPECT_EQ(s[1], 1.0f);        // a dead activation channel
  EXPECT_EQ(s[2], 1.0f);        // a zero weight column
  EXPECT_EQ(s[3], 1e-5f);       // 1e-10 clamped up
  EXPECT_EQ(s[4], 1e5f);        // ~1.7e15 clamped down
  const std::vector<float> s75 = smoothing_scales(act, wmax, 1, 0.75f);
  EXPECT_FLOAT_EQ(s75[0], float(std::pow(8.0, 0.75) / std::pow(2.0, 0.25)));
  EXPECT_THROW(smoothing_scales(act, wmax, 5, 1.5f), Error);
  const std::vector<float> grid = default_alpha_grid();
  ASSERT_EQ(grid.size(), 21u);
  EXPECT_EQ(grid.front(), 0.0f);
  EXPECT_EQ(grid.back(), 1.0f);
}

TEST(QuantSmooth, SmoothingFlattensPlantedOutlierChannels) {
  const int64_t tokens = 64, n = 256, out = 128;
  const std::vector<float> x = activations_with_outliers(tokens, n, 1);
  const std::vector<float> w = gaussian(out * n, 2);
  const std::vector<float> act = column_absmax(x, tokens, n), wmax = column_absmax(w, out, n);
  auto max_over_mean = [&](const std::vector<float>& v) {
    double mx = 0, mean = 0;
    for (float a : v) {
      mx = std::max(mx, double(a));
      mean += a / double(v.size());
    }
    return mx / mean;
  };
  auto smoothed_ratio = [&](float alpha) {
    const std::vector<float> s = smoothing_scales(act.data(), wmax.data(), n, alpha);
    std::vector<float> xs = x;
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t j = 0; j < n; ++j) xs[size_t(t * n + j)] /= s[size_t(j)];
    return max_over_mean(column_absmax(xs, tokens, n));
  };
  // alpha = 0.5 leaves each channel's absmax at sqrt(act_j * w_j): the 40x outliers become
  // ~sqrt(40) = 6.3x the others, and the ratio drops by a similar factor (less, as the mean
  // drops too). alpha = 1 divides each channel by its own absmax: perfectly flat, ratio 1.
  const double before = max_over_mean(act), half = smoothed_ratio(0.5f), full = smoothed_ratio(1.0f);
  std::printf("  activation channel absmax, max / mean: %.2f before, %.2f at alpha 0.5, %.2f at alpha 1\n", before, half,
              full);
  EXPECT_GT(before, 10.0);
  EXPECT_LT(half, before / 2.5);
  EXPECT_NEAR(full, 1.0, 1e-6);
}

TEST(QuantSmooth, MergeIntoNormPreservesTheFunction) {
  // q, k and v read the same normed activation: g /= s, and each of their columns *= s.
  const int64_t tokens = 7, n = 192, dq = 96, dkv = 32;
  const std::vector<float> x = activations_with_outliers(tokens, n, 3);
  std::vector<float> g = gaussian(n, 4, 0.2f);
  for (auto& v : g) v += 1.0f;
  std::vector<float> wq = gaussian(dq * n, 5), wk = gaussian(dkv * n, 6), wv = gaussian(dkv * n, 7);
  auto forward = [&](const std::vector<float>& gamma) {
    std::vector<float> y(x.size());
    cpu::rmsnorm(x.data(), tokens, n, gamma.data(), 1e-5f, y.data());
    std::vector<double> all = linear_ref(y, wq, tokens, n, dq);
    for (const auto* w : {&wk, &wv}) {
      const std::vector<double> o = linear_ref(y, *w, tokens, n, dkv);
      all.insert(all.end(), o.begin(), o.end());
    }
    return all;
  };
  const std::vector<double> y = forward(g);
  std::vector<float> wmax(static_cast<size_t>(n), 0.0f);
  for (const auto* w : {&wq, &wk, &wv}) accumulate_column_absmax(w->data(), int64_t(w->size()) / n, n, wmax.data());
  const std::vector<float> act = column_absmax(x, tokens, n);
  const std::vector<float> s = smoothing_scales(act.data(), wmax.data(), n, 0.5f);
  const LinearRef next[] = {{wq.data(), dq, n}, {wk.data(), dkv, n}, {wv.data(), dkv, n}};
  merge_smoothing_into_norm(g.data(), n, s.data(), next);
  EXPECT_LT(max_abs_diff(y, forward(g)), 1e-5 * max_abs(y));
}

TEST(QuantSmooth, MergeUpIntoDownPreservesTheFunction) {
  // SwiGLU: y = W_down (SiLU(W_gate x) * (W_up x)). Scaling up's rows by 1/s scales the product
  // channel-wise by 1/s (it is linear in up), and down's columns *= s undo it.
  const int64_t tokens = 5, d = 64, f = 160;
  const std::vector<float> x = gaussian(tokens * d, 1);
  std::vector<float> gate = gaussian(f * d, 2, 0.3f), up = gaussian(f * d, 3, 0.3f), down = gaussian(d * f, 4);
  std::vector<float> up_bias = gaussian(f, 9);
  auto forward = [&]() {
    const std::vector<double> g = linear_ref(x, gate, tokens, d, f), u = linear_ref(x, up, tokens, d, f);
    std::vector<float> gf(g.begin(), g.end()), uf(u.begin(), u.end()), h(g.size());
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t j = 0; j < f; ++j) uf[size_t(t * f + j)] += up_bias[size_t(j)];
    cpu::silu_mul(gf.data(), uf.data(), int64_t(h.size()), h.data());
    return linear_ref(h, down, tokens, f, d);
  };
  const std::vector<double> y = forward();
  std::vector<float> s = gaussian(f, 5, 0.5f);
  for (auto& v : s) v = std::exp(v);  // positive scales spanning ~ e^{±1.5}
  const LinearRef next[] = {{down.data(), d, f}};
  merge_smoothing_into_linear({up.data(), f, d, up_bias.data()}, s.data(), f, next);
  EXPECT_LT(max_abs_diff(y, forward()), 2e-5 * max_abs(y));
}

TEST(QuantSmooth, MergeVIntoOWithGroupedQueryAttentionPreservesTheFunction) {
  // 6 query heads share 2 kv heads (the default model has 9 and 3). out = W_o concat_h(P_h V_kv(h)),
  // with P_h a random row-stochastic token mixing per head: channels are never mixed.
  const int64_t tokens = 6, d = 48, hd = 8, kv_heads = 2, heads = 6;
  const std::vector<float> x = gaussian(tokens * d, 1);
  std::vector<float> wv = gaussian(kv_heads * hd * d, 2), wo = gaussian(d * heads * hd, 3);
  std::vector<float> p = gaussian(heads * tokens * tokens, 4);
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t t = 0; t < tokens; ++t) {
      double sum = 0;
      for (int64_t u = 0; u < tokens; ++u) sum += (p[size_t((h * tokens + t) * tokens + u)] = std::exp(p[size_t((h * tokens + t) * tokens + u)]));
      for (int64_t u = 0; u < tokens; ++u) p[size_t((h * tokens + t) * tokens + u)] /= float(sum);
    }
  auto forward = [&]() {
    const std::vector<double> v = linear_ref(x, wv, tokens, d, kv_heads * hd);
    std::vector<float> attn(static_cast<size_t>(tokens * heads * hd), 0.0f);
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t t = 0; t < tokens; ++t)
        for (int64_t c = 0; c < hd; ++c) {
          double acc = 0;
          for (int64_t u = 0; u < tokens; ++u)
            acc += p[size_t((h * tokens + t) * tokens + u)] * v[size_t(u * kv_heads * hd + (h / (heads / kv_heads)) * hd + c)];
          attn[size_t(t * heads * hd + h * hd + c)] = float(acc);
        }
    return linear_ref(attn, wo, tokens, heads * hd, d);
  };
  const std::vector<double> y = forward();
  std::vector<float> s = gaussian(kv_heads * hd, 5, 0.5f);
  for (auto& v : s) v = std::exp(v);
  merge_smoothing_into_v_o({wv.data(), kv_heads * hd, d}, {wo.data(), d, heads * hd}, s.data(), hd);
  EXPECT_LT(max_abs_diff(y, forward()), 2e-5 * max_abs(y));
}

TEST(QuantSmooth, AlphaSearchPicksTheBestW8A8Loss) {
  // The callback a recipe would pass: the output error of the smoothed layer with INT8
  // per-token activations and INT8 per-channel weights (formats' quantize as the fake quantizer).
  const int64_t tokens = 64, n = 128, out = 64;
  const std::vector<float> x = activations_with_outliers(tokens, n, 11);
  const std::vector<float> w = gaussian(out * n, 12);
  const std::vector<double> y = linear_ref(x, w, tokens, n, out);
  std::vector<float> seen_alphas_losses;
  auto w8a8_error = [&](const std::vector<float>& s) {
    std::vector<float> xs = x, ws = w;
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t j = 0; j < n; ++j) xs[size_t(t * n + j)] /= s[size_t(j)];
    for (int64_t o = 0; o < out; ++o)
      for (int64_t j = 0; j < n; ++j) ws[size_t(o * n + j)] *= s[size_t(j)];
    const std::vector<float> xq = quant_test::dequantized(quantize(xs.data(), tokens, n, Format::parse("int8:token")));
    const std::vector<float> wq = quant_test::dequantized(quantize(ws.data(), out, n, Format::parse("int8:channel")));
    const std::vector<double> yq = linear_ref(xq, wq, tokens, n, out);
    double e = 0;
    for (size_t i = 0; i < y.size(); ++i) e += (y[i] - yq[i]) * (y[i] - yq[i]);
    seen_alphas_losses.push_back(float(e));
    return e;
  };
  const std::vector<float> act = column_absmax(x, tokens, n), wmax = column_absmax(w, out, n);
  const AlphaChoice c = choose_smoothing_alpha(act.data(), wmax.data(), n, default_alpha_grid(), w8a8_error);
  ASSERT_EQ(seen_alphas_losses.size(), 21u);
  for (float l : seen_alphas_losses) EXPECT_LE(c.loss, double(l) * (1 + 1e-6));
  EXPECT_EQ(c.scales, smoothing_scales(act.data(), wmax.data(), n, c.alpha));
  const double unsmoothed = w8a8_error(std::vector<float>(static_cast<size_t>(n), 1.0f));
  std::printf("  W8A8 output error: %.4g unsmoothed, %.4g at the chosen alpha %.2f\n", unsmoothed, c.loss, c.alpha);
  EXPECT_LT(c.loss, 0.5 * unsmoothed);
  EXPECT_GT(c.alpha, 0.0f);
  EXPECT_LT(c.alpha, 1.0f);
}

TEST(QuantSmooth, MismatchedShapesAreReported) {
  std::vector<float> g(16, 1.0f), w(8 * 12), s(16, 1.0f);
  const LinearRef next[] = {{w.data(), 8, 12}};
  try {
    merge_smoothing_into_norm(g.data(), 16, s.data(), next);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("12 input channels"), std::string::npos) << e.what();
  }
  s[3] = 0;
  const LinearRef ok[] = {{w.data(), 6, 16}};
  EXPECT_THROW(merge_smoothing_into_norm(g.data(), 16, s.data(), ok), Error);
}


TEST(QuantSmooth, SmoothingLossIsTheQuantizedOutputErrorAndTheSearchMinimisesIt) {
  // FireQ's loss (smooth.h SmoothingLoss) for two linears reading one activation (as gate and
  // up read the MLP norm's output): INT4 g16 weights, FP8 E4M3 per-token activations. Checked
  // against a re-computation here (quantize() from formats, a double product), and the alpha
  // chosen on the grid must have the smallest loss of all 21.
  const int64_t tokens = 96, n = 128, out1 = 48, out2 = 32;
  const std::vector<float> x = activations_with_outliers(tokens, n, 21);
  const std::vector<float> w1 = gaussian(out1 * n, 22), w2 = gaussian(out2 * n, 23);
  const Format wf = Format::parse("int4:g16"), af = Format::parse("fp8_e4m3:token");
  const SmoothingLoss loss(x.data(), tokens, n, {{w1.data(), out1, wf, af}, {w2.data(), out2, wf, af}});
  auto by_hand = [&](const std::vector<float>& s) {
    std::vector<float> xs = x;
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t j = 0; j < n; ++j) xs[size_t(t * n + j)] /= s[size_t(j)];
    const std::vector<float> xq = quant_test::dequantized(quantize(xs.data(), tokens, n, af));
    double e = 0;
    for (const auto& [w, out] : {std::pair{&w1, out1}, std::pair{&w2, out2}}) {
      std::vector<float> ws = *w;
      for (int64_t o = 0; o < out; ++o)
        for (int64_t j = 0; j < n; ++j) ws[size_t(o * n + j)] *= s[size_t(j)];
      const std::vector<float> wq = quant_test::dequantized(quantize(ws.data(), out, n, wf));
      const std::vector<double> y = linear_ref(x, *w, tokens, n, out), yq = linear_ref(xq, wq, tokens, n, out);
      for (size_t i = 0; i < y.size(); ++i) e += (y[i] - yq[i]) * (y[i] - yq[i]);
    }
    return e;
  };
  std::vector<float> wmax = column_absmax(w1, out1, n);
  accumulate_column_absmax(w2.data(), out2, n, wmax.data());
  EXPECT_EQ(loss.weight_absmax(), wmax);
  const std::vector<float> act = column_absmax(x, tokens, n);
  std::vector<double> losses;
  for (float alpha : default_alpha_grid()) {
    const std::vector<float> s = smoothing_scales(act.data(), wmax.data(), n, alpha);
    const double l = loss(s), h = by_hand(s);
    // The F32 products differ from the double ones by ~1e-6 relative; a rounding decision can
    // flip where x / s lands within an ulp of a midpoint, which moves the total far less than 1%.
    EXPECT_NEAR(l, h, 1e-2 * h) << "alpha " << alpha;
    losses.push_back(l);
  }
  const AlphaChoice c = choose_smoothing_alpha(act.data(), wmax.data(), n, default_alpha_grid(),
                                               [&](const std::vector<float>& s) { return loss(s); });
  for (double l : losses) EXPECT_LE(c.loss, l);
  const double unsmoothed = loss(std::vector<float>(size_t(n), 1.0f));
  std::printf("  W4A8 output error: %.4g unsmoothed, %.4g at the chosen alpha %.2f\n", unsmoothed, c.loss, c.alpha);
  EXPECT_LT(c.loss, unsmoothed);  // planted 40x outlier channels: smoothing must help
  // Without quantization the loss is the function's change only: rounding-level.
  const SmoothingLoss fine(x.data(), tokens, n, {{w1.data(), out1, Format::parse("int8:g16"), std::nullopt}});
  const std::vector<float> s = smoothing_scales(act.data(), wmax.data(), n, 0.5f);
  const std::vector<double> y = linear_ref(x, w1, tokens, n, out1);
  double energy = 0;
  for (double v : y) energy += v * v;
  EXPECT_LT(fine(s), 1e-3 * energy);
}

}  // namespace
}  // namespace qf
