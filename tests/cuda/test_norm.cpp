// RMSNorm and the fused residual-add + RMSNorm against the CPU twins cpu::rmsnorm /
// cpu::add_rmsnorm, at the hidden sizes of SmolLM2-135M (576), Llama-2-7B / Llama-3-8B (4096)
// and Llama-2-70B (8192), plus a single-vector row (8).
//
// Error bound. Both sides compute the same FP32 formula from the same BF16 inputs; the GPU sums
// squares in FP32 in a tree (the CPU in double), so inv_rms differs by a few FP32 ulps and y,
// before its rounding to BF16, by ~1e-6 relative. The BF16 result is then within half a BF16
// ulp (<= 2^-8 relative) of the CPU's FP32 value, plus that 1e-6: every element must be within
// 2^-7 relative (twice the rounding bound). A wrong weight index (weights ~ N(1, 0.2)), a wrong
// eps or mean would be off by percents.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "backends/cpu/ops.h"
#include "backends/cuda/device.h"
#include "backends/cuda/norm.h"
#include "gpu_test.h"
#include "kernel_test_util.h"

namespace qf::testing {
namespace {

constexpr float kEps = 1e-5f;

// Every element of got (bf16) within 2^-7 relative of ref (float), and none left unwritten.
void expect_within_bf16_rounding(const std::vector<bf16>& got, const std::vector<float>& ref, const char* what) {
  ASSERT_EQ(got.size(), ref.size());
  int64_t bad = 0, first_bad = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const float g = bf16_to_float(got[i]);
    const bool ok = std::isfinite(g) && std::fabs(g - ref[i]) <= std::ldexp(std::fabs(ref[i]), -7) + 1e-30f;
    if (!ok && bad++ == 0) first_bad = int64_t(i);
  }
  EXPECT_EQ(bad, 0) << what << ": first bad element " << first_bad << " got "
                    << (first_bad >= 0 ? bf16_to_float(got[size_t(first_bad)]) : 0.f) << " want "
                    << (first_bad >= 0 ? ref[size_t(first_bad)] : 0.f);
}

std::vector<float> random_weight(int64_t dim, std::mt19937_64& rng) {
  std::normal_distribution<float> nd(1.0f, 0.2f);
  std::vector<float> w(static_cast<size_t>(dim));
  for (auto& x : w) x = nd(rng);
  return w;
}

struct NormCase {
  int64_t rows, dim;
};
const NormCase kCases[] = {{1, 576}, {33, 576}, {7, 4096}, {257, 4096}, {3, 8192}, {5, 8}};

TEST(RmsNorm, MatchesCpuTwin) {
  QF_REQUIRE_GPU();
  cuda::Stream stream;
  for (const auto& c : kCases) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("rows " + std::to_string(c.rows) + " dim " + std::to_string(c.dim) + " seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const auto x = random_bf16(size_t(c.rows * c.dim), rng, 3.0f, 0.5f);
    const auto w = random_weight(c.dim, rng);
    DeviceArray<bf16> dx(x, stream), dy(x.size());
    DeviceArray<float> dw(w, stream);
    dy.poison(stream);
    cuda::rmsnorm(dx.get(), c.rows, c.dim, dw.get(), kEps, dy.get(), stream);
    std::vector<float> ref(x.size());
    cpu::rmsnorm(to_float(x).data(), c.rows, c.dim, w.data(), kEps, ref.data());
    expect_within_bf16_rounding(dy.download(stream), ref, "y");
    // In place (y aliases x).
    cuda::rmsnorm(dx.get(), c.rows, c.dim, dw.get(), kEps, dx.get(), stream);
    expect_within_bf16_rounding(dx.download(stream), ref, "y in place");
  }
}

TEST(AddRmsNorm, Bf16ResidualMatchesCpuTwin) {
  QF_REQUIRE_GPU();
  cuda::Stream stream;
  for (const auto& c : kCases) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("rows " + std::to_string(c.rows) + " dim " + std::to_string(c.dim) + " seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const auto res = random_bf16(size_t(c.rows * c.dim), rng, 2.0f);
    const auto delta = random_bf16(res.size(), rng, 1.0f, -0.3f);
    const auto w = random_weight(c.dim, rng);
    DeviceArray<bf16> dres(res, stream), ddelta(delta, stream), dy(res.size());
    DeviceArray<float> dw(w, stream);
    dy.poison(stream);
    cuda::add_rmsnorm(dres.get(), ddelta.get(), c.rows, c.dim, dw.get(), kEps, dy.get(), stream);
    const auto res_gpu = dres.download(stream);
    const auto y_gpu = dy.download(stream);

    // The residual: the FP32 sum of two BF16 values (exact) rounded to BF16, bit for bit.
    std::vector<float> res_cpu = to_float(res), y_cpu(res.size());
    cpu::add_rmsnorm(res_cpu.data(), to_float(delta).data(), c.rows, c.dim, w.data(), kEps, y_cpu.data());
    int64_t residual_mismatches = 0;
    for (size_t i = 0; i < res.size(); ++i)
      residual_mismatches += bf16_bits(res_gpu[i]) != bf16_bits(float_to_bf16(res_cpu[i]));
    EXPECT_EQ(residual_mismatches, 0);
    // y normalises the stored (rounded) residual: compare with the twin's norm of exactly that.
    std::vector<float> y_of_stored(res.size());
    cpu::rmsnorm(to_float(res_gpu).data(), c.rows, c.dim, w.data(), kEps, y_of_stored.data());
    expect_within_bf16_rounding(y_gpu, y_of_stored, "y");
    // ... and stays close to the FP32 engine's y (the residual's rounding: ~2^-9 relative).
    const ErrorStats e = compare(to_float(y_gpu), y_cpu);
    EXPECT_LT(e.rel_fro, 5e-3) << describe(e);
  }
}

// Inputs of the FP32-residual forms: an FP32 residual, a BF16 delta, norm weights; and the CPU
// twin's results (the residual after the add, the normalised rows).
struct Fp32ResidualCase {
  std::vector<float> res;
  std::vector<bf16> delta;
  std::vector<float> w, res_cpu, y_cpu;
  Fp32ResidualCase(const NormCase& c, uint64_t seed) {
    std::mt19937_64 rng(seed);
    res.resize(static_cast<size_t>(c.rows * c.dim));
    std::normal_distribution<float> nd(0.0f, 2.0f);
    for (auto& x : res) x = nd(rng);
    delta = random_bf16(res.size(), rng);
    w = random_weight(c.dim, rng);
    res_cpu = res;
    y_cpu.resize(res.size());
    cpu::add_rmsnorm(res_cpu.data(), to_float(delta).data(), c.rows, c.dim, w.data(), kEps, y_cpu.data());
  }
};

TEST(AddRmsNorm, Fp32ResidualMatchesCpuTwin) {
  QF_REQUIRE_GPU();
  cuda::Stream stream;
  for (const auto& c : kCases) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("rows " + std::to_string(c.rows) + " dim " + std::to_string(c.dim) + " seed " + std::to_string(seed));
    const Fp32ResidualCase in(c, seed);
    DeviceArray<float> dres(in.res, stream), dw(in.w, stream);
    DeviceArray<bf16> ddelta(in.delta, stream), dy(in.res.size());
    dy.poison(stream);
    cuda::add_rmsnorm(dres.get(), ddelta.get(), c.rows, c.dim, dw.get(), kEps, dy.get(), stream);
    EXPECT_EQ(dres.download(stream), in.res_cpu) << "FP32 residual: the same single addition on both sides";
    expect_within_bf16_rounding(dy.download(stream), in.y_cpu, "y");
  }
}

// The w4a8 engine's fused form: the same FP32 values quantized per token to FP8 in the kernel.
TEST(AddRmsNorm, Fp8OutputMatchesCpuTwinQuantized) {
  QF_REQUIRE_GPU();
  cuda::Stream stream;
  for (const auto& c : kCases) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("rows " + std::to_string(c.rows) + " dim " + std::to_string(c.dim) + " seed " + std::to_string(seed));
    const Fp32ResidualCase in(c, seed);
    DeviceArray<float> dres(in.res, stream), dw(in.w, stream), ds(static_cast<size_t>(c.rows));
    DeviceArray<bf16> ddelta(in.delta, stream);
    DeviceArray<uint8_t> dq(in.res.size());
    QF_CUDA_CHECK(cudaMemsetAsync(dq.get(), 0x7F, in.res.size(), stream));  // FP8 NaN: never written by the kernel
    cuda::add_rmsnorm_fp8(dres.get(), ddelta.get(), c.rows, c.dim, dw.get(), kEps,
                          reinterpret_cast<__nv_fp8_e4m3*>(dq.get()), ds.get(), stream);
    EXPECT_EQ(dres.download(stream), in.res_cpu);
    expect_fp8_token_rows(dq.download(stream), ds.download(stream), in.y_cpu, c.rows, c.dim);
  }
}

TEST(RmsNorm, RejectsBadShapes) {
  auto* p = reinterpret_cast<bf16*>(256);
  const float* w = reinterpret_cast<const float*>(256);
  EXPECT_THROW(cuda::rmsnorm(p, 1, 100, w, kEps, p, nullptr), Error);      // not a multiple of 8
  EXPECT_THROW(cuda::rmsnorm(p, 1, 65536, w, kEps, p, nullptr), Error);    // above 32768
  EXPECT_THROW(cuda::rmsnorm(p + 1, 1, 64, w, kEps, p, nullptr), Error);  // misaligned
}

}  // namespace
}  // namespace qf::testing
