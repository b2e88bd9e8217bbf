// The CUDA calibration device (quant/fp32_device.h) against its CPU twin, the CPU device:
//  * each op on fresh random inputs at the real shapes of the default model (hidden 576, ffn 1536,
//    9 heads over 3 KV heads of 64) and of Llama-2/3 attention (32 heads over 8 of 128), output
//    poisoned with NaN first, with the bound each comparison states;
//  * the whole sequential pass (quant/calibration.h) on a random model and, when present, on the
//    default model: the Hessians, absmax and histograms the quantizers see.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <random>

#include "cuda/gpu_test.h"
#include "quant/calibration.h"
#include "quant/fp32_device.h"
#include "quant/gptq.h"
#include "runtime/model.h"
#include "runtime/paths.h"
#include "runtime/rope_frequencies.h"
#include "runtime/tiny_model.h"

namespace qf {
namespace {

constexpr float kU = 1.0f / float(1 << 24);  // FP32 unit roundoff
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<float> gaussian(int64_t n, uint32_t seed, float stddev = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, stddev);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = nd(rng);
  return v;
}

// The same host data on both devices, and a way back.
struct Pair {
  Fp32Device &cpu, &gpu;
  struct Buf {
    float *c, *g;
    int64_t n;
  };
  Buf put(const std::vector<float>& host) {
    Buf b{cpu.alloc(int64_t(host.size()), "test"), gpu.alloc(int64_t(host.size()), "test"), int64_t(host.size())};
    cpu.upload(b.c, host.data(), b.n);
    gpu.upload(b.g, host.data(), b.n);
    return b;
  }
  // An output: NaN on both sides, so an element the op never writes fails the comparison.
  Buf poisoned(int64_t n) { return put(std::vector<float>(static_cast<size_t>(n), kNaN)); }
  std::pair<std::vector<float>, std::vector<float>> get(const Buf& b) {
    std::vector<float> c(size_t(b.n)), g(size_t(b.n));
    cpu.download(c.data(), b.c, b.n);
    gpu.download(g.data(), b.g, b.n);
    return {c, g};
  }
};

// |gpu - cpu| <= bound(i) at every element, both finite.
template <typename Bound>
void expect_close(const std::vector<float>& cpu, const std::vector<float>& gpu, Bound bound, const char* what) {
  ASSERT_EQ(cpu.size(), gpu.size());
  int64_t bad = 0;
  double worst = 0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    ASSERT_TRUE(std::isfinite(cpu[i])) << what << " CPU " << i;
    if (!std::isfinite(gpu[i])) {
      ADD_FAILURE() << what << ": GPU element " << i << " is " << gpu[i] << " (unwritten or overflowed)";
      return;
    }
    const double diff = std::fabs(double(gpu[i]) - double(cpu[i])), b = bound(i);
    worst = std::max(worst, diff / std::max(b, 1e-30));
    if (diff > b && bad++ < 5) ADD_FAILURE() << what << " [" << i << "]: GPU " << gpu[i] << ", CPU " << cpu[i] << ", bound " << b;
  }
  EXPECT_EQ(bad, 0) << what;
  std::printf("  %-28s %zu values, worst |diff| / bound = %.3g\n", what, cpu.size(), worst);
}

class Fp32DeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    QF_REQUIRE_GPU();
    cpu_ = make_cpu_fp32_device();
    gpu_ = make_cuda_fp32_device();
  }
  Pair pair() { return {*cpu_, *gpu_}; }
  std::unique_ptr<Fp32Device> cpu_, gpu_;
};

TEST_F(Fp32DeviceTest, NormsAndElementwiseOpsMatchTheCpu) {
  Pair p = pair();
  const int64_t rows = 2048, H = 576, F = 1536;
  const std::vector<float> x = gaussian(rows * H, 1, 3.0f), delta = gaussian(rows * H, 2), g = gaussian(H, 3);
  const float eps = 1e-5f;
  // RMSNorm: the same float operations after a double sum of squares whose order differs; the
  // inverse root may differ by one ulp after rounding to float, so 2 ulps of the output.
  Pair::Buf xb = p.put(x), y = p.poisoned(rows * H), gb = p.put(g);
  p.cpu.rmsnorm(xb.c, rows, H, gb.c, eps, y.c);
  p.gpu.rmsnorm(xb.g, rows, H, gb.g, eps, y.g);
  auto [yc, yg] = p.get(y);
  expect_close(yc, yg, [&](size_t i) { return 4.0 * kU * std::fabs(yc[i]); }, "rmsnorm");
  // The fused residual form: the residual exactly (one addition), the output as above.
  Pair::Buf db = p.put(delta), y2 = p.poisoned(rows * H);
  p.cpu.add_rmsnorm(xb.c, db.c, rows, H, gb.c, eps, y2.c);
  p.gpu.add_rmsnorm(xb.g, db.g, rows, H, gb.g, eps, y2.g);
  auto [rc, rg] = p.get(xb);
  expect_close(rc, rg, [](size_t) { return 0.0; }, "add_rmsnorm residual");
  auto [y2c, y2g] = p.get(y2);
  expect_close(y2c, y2g, [&](size_t i) { return 4.0 * kU * std::fabs(y2c[i]); }, "add_rmsnorm output");
  // SwiGLU: expf against std::exp, each within an ulp or two; 8 ulps of the product.
  const std::vector<float> gate = gaussian(rows * F, 4, 2.0f), up = gaussian(rows * F, 5);
  Pair::Buf gt = p.put(gate), ub = p.put(up), o = p.poisoned(rows * F);
  p.cpu.silu_mul(gt.c, ub.c, rows * F, o.c);
  p.gpu.silu_mul(gt.g, ub.g, rows * F, o.g);
  auto [oc, og] = p.get(o);
  expect_close(oc, og, [&](size_t i) { return 8.0 * kU * std::fabs(oc[i]) + 1e-30; }, "silu_mul");
  p.cpu.add(gt.c, ub.c, rows * F);
  p.gpu.add(gt.g, ub.g, rows * F);
  auto [ac, ag] = p.get(gt);
  expect_close(ac, ag, [](size_t) { return 0.0; }, "add");
}

TEST_F(Fp32DeviceTest, LinearMatchesTheCpuAtDefaultModelShapes) {
  Pair p = pair();
  const int64_t m = 1024;
  // q/k/v/o (576 x 576), k/v (192 x 576), gate/up (1536 x 576), down (576 x 1536).
  for (auto [n, k] : {std::pair<int64_t, int64_t>{576, 576}, {192, 576}, {1536, 576}, {576, 1536}}) {
    const std::vector<float> x = gaussian(m * k, uint32_t(n + k)), w = gaussian(n * k, uint32_t(n * k), 0.05f),
                             bias = gaussian(n, 9);
    Pair::Buf xb = p.put(x), wb = p.put(w), bb = p.put(bias), y = p.poisoned(m * n);
    p.cpu.linear(xb.c, m, k, wb.c, n, bb.c, y.c);
    p.gpu.linear(xb.g, m, k, wb.g, n, bb.g, y.g);
    auto [yc, yg] = p.get(y);
    // Two FP32 dot products of k terms in different orders: each is within k u sum|x w| of the
    // exact value (the classic worst-case bound), so they are within 2 k u sum|x w| + the bias's
    // rounding of each other. A transposed or misplaced operand is off by O(sum|x w|).
    std::vector<double> abs_sum(size_t(m * n));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = std::fabs(bias[size_t(j)]);
        for (int64_t t = 0; t < k; ++t) s += std::fabs(double(x[size_t(i * k + t)]) * w[size_t(j * k + t)]);
        abs_sum[size_t(i * n + j)] = s;
      }
    expect_close(yc, yg, [&](size_t i) { return 2.0 * double(k + 1) * kU * abs_sum[i]; },
                 n == 576 && k == 1536 ? "linear down 576x1536" : n == 1536 ? "linear gate 1536x576"
                 : n == 192                                     ? "linear k 192x576"
                                                                : "linear q 576x576");
  }
}

TEST_F(Fp32DeviceTest, RopePostScaleAndAttentionMatchTheCpu) {
  Pair p = pair();
  struct Case {
    const char* name;
    int64_t windows, L, heads, kv_heads, d;
  };
  for (const Case& cs : {Case{"default model 9/3 x 64", 3, 512, 9, 3, 64}, Case{"llama 32/8 x 128", 1, 1024, 32, 8, 128}}) {
    SCOPED_TRACE(cs.name);
    const int64_t T = cs.windows * cs.L, q_dim = cs.heads * cs.d, kv_dim = cs.kv_heads * cs.d, half = cs.d / 2;
    const std::vector<float> q = gaussian(T * q_dim, 11), k = gaussian(T * kv_dim, 12), v = gaussian(T * kv_dim, 13);
    std::vector<float> cosv(size_t(cs.L * half)), sinv(size_t(cs.L * half));
    for (int64_t t = 0; t < cs.L; ++t)
      for (int64_t j = 0; j < half; ++j) {
        const double a = double(t) * std::pow(10000.0, -2.0 * double(j) / double(cs.d));
        cosv[size_t(t * half + j)] = float(std::cos(a));
        sinv[size_t(t * half + j)] = float(std::sin(a));
      }
    std::vector<float> post(static_cast<size_t>(kv_dim), 1.0f);
    for (int64_t i = 0; i < kv_dim; i += 7) post[size_t(i)] = 0.25f + float(i % 5);
    Pair::Buf qb = p.put(q), kb = p.put(k), vb = p.put(v), cb = p.put(cosv), sb = p.put(sinv), pb = p.put(post);
    // RoPE: the CPU may contract lo*c - hi*s into an FMA, the GPU rounds both products: one
    // rounding of |lo c| + |hi s| apart, at most.
    p.cpu.rope(qb.c, cs.windows, cs.L, cs.heads, cs.d, q_dim, cb.c, sb.c);
    p.gpu.rope(qb.g, cs.windows, cs.L, cs.heads, cs.d, q_dim, cb.g, sb.g);
    p.cpu.rope(kb.c, cs.windows, cs.L, cs.kv_heads, cs.d, kv_dim, cb.c, sb.c);
    p.gpu.rope(kb.g, cs.windows, cs.L, cs.kv_heads, cs.d, kv_dim, cb.g, sb.g);
    auto [qc, qg] = p.get(qb);
    auto [kc, kg] = p.get(kb);
    const float q_max = *std::max_element(q.begin(), q.end()), k_max = *std::max_element(k.begin(), k.end());
    expect_close(qc, qg, [&](size_t) { return 4.0 * kU * q_max; }, "rope q");
    expect_close(kc, kg, [&](size_t) { return 4.0 * kU * k_max; }, "rope k");
    // Continue from the CPU's rotated values on both, so the next ops are compared alone.
    p.gpu.upload(qb.g, qc.data(), qb.n);
    p.gpu.upload(kb.g, kc.data(), kb.n);
    p.cpu.post_rope_scale(qb.c, q_dim, kb.c, kv_dim, T, pb.c, cs.heads, cs.kv_heads, cs.d);
    p.gpu.post_rope_scale(qb.g, q_dim, kb.g, kv_dim, T, pb.g, cs.heads, cs.kv_heads, cs.d);
    std::tie(qc, qg) = p.get(qb);
    std::tie(kc, kg) = p.get(kb);
    expect_close(qc, qg, [](size_t) { return 0.0; }, "post-RoPE scale q");  // one division each
    expect_close(kc, kg, [](size_t) { return 0.0; }, "post-RoPE scale k");  // one product each
    // Attention: out = sum_t p_t v_t over the causal keys. The probabilities of the two differ by
    // the scores' dot-product rounding (d u |q||k| scale, ~1e-6 here), exp's ulps and the sum's
    // rounding (L u worst case, 6e-5 at L = 1024): |out diff| <= max|v| * sum_t |dp_t|, bounded
    // by 2e-4 max|v|. A wrong mask, head mapping or window offset is off by O(max|v| / 10).
    p.gpu.upload(qb.g, qc.data(), qb.n);
    p.gpu.upload(kb.g, kc.data(), kb.n);
    Pair::Buf out = p.poisoned(T * q_dim);
    const float scale = 1.0f / std::sqrt(float(cs.d));
    p.cpu.attention(qb.c, kb.c, vb.c, cs.windows, cs.L, 0, cs.L, cs.heads, cs.kv_heads, cs.d, scale, out.c);
    p.gpu.attention(qb.g, kb.g, vb.g, cs.windows, cs.L, 0, cs.L, cs.heads, cs.kv_heads, cs.d, scale, out.g);
    auto [oc, og] = p.get(out);
    float v_max = 0;
    for (float x : v) v_max = std::max(v_max, std::fabs(x));
    expect_close(oc, og, [&](size_t) { return 2e-4 * v_max; }, "attention");
    // An engine's chunk: the last 100 queries of window 0 at positions L-100 .. L-1 over its cache.
    const int64_t tail = 100;
    Pair::Buf out2 = p.poisoned(tail * q_dim);
    p.cpu.attention(qb.c + (cs.L - tail) * q_dim, kb.c, vb.c, 1, tail, cs.L - tail, cs.L, cs.heads, cs.kv_heads, cs.d,
                    scale, out2.c);
    p.gpu.attention(qb.g + (cs.L - tail) * q_dim, kb.g, vb.g, 1, tail, cs.L - tail, cs.L, cs.heads, cs.kv_heads, cs.d,
                    scale, out2.g);
    auto [o2c, o2g] = p.get(out2);
    expect_close(o2c, o2g, [&](size_t) { return 2e-4 * v_max; }, "attention over a cache");
    // ... and the same rows as the whole window computed them (the CPU's attention depends only on
    // the query's row, position and the keys: bit-equal).
    for (int64_t i = 0; i < tail * q_dim; ++i) ASSERT_EQ(o2c[size_t(i)], oc[size_t((cs.L - tail) * q_dim + i)]) << i;
  }
}

TEST_F(Fp32DeviceTest, StatisticsMatchTheCpu) {
  Pair p = pair();
  for (int64_t c : {576, 1536}) {
    const int64_t m = 4096;
    std::vector<float> x = gaussian(m * c, uint32_t(c), 2.0f);
    for (int64_t i = 0; i < m * c; i += 97) x[size_t(i)] = 0.0f;       // bin 0
    for (int64_t i = 5; i < m * c; i += 1013) x[size_t(i)] *= 1e4f;     // outliers
    Pair::Buf xb = p.put(x);
    const int first = 4 * (127 + kHistogramMinExp2), bins = kHistogramBins;
    std::vector<float> gram_c(static_cast<size_t>(c * c)), gram_g(static_cast<size_t>(c * c), kNaN), absmax_c(static_cast<size_t>(c)), absmax_g(static_cast<size_t>(c)),
        tmin_c(static_cast<size_t>(m)), tmax_c(static_cast<size_t>(m)), tmin_g(static_cast<size_t>(m), kNaN), tmax_g(static_cast<size_t>(m), kNaN);
    std::vector<uint32_t> hist_c(static_cast<size_t>(c * bins)), hist_g(static_cast<size_t>(c * bins));
    p.cpu.statistics(xb.c, m, c, first, bins, gram_c.data(), absmax_c.data(), hist_c.data(), tmin_c.data(), tmax_c.data());
    p.gpu.statistics(xb.g, m, c, first, bins, gram_g.data(), absmax_g.data(), hist_g.data(), tmin_g.data(), tmax_g.data());
    // Absmax, histogram and token ranges are exact functions of the values: equal.
    EXPECT_EQ(absmax_c, absmax_g);
    EXPECT_EQ(hist_c, hist_g);
    EXPECT_EQ(tmin_c, tmin_g);
    EXPECT_EQ(tmax_c, tmax_g);
    // The Gram matrix's lower triangle: two FP32 sums of m products, each within m u sum|x_i x_j|
    // <= m u sqrt(G_ii G_jj) (Cauchy-Schwarz) of the exact value.
    std::vector<float> lc, lg;
    std::vector<double> bound;
    for (int64_t i = 0; i < c; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        lc.push_back(gram_c[size_t(i * c + j)]);
        lg.push_back(gram_g[size_t(i * c + j)]);
        bound.push_back(2.0 * double(m) * kU *
                        std::sqrt(double(gram_c[size_t(i * c + i)]) * double(gram_c[size_t(j * c + j)])));
      }
    expect_close(lc, lg, [&](size_t i) { return bound[i]; }, c == 576 ? "gram 576" : "gram 1536");
  }
  // A non-finite activation is an error, as on the CPU.
  std::vector<float> bad = gaussian(64 * 576, 77);
  bad[1000] = std::numeric_limits<float>::infinity();
  Pair::Buf bb = p.put(bad);
  std::vector<float> gram(576 * 576), absmax(576), tmin(64), tmax(64);
  std::vector<uint32_t> hist(576 * kHistogramBins);
  EXPECT_THROW(p.gpu.statistics(bb.g, 64, 576, 4 * (127 + kHistogramMinExp2), kHistogramBins, gram.data(), absmax.data(),
                                hist.data(), tmin.data(), tmax.data()),
               Error);
}

// ---- GPTQ with the deferred updates on the GPU ------------------------------------------------------

TEST_F(Fp32DeviceTest, GptqOnTheGpuMatchesTheCpuAtDefaultModelShapes) {
  // A layer of the default model's shapes (gate: 1536 x 576, down: 576 x 1536) with a calibration-
  // like Hessian (correlated channels, a few of large variance), gptq-w4g128's settings. The GPU
  // applies each batch's update as one cuBLAS FP32 GEMM, the CPU in row chunks: the updated weights
  // differ by FP32 rounding (~1e-6 relative), so an element whose value sits within that of a
  // rounding boundary takes the neighbouring code. Bound: under 0.1% of the codes differ and the
  // loss (sum of squared scaled errors) within 1e-3 relative. A wrong update (a stale column, a
  // misplaced U block) changes most codes after the first batch and the loss by far more.
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1536, 576}, {576, 1536}}) {
    SCOPED_TRACE(str(rows, " x ", cols));
    const int64_t tokens = 2 * cols;
    std::vector<float> x = gaussian(tokens * cols, uint32_t(rows));
    for (int64_t t = 0; t < tokens; ++t)  // correlate neighbouring channels; a few outliers
      for (int64_t j = cols - 1; j >= 1; --j) {
        float& v = x[size_t(t * cols + j)];
        v = 0.6f * v + 0.8f * x[size_t(t * cols + j - 1)];
        if (j % 37 == 5) v *= 8.0f;
      }
    std::vector<float> gram(size_t(cols * cols)), absmax(static_cast<size_t>(cols)), tmin(static_cast<size_t>(tokens)), tmax(static_cast<size_t>(tokens));
    std::vector<uint32_t> hist(size_t(cols * kHistogramBins));
    Pair p = pair();
    Pair::Buf xb = p.put(x);
    p.cpu.statistics(xb.c, tokens, cols, 4 * (127 + kHistogramMinExp2), kHistogramBins, gram.data(), absmax.data(),
                     hist.data(), tmin.data(), tmax.data());
    std::vector<double> h(size_t(cols * cols));
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j <= i; ++j) h[size_t(i * cols + j)] = h[size_t(j * cols + i)] = gram[size_t(i * cols + j)];
    const std::vector<float> w = gaussian(rows * cols, uint32_t(cols), 0.05f);
    const Format f = Format::parse("int4:g128");
    GptqOptions opt;
    opt.act_order = opt.static_groups = true;
    const GptqResult cpu = gptq_quantize(w.data(), rows, cols, {h.data(), cols, false}, f, opt);
    opt.device = gpu_.get();
    const GptqResult gpu = gptq_quantize(w.data(), rows, cols, {h.data(), cols, false}, f, opt);
    int64_t differ = 0;
    for (size_t i = 0; i < cpu.weight.dequantized.size(); ++i) differ += cpu.weight.dequantized[i] != gpu.weight.dequantized[i];
    std::printf("  gptq %ld x %ld: %ld of %zu codes differ, loss CPU %.6g GPU %.6g\n", long(rows), long(cols),
                long(differ), cpu.weight.dequantized.size(), cpu.loss, gpu.loss);
    EXPECT_EQ(cpu.weight.q.scales, gpu.weight.q.scales);  // static groups: from the original weights
    EXPECT_LE(double(differ), 1e-3 * double(rows * cols));
    EXPECT_NEAR(gpu.loss, cpu.loss, 1e-3 * cpu.loss);
  }
}

// ---- the whole pass --------------------------------------------------------------------------------

struct PassRecord {
  std::map<std::string, ActivationStats> stats;  // per (layer, input)
};

// Runs the pass on `device`, keeping every weight unquantized (so both devices compute the same
// function and differ only by FP32 rounding), recording each stage's statistics.
PassRecord run_pass(const Checkpoint& ck, const std::vector<std::vector<int32_t>>& windows, Fp32Device& device,
                    const std::optional<Format>& kv_cache = std::nullopt, double* seconds = nullptr) {
  CalibrationModel cm;
  cm.checkpoint = &ck;
  const RopeFrequencies rope = rope_frequencies(ck.config, int64_t(windows.front().size()));
  cm.rope_inv_freq = rope.inv_freq;
  cm.rope_attention_factor = rope.attention_factor;
  cm.kv_cache = kv_cache;
  CalibrationOptions co;
  co.device = &device;
  PassRecord rec;
  const auto t0 = std::chrono::steady_clock::now();
  calibrate_sequentially(cm, windows,
                         [&](int64_t layer, LinearInput input, const ActivationStats& st, std::span<CalibratedLinear>) {
                           rec.stats[str(layer, ".", linear_input_name(input))] = st;
                         },
                         co);
  if (seconds) *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rec;
}

// The GPU's statistics against the CPU's. The activations differ by FP32 rounding compounded over
// the blocks (relative ~1e-6 per op): Hessian entries within rel_tol * sqrt(H_ii H_jj) (a wrong
// op, e.g. a stale norm or a missing RoPE, moves them by percent), absmax within rel_tol, token
// counts equal, and histograms equal up to the values that fall on the other side of a bin edge
// (at most `moved_tol` of the counts).
void expect_passes_agree(const PassRecord& cpu, const PassRecord& gpu, double rel_tol, double moved_tol) {
  ASSERT_EQ(cpu.stats.size(), gpu.stats.size());
  double worst_h = 0;
  for (const auto& [key, c] : cpu.stats) {
    SCOPED_TRACE(key);
    const ActivationStats& g = gpu.stats.at(key);
    ASSERT_EQ(c.channels, g.channels);
    ASSERT_EQ(c.tokens, g.tokens);
    const int64_t n = c.channels;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        const double scale = std::sqrt(c.hessian[size_t(i * n + i)] * c.hessian[size_t(j * n + j)]) + 1e-30;
        const double e = std::fabs(g.hessian[size_t(i * n + j)] - c.hessian[size_t(i * n + j)]) / scale;
        worst_h = std::max(worst_h, e);
        ASSERT_LE(e, rel_tol) << "H[" << i << ", " << j << "]";
      }
      ASSERT_NEAR(g.channel_absmax[size_t(i)], c.channel_absmax[size_t(i)], rel_tol * c.channel_absmax[size_t(i)] + 1e-30);
    }
    int64_t moved = 0;
    for (size_t i = 0; i < c.channel_histogram.size(); ++i)
      moved += std::abs(int64_t(c.channel_histogram[i]) - int64_t(g.channel_histogram[i]));
    EXPECT_LE(double(moved), moved_tol * double(c.tokens * n)) << "histogram counts moved between bins";
  }
  std::printf("  %zu stages, worst Hessian |diff| / sqrt(H_ii H_jj) = %.3g\n", cpu.stats.size(), worst_h);
}

TEST_F(Fp32DeviceTest, PassMatchesTheCpuOnARandomModel) {
  test::TinyOptions to;
  to.hidden = 384;
  to.heads = 6;  // head_dim 64, as the GPU attention needs
  to.kv_heads = 2;
  to.ffn = 512;
  to.layers = 3;
  to.bias = true;
  to.max_pos = 512;
  const Checkpoint ck = test::tiny_checkpoint(to);
  std::vector<int32_t> text(4000);
  std::mt19937 rng(3);
  for (int32_t& t : text) t = int32_t(rng() % uint32_t(ck.config.vocab_size));
  const auto windows = draw_calibration_windows(text, 6, 256, 5);
  // Activations within ~1e-5 relative: a value moves to the next quarter-octave bin only when it
  // sits that close to an edge, well under 1e-3 of them.
  expect_passes_agree(run_pass(ck, windows, *cpu_), run_pass(ck, windows, *gpu_), 1e-4, 2e-3);
  // With a KV-cache format, rounded on the host for the GPU: the same path, and now a value
  // sitting near a rounding boundary may round to the neighbouring code on one device (a step of
  // absmax/127 for int8), which moves every activation downstream of it by up to a code step's
  // share: the Hessian bound is one code step, and up to 3% of the histogram counts may move.
  const Format kv = Format::parse("int8:token");
  expect_passes_agree(run_pass(ck, windows, *cpu_, kv), run_pass(ck, windows, *gpu_, kv), 2e-2, 3e-2);
}

TEST_F(Fp32DeviceTest, PassMatchesTheCpuOnTheDefaultModel) {
  std::unique_ptr<Model> model;
  try {
    model = std::make_unique<Model>(load_model(default_model_path()));
  } catch (const Error&) {
    GTEST_SKIP() << "model test skipped: the default model is absent (set QF_MODEL)";
  }
  std::vector<int32_t> text(20000);
  std::mt19937 rng(11);
  for (int32_t& t : text) t = int32_t(rng() % 20000);  // ids of common tokens
  const auto windows = draw_calibration_windows(text, 4, 512, 1);
  double cpu_s = 0, gpu_s = 0;
  const PassRecord c = run_pass(model->checkpoint, windows, *cpu_, std::nullopt, &cpu_s);
  const PassRecord g = run_pass(model->checkpoint, windows, *gpu_, std::nullopt, &gpu_s);
  std::printf("  default model, 4 x 512 tokens: CPU pass %.2f s, GPU pass %.2f s\n", cpu_s, gpu_s);
  // 30 blocks of compounded FP32 rounding through a real model's outlier channels: 1e-3.
  expect_passes_agree(c, g, 1e-3, 2e-3);
}

}  // namespace
}  // namespace qf
