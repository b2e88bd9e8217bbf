// The CUDA linear kernels against their CPU twin (cpu::linear, the oracle) at the layer shapes of
// Llama-2-7B, Llama-3-8B and Llama-2-70B and at awkward shapes, on fresh random inputs, with the
// output poisoned before every run. And the registry's per-shape choice (no GPU needed).
//
// Error bounds (BF16 output, FP32 accumulation):
//   * per element: |y - ref| <= 2^-8 max(|y|, |ref|) + 2^-10 rms(ref). The first term is the
//     rounding of y to BF16 (8 significant bits: at most half a unit in the last place, 2^-8 of
//     the value). The second covers FP32 accumulation in a different order than the reference:
//     about sqrt(K) 2^-24 |x||w| per element, i.e. ~2^-24 rms(ref) for random data, so 2^-10 is a
//     margin of ~2^14; yet a single missing or doubled product x_k w_k (about rms(ref)/sqrt(K),
//     >= 0.6% of rms for K <= 28672) exceeds it, so index errors cannot hide in it.
//   * over the whole output: ||y - ref|| / ||ref|| < 5e-3. BF16 rounding alone gives ~1.2e-3-1.7e-3
//     (a uniform error of half a step, a step being 2^-7..2^-8 of the value); a whole missing
//     16-byte chunk of K (8 products) per output gives >= 1.7e-2 at K = 28672.
//   * NaN or Inf anywhere fails, and so does any element left with its poison.
// The reference is computed once per shape for 64 rows; the GEMV and cuBLAS results for M rows
// are compared with its first M rows (cpu::linear promises a row depends only on its own x row).
//
// Seeds: fresh each run (printed on failure); QF_TEST_SEED=<n> repeats a run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/gemm.h"
#include "backends/cuda/activation.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device.h"
#include "backends/cuda/gemv.h"
#include "backends/cuda/linear.h"
#include "backends/cuda/linear_bench.h"
#include "backends/cuda/random.h"
#include "core/error.h"
#include "formats/bf16.h"
#include "formats/fp8.h"
#include "gpu_test.h"

namespace qf::cuda {
namespace {

constexpr uint16_t kPoison = 0x7FC1;  // a quiet BF16 NaN no kernel produces by itself
constexpr int64_t kRefRows = 64;
const std::vector<int64_t> kBatches = {1, 2, 3, 4, 7, 8, 16, 64};

uint64_t test_seed() {
  if (const char* s = std::getenv("QF_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  static const uint64_t seed = std::random_device{}();
  return seed;
}

struct Bound {
  double element_rel;      // times max(|y|, |ref|)
  double element_rms;      // times rms(ref); < 0: no per-element check
  double frobenius_rel;
};
constexpr Bound kBf16Bound{1.0 / 256, 1.0 / 1024, 5e-3};

// Compares y (BF16 bits, `rows` x n) with ref (FP32, at least `rows` x n); checks that the rows
// from `rows` to kRefRows still hold the poison (nothing written past M).
void expect_close(const char* label, const std::vector<uint16_t>& y, const std::vector<float>& ref, int64_t rows,
                  int64_t n, int64_t k, const Bound& bound) {
  const int64_t count = rows * n;
  double ref2 = 0;
  for (int64_t i = 0; i < count; ++i) ref2 += double(ref[i]) * ref[i];
  ASSERT_GT(ref2, 0.0) << "the reference is all zeros: the test inputs are not random";
  const double rms = std::sqrt(ref2 / count);
  double err2 = 0, max_abs = 0;
  int64_t nonfinite = 0, bad = 0, first_bad = -1;
  for (int64_t i = 0; i < count; ++i) {
    const float v = bf16_decode(y[i]);
    if (!std::isfinite(v)) {
      if (nonfinite++ == 0) ADD_FAILURE() << "non-finite output (bits 0x" << std::hex << y[i] << std::dec << ") at row "
                                          << i / n << " col " << i % n << (y[i] == kPoison ? " (never written)" : "");
      continue;
    }
    const double e = double(v) - ref[i];
    err2 += e * e;
    max_abs = std::max(max_abs, std::abs(e));
    if (bound.element_rms >= 0) {
      const double tol = bound.element_rel * std::max<double>(std::abs(v), std::abs(ref[i])) + bound.element_rms * rms;
      if (std::abs(e) > tol && bad++ == 0) first_bad = i;
    }
  }
  EXPECT_EQ(nonfinite, 0);
  const double rel = std::sqrt(err2 / ref2);
  EXPECT_LT(rel, bound.frobenius_rel) << "relative Frobenius error; max |error| " << max_abs << ", rms(ref) " << rms;
  const int64_t fb = std::max<int64_t>(first_bad, 0);
  EXPECT_EQ(bad, 0) << bad << " elements outside the per-element bound; the first at row " << fb / n << " col "
                    << fb % n << ": y " << bf16_decode(y[fb]) << ", ref " << ref[fb] << " (rms(ref) " << rms << ")";
  int64_t overrun = 0;
  for (size_t i = count; i < y.size(); ++i) overrun += y[i] != kPoison;
  EXPECT_EQ(overrun, 0) << "elements written past row " << rows;
  std::printf("    %-18s N=%-6lld K=%-6lld M=%-3lld rel.err %.2e  max|err| %.3e  rms(ref) %.3e\n", label,
              static_cast<long long>(n), static_cast<long long>(k), static_cast<long long>(rows), rel, max_abs, rms);
}

std::vector<uint16_t> download_u16(const DeviceBuffer& b, size_t count, cudaStream_t s) {
  std::vector<uint16_t> h(count);
  copy_to_host(h.data(), b.data(), count * 2, s);
  return h;
}

// BF16 x BF16 kernels (gemv_bf16, cublaslt_bf16) at weight shape [n, k] against cpu::linear.
void check_bf16_kernels(int64_t n, int64_t k, const std::vector<int64_t>& batches) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(str("N=", n, " K=", k, " seed=", seed, " (QF_TEST_SEED repeats it)"));
  Stream stream;
  LinearRegistry registry;
  DeviceBuffer w(size_t(n * k) * 2, "W"), x(size_t(kRefRows * k) * 2, "x"), y(size_t(kRefRows * n) * 2, "y");
  fill_random(w.data(), RandomType::bf16, size_t(n * k), RandomSpec::normal_with(0.f, 0.05f), seed, stream);
  fill_random(x.data(), RandomType::bf16, size_t(kRefRows * k), RandomSpec::normal_with(0.3f, 1.f), seed + 1, stream);

  const std::vector<uint16_t> w_host = download_u16(w, size_t(n * k), stream);
  const std::vector<uint16_t> x_host = download_u16(x, size_t(kRefRows * k), stream);
  std::vector<float> x_f32(x_host.size()), ref(size_t(kRefRows * n));
  for (size_t i = 0; i < x_host.size(); ++i) x_f32[i] = bf16_decode(x_host[i]);
  cpu::linear(x_f32.data(), kRefRows, k, w_host.data(), DType::BF16, n, nullptr, ref.data());

  for (const char* name : {"gemv_bf16", "gemv_bf16_v2", "cublaslt_bf16"}) {
    LinearKernel* kernel = registry.find(name);
    ASSERT_NE(kernel, nullptr) << name;
    for (int64_t m : batches) {
      if (!kernel->supports({m, n, k})) continue;
      SCOPED_TRACE(str(name, " M=", m));
      fill_u16(y.data(), kPoison, size_t(kRefRows * n), stream);
      LinearArgs a;
      a.shape = {m, n, k};
      a.x = x.data();
      a.w = w.data();
      a.y = y.data();
      a.stream = stream;
      kernel->run(a);
      QF_CUDA_CHECK(cudaStreamSynchronize(stream));
      expect_close(name, download_u16(y, size_t(kRefRows * n), stream), ref, m, n, k, kBf16Bound);
    }
  }
}

// The linear layers of the three benchmark models (the benchmark's own shape table).
std::vector<GemmLayerShape> real_shapes() {
  std::vector<GemmLayerShape> all;
  for (const std::string& model : known_gemm_models())
    for (const GemmLayerShape& s : llama_layer_shapes(model)) all.push_back(s);
  return all;
}

class LinearRealShapes : public ::testing::TestWithParam<GemmLayerShape> {};

TEST_P(LinearRealShapes, Bf16KernelsMatchTheCpuTwin) {
  QF_REQUIRE_GPU();
  check_bf16_kernels(GetParam().n, GetParam().k, kBatches);
}

// FP8 E4M3 x FP8 E4M3 with per-tensor scales against cpu::linear on the decoded values (every
// product of two E4M3 values is exact in FP32, so the reference differs only in summation order).
TEST_P(LinearRealShapes, Fp8KernelsMatchTheCpuTwinOnDecodedInputs) {
  QF_REQUIRE_GPU();
  const int64_t n = GetParam().n, k = GetParam().k;
  const uint64_t seed = test_seed();
  SCOPED_TRACE(str("N=", n, " K=", k, " seed=", seed));
  Stream stream;
  LinearRegistry registry;
  DeviceBuffer w(size_t(n * k), "W fp8"), x(size_t(kRefRows * k), "x fp8"), y(size_t(kRefRows * n) * 2, "y"),
      scales(8 * sizeof(float), "scales");
  // Non-trivial scales, so that a scale applied twice, to the wrong operand or not at all shows.
  const float host_scales[2] = {0.75f, 0.0371f};  // x, W
  // x's scale at float 0, W's at float 4: cuBLASLt needs 16-byte aligned scale pointers.
  const float scale_buffer[8] = {host_scales[0], 0, 0, 0, host_scales[1], 0, 0, 0};
  copy_to_device(scales.data(), scale_buffer, sizeof scale_buffer, stream);
  fill_random(w.data(), RandomType::fp8_e4m3, size_t(n * k), RandomSpec::normal_with(0.f, 1.f), seed + 2, stream);
  fill_random(x.data(), RandomType::fp8_e4m3, size_t(kRefRows * k), RandomSpec::normal_with(0.2f, 2.f), seed + 3, stream);

  std::vector<uint8_t> w8(size_t(n * k)), x8(size_t(kRefRows * k));
  copy_to_host(w8.data(), w.data(), w8.size(), stream);
  copy_to_host(x8.data(), x.data(), x8.size(), stream);
  std::vector<float> w_f32(w8.size()), x_f32(x8.size()), ref(size_t(kRefRows * n));
  for (size_t i = 0; i < w8.size(); ++i) w_f32[i] = fp8_e4m3_decode(w8[i]);
  for (size_t i = 0; i < x8.size(); ++i) x_f32[i] = fp8_e4m3_decode(x8[i]);
  cpu::linear(x_f32.data(), kRefRows, k, w_f32.data(), DType::F32, n, nullptr, ref.data());
  for (float& r : ref) r *= host_scales[0] * host_scales[1];

  // cublaslt_fp8 promotes partial sums to FP32: the BF16 bounds hold. cublaslt_fp8_fast keeps
  // them in the tensor cores' narrower accumulator (about 14 bits retained, DeepSeek-V3 report
  // section 3.3.2): only a loose Frobenius bound that still catches layout and scale errors,
  // which are O(1).
  const std::pair<const char*, Bound> kernels[] = {{"cublaslt_fp8", kBf16Bound},
                                                   {"cublaslt_fp8_fast", Bound{0, -1, 5e-2}}};
  for (const auto& [name, bound] : kernels) {
    LinearKernel* kernel = registry.find(name);
    ASSERT_NE(kernel, nullptr) << name;
    for (int64_t m : kBatches) {
      SCOPED_TRACE(str(name, " M=", m));
      ASSERT_TRUE(kernel->supports({m, n, k}));
      fill_u16(y.data(), kPoison, size_t(kRefRows * n), stream);
      LinearArgs a;
      a.shape = {m, n, k};
      a.x = x.data();
      a.w = w.data();
      a.y = y.data();
      a.x_scale = scales.as<float>();
      a.w_scale = scales.as<float>() + 4;
      a.stream = stream;
      kernel->run(a);
      QF_CUDA_CHECK(cudaStreamSynchronize(stream));
      expect_close(name, download_u16(y, size_t(kRefRows * n), stream), ref, m, n, k, bound);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Llama, LinearRealShapes, ::testing::ValuesIn(real_shapes()),
                         [](const ::testing::TestParamInfo<GemmLayerShape>& p) {
                           std::string s = p.param.model + "_" + p.param.layer;
                           for (char& c : s)
                             if (c == '-') c = '_';
                           return s;
                         });

// Shapes that exercise the edges: N not a multiple of the 16-row tile, K not a multiple of the
// 32-wide step or of a whole group, tiny N, SmolLM2-135M's layers (K = 576 = 18 steps).
TEST(LinearOddShapes, Bf16KernelsMatchTheCpuTwin) {
  QF_REQUIRE_GPU();
  const std::vector<int64_t> batches = {1, 5, 8, 9, 16, 64};
  for (auto [n, k] : std::vector<std::pair<int64_t, int64_t>>{
           {1000, 1000}, {17, 8}, {4104, 4104}, {960, 576}, {576, 576}, {3072, 576}, {576, 1536}, {49152, 576}})
    check_bf16_kernels(n, k, batches);
}

// No atomics, a fixed summation order: two runs give the same bits (a race would not).
TEST(Gemv, IsDeterministic) {
  QF_REQUIRE_GPU();
  const int64_t n = 12288, k = 4096, m = 8;
  Stream stream;
  DeviceBuffer w(size_t(n * k) * 2, "W"), x(size_t(m * k) * 2, "x"), y(size_t(m * n) * 2, "y");
  fill_random(w.data(), RandomType::bf16, size_t(n * k), RandomSpec::normal_with(0.f, 0.05f), test_seed(), stream);
  fill_random(x.data(), RandomType::bf16, size_t(m * k), RandomSpec::normal_with(0.f, 1.f), test_seed() + 1, stream);
  for (auto* gemv : {&gemv_bf16, &gemv_bf16_v2}) {
    SCOPED_TRACE(gemv == &gemv_bf16 ? "gemv_bf16" : "gemv_bf16_v2");
    std::vector<uint16_t> first;
    for (int run = 0; run < 3; ++run) {
      fill_u16(y.data(), kPoison, size_t(m * n), stream);
      gemv(x.as<__nv_bfloat16>(), w.as<__nv_bfloat16>(), y.as<__nv_bfloat16>(), m, n, k, stream);
      std::vector<uint16_t> out = download_u16(y, size_t(m * n), stream);
      if (run == 0) first = out;
      else ASSERT_EQ(out, first) << "run " << run << " differs from run 0";
    }
  }
}

// The fused gate/up GEMV + SwiGLU against the unfused pair it replaces in the engine
// (gemv_bf16_v2 into [M, 2F], then silu_mul), both tested against their CPU twins elsewhere:
// the fused kernel sums the same tiles in the same order and rounds where the pair stores, so the
// outputs must be equal bit for bit. Real gate/up shapes (Llama-2-7B, Llama-3-8B, SmolLM2-135M),
// M = 1, 5, 8 (one batch tile) and 13 (two), the output poisoned first.
TEST(Gemv, SwiGluEqualsGemvThenSiluMul) {
  QF_REQUIRE_GPU();
  struct Shape {
    const char* name;
    int64_t f, k;
  };
  const Shape shapes[] = {{"llama2-7b", 11008, 4096}, {"llama3-8b", 14336, 4096}, {"smollm2-135m", 1536, 576}};
  Stream stream;
  uint64_t seed = test_seed();
  for (const Shape& sh : shapes) {
    for (const int64_t m : {1, 5, 8, 13}) {
      SCOPED_TRACE(std::string(sh.name) + " M=" + std::to_string(m));
      const int64_t n = 2 * sh.f;
      DeviceBuffer w(size_t(n * sh.k) * 2, "W"), x(size_t(m * sh.k) * 2, "x"), gu(size_t(m * n) * 2, "gate/up"),
          ref(size_t(m * sh.f) * 2, "act (unfused)"), act(size_t(m * sh.f) * 2, "act (fused)");
      fill_random(w.data(), RandomType::bf16, size_t(n * sh.k), RandomSpec::normal_with(0.f, 0.05f), ++seed, stream);
      fill_random(x.data(), RandomType::bf16, size_t(m * sh.k), RandomSpec::normal_with(0.f, 1.f), ++seed, stream);
      fill_u16(ref.data(), kPoison, size_t(m * sh.f), stream);
      fill_u16(act.data(), kPoison, size_t(m * sh.f), stream);
      gemv_bf16_v2(x.as<__nv_bfloat16>(), w.as<__nv_bfloat16>(), gu.as<__nv_bfloat16>(), m, n, sh.k, stream);
      silu_mul(gu.as<__nv_bfloat16>(), gu.as<__nv_bfloat16>() + sh.f, n, ref.as<__nv_bfloat16>(), sh.f, m, sh.f, stream);
      gemv_bf16_swiglu(x.as<__nv_bfloat16>(), w.as<__nv_bfloat16>(), act.as<__nv_bfloat16>(), m, sh.f, sh.k, stream);
      const std::vector<uint16_t> want = download_u16(ref, size_t(m * sh.f), stream);
      const std::vector<uint16_t> got = download_u16(act, size_t(m * sh.f), stream);
      int64_t poisoned = 0, differ = 0, nonzero = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        poisoned += got[i] == kPoison;
        differ += got[i] != want[i];
        nonzero += (got[i] & 0x7FFF) != 0;
      }
      EXPECT_EQ(poisoned, 0) << "outputs left unwritten";
      EXPECT_EQ(differ, 0) << "of " << got.size() << " outputs differ from gemv_bf16_v2 + silu_mul";
      EXPECT_GT(nonzero, int64_t(got.size()) / 2) << "the outputs are mostly zero: the test would not see a wrong sum";
    }
  }
  EXPECT_THROW(gemv_bf16_swiglu(nullptr, nullptr, nullptr, 1, 24, 64, nullptr), Error);  // F not a multiple of 16
}

// Host-side argument checks: they fire before any launch, so these run without a GPU.
TEST(Gemv, RejectsUnsupportedShapesAndMisalignedOperands) {
  const auto* aligned = reinterpret_cast<const __nv_bfloat16*>(uintptr_t{4096});
  const auto* misaligned = reinterpret_cast<const __nv_bfloat16*>(uintptr_t{4098});
  auto* out = reinterpret_cast<__nv_bfloat16*>(uintptr_t{8192});
  EXPECT_FALSE(gemv_bf16_supports(17, 16, 16));
  EXPECT_FALSE(gemv_bf16_supports(0, 16, 16));
  EXPECT_FALSE(gemv_bf16_supports(1, 16, 12));
  EXPECT_TRUE(gemv_bf16_supports(16, 1, 8));
  EXPECT_THROW(gemv_bf16(aligned, aligned, out, 17, 16, 16, nullptr), Error);
  EXPECT_THROW(gemv_bf16(aligned, aligned, out, 1, 16, 12, nullptr), Error);
  EXPECT_THROW(gemv_bf16(misaligned, aligned, out, 1, 16, 16, nullptr), Error);
  EXPECT_THROW(gemv_bf16(aligned, misaligned, out, 1, 16, 16, nullptr), Error);
  EXPECT_THROW(gemv_bf16_v2(aligned, aligned, out, 17, 16, 16, nullptr), Error);
  EXPECT_THROW(gemv_bf16_v2(misaligned, aligned, out, 1, 16, 16, nullptr), Error);
}

TEST(LinearRegistry, SelectsTheGemvForDecodeAndCublasOtherwise) {
  LinearRegistry registry;  // creates nothing on the GPU: runs without one
  const LinearKey bf16{bf16_format(), bf16_format(), Backend::cuda};
  const LinearKey fp8{fp8_tensor_format(), fp8_tensor_format(), Backend::cuda};
  EXPECT_EQ(registry.select(bf16, {1, 4096, 4096}).name(), "gemv_bf16_v2");
  EXPECT_EQ(registry.select(bf16, {8, 4096, 4096}).name(), "gemv_bf16_v2");
  EXPECT_EQ(registry.select(bf16, {9, 4096, 4096}).name(), "cublaslt_bf16");
  EXPECT_EQ(registry.select(bf16, {4096, 4096, 4096}).name(), "cublaslt_bf16");
  // K not a multiple of 8: the GEMV cannot run it, cuBLASLt can.
  EXPECT_EQ(registry.select(bf16, {1, 4096, 4095}).name(), "cublaslt_bf16");
  // The fast-accumulation FP8 GEMM is a benchmark baseline, never selected.
  EXPECT_EQ(registry.select(fp8, {1, 4096, 4096}).name(), "cublaslt_fp8");
  EXPECT_EQ(registry.select(fp8, {4096, 4096, 4096}).name(), "cublaslt_fp8");
  EXPECT_THROW(registry.select(fp8, {1, 4096, 4095}), Error);

  const LinearKey int4{Format::parse("int4:g128"), fp8_tensor_format(), Backend::cuda};
  try {
    registry.select(int4, {1, 4096, 4096});
    FAIL() << "selected a kernel for int4 weights";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("int4:g128"), std::string::npos) << msg;
    EXPECT_NE(msg.find("M=1 N=4096 K=4096"), std::string::npos) << msg;
  }
  // Names are unique (the benchmark and --kernels address kernels by name).
  std::vector<std::string> names;
  for (LinearKernel* k : registry.kernels()) names.emplace_back(k->name());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(std::adjacent_find(names.begin(), names.end()), names.end());
  EXPECT_EQ(registry.find("no_such_kernel"), nullptr);
}

TEST(GemmShapes, AreDerivedFromTheModelsHyperParameters) {
  const auto s7 = llama_layer_shapes("llama2-7b");
  ASSERT_EQ(s7.size(), 4u);
  EXPECT_EQ(s7[0].n, 12288);  // q, k, v: 3 x 32 heads x 128
  EXPECT_EQ(s7[0].k, 4096);
  EXPECT_EQ(s7[2].n, 22016);  // gate and up: 2 x 11008
  EXPECT_EQ(s7[3].k, 11008);
  const auto s8 = llama_layer_shapes("llama3-8b");
  EXPECT_EQ(s8[0].n, 6144);   // 32 query + 2 x 8 KV heads, x 128
  EXPECT_EQ(s8[2].n, 28672);
  const auto s70 = llama_layer_shapes("llama2-70b");
  EXPECT_EQ(s70[0].n, 10240);  // 64 query + 2 x 8 KV heads, x 128
  EXPECT_EQ(s70[1].n, 8192);
  EXPECT_EQ(s70[2].n, 57344);
  EXPECT_EQ(s70[3].k, 28672);
  EXPECT_THROW(llama_layer_shapes("llama9-1t"), Error);
}

}  // namespace
}  // namespace qf::cuda
