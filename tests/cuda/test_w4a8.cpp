// FireQ's INT4 x FP8 linear layer (issue 6, w4a8_gemm.h): the pre-packed layout, the per-token
// FP8 quantizer, the code -> FP8 expansion, w4a8_gemv and the expand + cuBLASLt FP8 path, each
// against the formats' own codecs and the CPU twin w4a8_linear_reference.
//
// CPU tests (no GPU): prepack / unpack round trips at ragged shapes; rejections; the twin against
// dequantize() of the lut format (two independent implementations of the same rule); the
// registry's choice.
// GPU tests (skip without an sm_90 GPU):
//   * the expansion over EVERY (code, group scale) pair: 16 codes x every E4M3 scale in (0, 56],
//     byte-exact against encode_e4m3(q * sigma);
//   * the quantizer, code- and scale-exact against formats/quantize.h at real widths;
//   * both linear paths at the Llama-2-7B, Llama-3-8B and Llama-2-70B layer shapes.
//
// Error bound of a GPU result y against the twin's exact ref (abs_sum = s t sum_k |x w|):
//     |y - ref| <= 2^-8 max(|y|, |ref|) + 2^-12 abs_sum
//   * 2^-8: the one rounding of the result to BF16 (half a unit in the last of 8 bits), plus the
//     FP32 scale products (2^-23).
//   * 2^-12 abs_sum: accumulation. Every product of two E4M3 values is exact in FP32 (4 x 4
//     significant bits), but Hopper's FP8 tensor cores add the 32 products of an MMA (and the
//     running sum) with limited internal precision: about 14 bits relative to the largest term
//     (DeepSeek-V3 report, sec. 3.3.2, measured on H800; the GEMV's chains are K/32 MMAs of 32
//     products, then an 8-way FP32 split-K sum). Per MMA that is <= 2^-14 of the terms' magnitude,
//     summed over the chain <= 2^-14 abs_sum; 2^-12 leaves a margin of 4. cuBLASLt's FP8 GEMM
//     promotes partial sums to FP32 (no fast accumulation) and stays far inside.
//   * over the compared outputs: ||y - ref|| / ||ref|| < 5e-3 (BF16 rounding alone is ~1.5e-3;
//     a missing 32-weight chunk per output gives >= 3e-2 at K = 28672), which catches the index
//     errors the per-element term is too loose to see at large K.
//   * every output element is checked written (poisoned with a NaN first) and finite.
//
// Seeds: fresh each run (printed on failure); QF_TEST_SEED=<n> repeats a run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device.h"
#include "backends/cuda/linear.h"
#include "backends/cuda/linear_bench.h"
#include "backends/cuda/w4a8_gemm.h"
#include "backends/cuda/weight_prepack.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "formats/bf16.h"
#include "formats/format.h"
#include "formats/quantize.h"
#include "gpu_test.h"
#include "kernel_test_util.h"

namespace qf::cuda {
namespace {

constexpr uint16_t kPoison = 0x7FC1;  // a quiet BF16 NaN no kernel produces by itself
const ElementType kE4M3 = ElementType::of(ElementKind::fp8_e4m3);

uint64_t test_seed() {
  if (const char* s = std::getenv("QF_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  static const uint64_t seed = std::random_device{}();
  return seed;
}

// The E4M3 codes of every positive value <= 56 (the lut format's largest group scale for int4).
std::vector<uint8_t> scale_codes() {
  std::vector<uint8_t> out;
  for (uint32_t c = 1; c < 0x80; ++c) {
    const float v = decode_float_element(kE4M3, c);
    if (std::isfinite(v) && v > 0 && v <= 56.f) out.push_back(uint8_t(c));
  }
  return out;
}

// An [n, k] int4 lut matrix with random codes (-8 included), random valid group scales and a
// tensor scale of ~1e-3.
QuantizedMatrix random_w4a8_matrix(int64_t n, int64_t k, uint64_t seed) {
  QuantizedMatrix q = make_quantized_matrix(w4a8_weight_format(), n, k);
  static const std::vector<uint8_t> scales = scale_codes();
  constexpr int64_t kChunk = 1 << 16;
  const int64_t total = n * k;
  parallel_for((total + kChunk - 1) / kChunk, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      std::mt19937_64 rng(seed ^ uint64_t(c) * 0x9E3779B97F4A7C15ull);
      for (int64_t i = c * kChunk; i < std::min(total, (c + 1) * kChunk); ++i) q.codes[size_t(i)] = uint8_t(rng() & 0xF);
    }
  });
  std::mt19937_64 rng(seed + 1);
  // Scales from the upper part of the range mostly (as the tensor scale makes them), all of it
  // sometimes.
  std::uniform_int_distribution<size_t> any(0, scales.size() - 1), upper(scales.size() / 2, scales.size() - 1);
  for (uint8_t& s : q.scales) s = scales[(rng() % 8 == 0) ? any(rng) : upper(rng)];
  q.tensor_scale = std::uniform_real_distribution<float>(5e-4f, 2e-3f)(rng);
  return q;
}

// ================================ CPU tests =====================================================

TEST(W4a8Prepack, RoundTripsAtRaggedShapes) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(str("seed=", seed, " (QF_TEST_SEED repeats it)"));
  for (auto [n, k] : std::vector<std::pair<int64_t, int64_t>>{{1, 32}, {16, 128}, {37, 96}, {100, 576}, {5, 1536}}) {
    SCOPED_TRACE(str("[", n, ", ", k, "]"));
    const QuantizedMatrix q = random_w4a8_matrix(n, k, seed + uint64_t(n * 131 + k));
    const std::vector<uint8_t> blob = prepack_w4a8_weights(q);
    const W4a8PackedLayout l = w4a8_packed_layout(n, k);
    ASSERT_EQ(blob.size(), l.total_bytes());
    EXPECT_EQ(l.scale_offset() % 128, 0u);
    EXPECT_EQ(l.row_scale_offset() % 128, 0u);
    std::vector<uint8_t> codes(size_t(n * k)), scales(size_t(n * l.scale_cols()));
    std::vector<float> rows(static_cast<size_t>(n));
    unpack_w4a8_weights(l, blob.data(), codes.data(), scales.data(), rows.data());
    EXPECT_EQ(codes, q.codes);
    EXPECT_EQ(scales, q.scales);
    for (float t : rows) EXPECT_EQ(t, q.tensor_scale);
    // Offset binary: code 0 (q = 0) is stored as nibble 8, so an all-zero row is 0x88 bytes.
    QuantizedMatrix z = make_quantized_matrix(w4a8_weight_format(), 1, 32);
    const std::vector<uint8_t> zb = prepack_w4a8_weights(z);
    for (int i = 0; i < 16; ++i) EXPECT_EQ(zb[size_t(i)], 0x88) << i;
  }
}

// The engine's fused q/k/v and gate/up: matrices stacked along N, each row keeping its own group
// scales and its matrix's tensor scale.
TEST(W4a8Prepack, StacksMatricesRowByRow) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(str("seed=", seed));
  const QuantizedMatrix a = random_w4a8_matrix(24, 576, seed), b = random_w4a8_matrix(8, 576, seed + 1),
                        c = random_w4a8_matrix(40, 576, seed + 2);
  ASSERT_NE(a.tensor_scale, b.tensor_scale);
  const std::vector<uint8_t> blob = prepack_w4a8_weights({&a, &b, &c});
  const W4a8PackedLayout l = w4a8_packed_layout(72, 576);
  ASSERT_EQ(blob.size(), l.total_bytes());
  std::vector<uint8_t> codes(size_t(72 * 576)), scales(size_t(72 * l.scale_cols()));
  std::vector<float> rows(72);
  unpack_w4a8_weights(l, blob.data(), codes.data(), scales.data(), rows.data());
  int64_t r0 = 0;
  for (const QuantizedMatrix* q : {&a, &b, &c}) {
    EXPECT_TRUE(std::equal(q->codes.begin(), q->codes.end(), codes.begin() + r0 * 576));
    EXPECT_TRUE(std::equal(q->scales.begin(), q->scales.end(), scales.begin() + r0 * l.scale_cols()));
    for (int64_t r = 0; r < q->rows; ++r) EXPECT_EQ(rows[size_t(r0 + r)], q->tensor_scale);
    r0 += q->rows;
  }
  const QuantizedMatrix narrow = random_w4a8_matrix(8, 512, seed + 3);
  EXPECT_THROW(prepack_w4a8_weights({&a, &narrow}), Error);  // different widths
}

TEST(W4a8Prepack, RejectsWhatTheKernelsCannotRun) {
  EXPECT_THROW(prepack_w4a8_weights(make_quantized_matrix(Format::parse("int4:g128:scale=fp8_e4m3:tensor_scale"), 16, 128)),
               Error);  // no lut rule
  EXPECT_THROW(prepack_w4a8_weights(make_quantized_matrix(Format::parse("int4:g64:scale=fp8_e4m3:tensor_scale:lut"), 16, 128)),
               Error);  // group size
  EXPECT_THROW(prepack_w4a8_weights(make_quantized_matrix(w4a8_weight_format(), 16, 80)), Error);  // K % 32
  QuantizedMatrix big = make_quantized_matrix(w4a8_weight_format(), 16, 128);
  big.scales[3] = uint8_t(encode_float_element(kE4M3, 64.f));  // sigma > 56
  EXPECT_THROW(prepack_w4a8_weights(big), Error);
  EXPECT_THROW(w4a8_packed_layout(0, 128), Error);
}

// The twin (codec: encode_e4m3(q * sigma)) against the format's own dequantize() (the lut rule in
// formats/quantize.cpp): two implementations of x' = e4m3(q sigma) t must give the same sums.
TEST(W4a8Reference, MatchesDequantizeTimesX) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(str("seed=", seed));
  const int64_t n = 23, k = 320, m = 3;  // a ragged last group (320 = 2 x 128 + 64)
  const QuantizedMatrix q = random_w4a8_matrix(n, k, seed + 5);
  std::vector<float> w(static_cast<size_t>(n * k));
  dequantize(q, w.data());
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 100.f);
  std::vector<uint8_t> xc(static_cast<size_t>(m * k));
  for (uint8_t& c : xc) c = uint8_t(encode_float_element(kE4M3, nd(rng)));
  const std::vector<float> xs = {0.5f, 1e-3f, 3.f};
  std::vector<float> y(static_cast<size_t>(m * n)), abs_sum(size_t(m * n));
  w4a8_linear_reference(q, xc.data(), xs.data(), m, y.data(), abs_sum.data());
  for (int64_t i = 0; i < m; ++i)
    for (int64_t r = 0; r < n; ++r) {
      double s = 0, a = 0;
      for (int64_t c = 0; c < k; ++c) {
        const double p = double(decode_float_element(kE4M3, xc[size_t(i * k + c)])) * xs[size_t(i)] * w[size_t(r * k + c)];
        s += p;
        a += std::fabs(p);
      }
      // dequantize() rounds e4m3(q sigma) * t to FP32 once (2^-24 relative per weight).
      EXPECT_NEAR(y[size_t(i * n + r)], s, 1e-6 * a + 1e-30) << "row " << i << " channel " << r;
      EXPECT_NEAR(abs_sum[size_t(i * n + r)], a, 1e-6 * a + 1e-30);
    }
  EXPECT_THROW(w4a8_linear_reference(make_quantized_matrix(Format::parse("int8:channel"), 2, 32), nullptr, nullptr, 1,
                                     nullptr),
               Error);
}

TEST(W4a8Registry, SelectsTheGemvForDecodeAndTheCublasPathBeyond) {
  LinearRegistry registry;
  const LinearKey key{w4a8_weight_format(), fp8_token_format(), Backend::cuda};
  LinearKernel* gemv = registry.find("w4a8_gemv");
  LinearKernel* big = registry.find("w4a8_dequant_cublas");
  ASSERT_NE(gemv, nullptr);
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(gemv->key(), key);
  EXPECT_EQ(big->key(), key);
  for (int64_t m : {1, 8, 16}) EXPECT_EQ(&registry.select(key, {m, 4096, 4096}), gemv) << m;
  for (int64_t m : {17, 128, 4096}) EXPECT_EQ(&registry.select(key, {m, 4096, 4096}), big) << m;
  EXPECT_THROW(registry.select(key, {1, 4096, 4100}), Error);
  // Argument checks come before any CUDA call.
  alignas(16) static uint8_t buf[256];
  auto* x = reinterpret_cast<const __nv_fp8_e4m3*>(buf);
  auto* y = reinterpret_cast<__nv_bfloat16*>(buf);
  const auto* s = reinterpret_cast<const float*>(buf);
  EXPECT_THROW(w4a8_gemv(x, s, buf, y, 17, 16, 128, nullptr), Error);
  EXPECT_THROW(w4a8_gemv(x, s, buf, y, 1, 16, 100, nullptr), Error);
  EXPECT_THROW(w4a8_gemv(x, s, buf + 4, y, 1, 16, 128, nullptr), Error);
  EXPECT_THROW(quantize_fp8_per_token(y, reinterpret_cast<__nv_fp8_e4m3*>(buf), reinterpret_cast<float*>(buf), 1, 12,
                                      nullptr),
               Error);
}

// ================================ GPU tests =====================================================

TEST(W4a8Dequant, DeviceMatchesTheCodecForEveryCodeAndScale) {
  QF_REQUIRE_GPU();
  Stream stream;
  const std::vector<uint8_t> scales = scale_codes();
  // One row per group scale, each row two groups (K = 256) with every code 16 times.
  const int64_t n = int64_t(scales.size()), k = 256;
  QuantizedMatrix q = make_quantized_matrix(w4a8_weight_format(), n, k);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) q.codes[size_t(r * k + c)] = uint8_t((c * 5 + r) & 0xF);
    q.scales[size_t(r * 2)] = scales[size_t(r)];
    q.scales[size_t(r * 2 + 1)] = scales[size_t(n - 1 - r)];
  }
  const std::vector<uint8_t> blob = prepack_w4a8_weights(q);
  DeviceBuffer d_blob(blob.size(), "blob"), d_w(size_t(n * k), "w8");
  copy_to_device(d_blob.data(), blob.data(), blob.size(), stream);
  fill_u16(d_w.data(), kPoison, size_t(n * k) / 2, stream);
  w4a8_dequantize_fp8(d_blob.data(), d_w.as<__nv_fp8_e4m3>(), n, k, stream);
  std::vector<uint8_t> w(static_cast<size_t>(n * k));
  copy_to_host(w.data(), d_w.data(), w.size(), stream);
  int bad = 0;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) {
      const float sigma = decode_float_element(kE4M3, q.scales[size_t(r * 2 + c / 128)]);
      const float qv = float(sign_extend(q.codes[size_t(r * k + c)], 4));
      const uint8_t want = uint8_t(encode_float_element(kE4M3, qv * sigma));
      if (w[size_t(r * k + c)] != want && ++bad <= 5)
        ADD_FAILURE() << "q=" << qv << " sigma=" << sigma << ": 0x" << std::hex << int(w[size_t(r * k + c)])
                      << " != 0x" << int(want) << std::dec;
    }
  EXPECT_EQ(bad, 0) << "of " << n * k << " (" << scales.size() << " scales x 16 codes)";
}

TEST(W4a8Quantize, DeviceMatchesTheFormatExactly) {
  QF_REQUIRE_GPU();
  const uint64_t seed = test_seed();
  SCOPED_TRACE(str("seed=", seed));
  Stream stream;
  for (auto [m, k] : std::vector<std::pair<int64_t, int64_t>>{{5, 576}, {16, 4096}, {33, 11008}, {3, 28672}}) {
    SCOPED_TRACE(str("M=", m, " K=", k));
    std::mt19937_64 rng(seed + uint64_t(k));
    std::normal_distribution<float> nd;
    std::vector<uint16_t> xb(static_cast<size_t>(m * k));
    std::vector<float> x(xb.size());
    for (size_t i = 0; i < xb.size(); ++i) {
      // Some outlier channels, as real activations have, and one all-zero row.
      const float v = (i / size_t(k) == 1) ? 0.f : nd(rng) * ((i % 97 == 3) ? 60.f : 1.f);
      xb[i] = bf16_encode(v);
      x[i] = bf16_decode(xb[i]);
    }
    const QuantizedMatrix want = quantize(x.data(), m, k, fp8_token_format());
    DeviceBuffer dx(xb.size() * 2, "x"), dq(xb.size(), "xq"), ds(size_t(m) * 4, "s");
    copy_to_device(dx.data(), xb.data(), xb.size() * 2, stream);
    fill_u16(dq.data(), kPoison, xb.size() / 2, stream);
    quantize_fp8_per_token(dx.as<__nv_bfloat16>(), dq.as<__nv_fp8_e4m3>(), ds.as<float>(), m, k, stream);
    std::vector<uint8_t> codes(xb.size());
    std::vector<float> s(static_cast<size_t>(m));
    copy_to_host(codes.data(), dq.data(), codes.size(), stream);
    copy_to_host(s.data(), ds.data(), s.size() * 4, stream);
    for (int64_t i = 0; i < m; ++i) EXPECT_EQ(s[size_t(i)], want.scale_of(i, 0)) << "token " << i;
    int bad = 0;
    for (size_t i = 0; i < codes.size(); ++i)
      if (codes[i] != want.codes[i] && ++bad <= 5)
        ADD_FAILURE() << "element " << i << ": 0x" << std::hex << int(codes[i]) << " != 0x" << int(want.codes[i]);
    EXPECT_EQ(bad, 0);
  }
}

constexpr int64_t kRefRows = 300;

class W4a8Case {
 public:
  W4a8Case(int64_t n, int64_t k, uint64_t seed, cudaStream_t stream) : n_(n), k_(k) {
    const QuantizedMatrix q = random_w4a8_matrix(n, k, seed);
    const std::vector<uint8_t> blob = prepack_w4a8_weights(q);
    blob_ = DeviceBuffer(blob.size(), "test w4a8 blob");
    copy_to_device(blob_.data(), blob.data(), blob.size(), stream);
    // x: kRefRows tokens of FP8 codes of N(0, 100^2) (most of the E4M3 range) with per-token
    // scales of different magnitudes, so a scale applied to the wrong token shows.
    std::mt19937_64 rng(seed + 3);
    std::normal_distribution<float> nd(0.f, 100.f);
    xc_.resize(size_t(kRefRows * k));
    for (uint8_t& c : xc_) c = uint8_t(encode_float_element(kE4M3, nd(rng)));
    xs_.resize(size_t(kRefRows));
    for (float& s : xs_) s = std::ldexp(std::uniform_real_distribution<float>(1.f, 2.f)(rng), int(rng() % 9) - 12);
    x_dev_ = DeviceBuffer(xc_.size(), "test xq");
    xs_dev_ = DeviceBuffer(xs_.size() * 4, "test x scales");
    copy_to_device(x_dev_.data(), xc_.data(), xc_.size(), stream);
    copy_to_device(xs_dev_.data(), xs_.data(), xs_.size() * 4, stream);
    rows_ = testing::sampled_channels(n, rng);
    QuantizedMatrix sub = make_quantized_matrix(q.format, int64_t(rows_.size()), k);
    sub.tensor_scale = q.tensor_scale;
    const int64_t sc = q.scale_cols();
    for (size_t i = 0; i < rows_.size(); ++i) {
      std::memcpy(&sub.codes[i * size_t(k)], &q.codes[size_t(rows_[i] * k)], size_t(k));
      std::memcpy(&sub.scales[i * size_t(sc)], &q.scales[size_t(rows_[i] * sc)], size_t(sc));
    }
    ref_.resize(size_t(kRefRows) * rows_.size());
    abs_sum_.resize(ref_.size());
    w4a8_linear_reference(sub, xc_.data(), xs_.data(), kRefRows, ref_.data(), abs_sum_.data());
    y_ = DeviceBuffer(size_t(kRefRows * n) * 2, "test y");
  }

  // Runs `kernel` for the first m tokens (poisoned output) and checks the bound (header).
  void check(LinearKernel& kernel, int64_t m, cudaStream_t stream) {
    SCOPED_TRACE(str(kernel.name(), " M=", m, " N=", n_, " K=", k_));
    fill_u16(y_.data(), kPoison, size_t(m * n_), stream);
    LinearArgs a;
    a.shape = {m, n_, k_};
    a.x = x_dev_.data();
    a.x_scale = xs_dev_.as<float>();
    a.w = blob_.data();
    a.y = y_.data();
    a.stream = stream;
    kernel.run(a);
    QF_CUDA_CHECK(cudaStreamSynchronize(stream));
    std::vector<uint16_t> y(static_cast<size_t>(m * n_));
    copy_to_host(y.data(), y_.data(), y.size() * 2, stream);
    int64_t unwritten = 0, non_finite = 0;
    for (uint16_t b : y) {
      if (b == kPoison) ++unwritten;
      else if ((b & 0x7F80) == 0x7F80) ++non_finite;
    }
    EXPECT_EQ(unwritten, 0);
    EXPECT_EQ(non_finite, 0);
    double err2 = 0, ref2 = 0;
    int bad = 0;
    for (int64_t i = 0; i < m; ++i)
      for (size_t j = 0; j < rows_.size(); ++j) {
        const double got = bf16_decode(y[size_t(i * n_ + rows_[j])]);
        const double ref = ref_[size_t(i) * rows_.size() + j];
        const double bound = std::ldexp(std::max(std::fabs(got), std::fabs(ref)), -8) +
                             std::ldexp(double(abs_sum_[size_t(i) * rows_.size() + j]), -12);
        err2 += (got - ref) * (got - ref);
        ref2 += ref * ref;
        if (!(std::fabs(got - ref) <= bound) && ++bad <= 5)
          ADD_FAILURE() << "y[" << i << ", " << rows_[j] << "] = " << got << ", twin " << ref << ", bound " << bound;
      }
    EXPECT_EQ(bad, 0);
    EXPECT_LT(std::sqrt(err2 / std::max(ref2, 1e-300)), 5e-3);
  }

 private:
  int64_t n_, k_;
  DeviceBuffer blob_, x_dev_, xs_dev_, y_;
  std::vector<uint8_t> xc_;
  std::vector<float> xs_;
  std::vector<int64_t> rows_;
  std::vector<float> ref_, abs_sum_;
};

TEST(W4a8Gemm, BothPathsMatchTheTwinAtRealShapes) {
  QF_REQUIRE_GPU();
  const uint64_t seed = test_seed();
  SCOPED_TRACE(str("seed=", seed, " (QF_TEST_SEED repeats it)"));
  Stream stream;
  LinearRegistry registry;
  LinearKernel* gemv = registry.find("w4a8_gemv");
  LinearKernel* big = registry.find("w4a8_dequant_cublas");
  LinearKernel* wg = registry.find("w4a8_gemv_wgmma");
  ASSERT_TRUE(gemv && big && wg);
  std::vector<GemmLayerShape> shapes;
  for (const char* model : {"llama2-7b", "llama3-8b", "llama2-70b"})
    for (const GemmLayerShape& s : llama_layer_shapes(model)) shapes.push_back(s);
  shapes.push_back({"odd", "ragged", 200, 576});  // the default model's width: a 64-wide last group
  for (const GemmLayerShape& s : shapes) {
    SCOPED_TRACE(str(s.model, " ", s.layer));
    W4a8Case c(s.n, s.k, seed ^ uint64_t(s.n * 31 + s.k), stream);
    for (int64_t m : {1, 3, 8, 16}) c.check(*gemv, m, stream);
    for (int64_t m : {1, 3, 8}) c.check(*wg, m, stream);
    if (big->supports({1, s.n, s.k}))
      for (int64_t m : {1, 16, 64, 300}) c.check(*big, m, stream);
  }
}

}  // namespace
}  // namespace qf::cuda
