// SiLU(gate) * up against the CPU twin cpu::silu_mul, at the MLP widths of SmolLM2-135M (1536),
// Llama-2-7B (11008) and Llama-3-8B (14336), from the fused gate/up layout [rows, 2n] and from
// separate buffers, in place too.
//
// Error bound: the same FP32 formula on both sides; CUDA's expf may differ from the CPU's by an
// ulp or two, so before the BF16 rounding the values agree to ~1e-6 relative, and the BF16
// result is within half a BF16 ulp (<= 2^-8 relative) of the CPU's FP32 value: every element
// must be within 2^-7 relative (plus 1e-30 for exact zeros).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backends/cpu/ops.h"
#include "backends/cuda/activation.h"
#include "backends/cuda/device.h"
#include "gpu_test.h"
#include "kernel_test_util.h"

namespace qf::testing {
namespace {

// CPU reference of rows x n from the gate/up rows of `in` (row stride in_stride, up at +up_offset).
std::vector<float> cpu_reference(const std::vector<bf16>& in, int64_t rows, int64_t n, int64_t in_stride,
                                 int64_t up_offset) {
  std::vector<float> ref(static_cast<size_t>(rows * n));
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<float> g(static_cast<size_t>(n)), u(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) {
      g[size_t(j)] = bf16_to_float(in[size_t(r * in_stride + j)]);
      u[size_t(j)] = bf16_to_float(in[size_t(r * in_stride + up_offset + j)]);
    }
    cpu::silu_mul(g.data(), u.data(), n, ref.data() + r * n);
  }
  return ref;
}

void expect_rows_close(const std::vector<bf16>& out, int64_t rows, int64_t n, int64_t out_stride,
                       const std::vector<float>& ref) {
  int64_t bad = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < n; ++j) {
      const float g = bf16_to_float(out[size_t(r * out_stride + j)]), want = ref[size_t(r * n + j)];
      bad += !(std::isfinite(g) && std::fabs(g - want) <= std::ldexp(std::fabs(want), -7) + 1e-30f);
    }
  }
  EXPECT_EQ(bad, 0) << "elements off by more than BF16 rounding";
}

TEST(SiluMul, FusedGateUpLayout) {
  QF_REQUIRE_GPU();
  cuda::Stream stream;
  for (const int64_t n : {int64_t(1536), int64_t(11008), int64_t(14336)})
    for (const int64_t rows : {int64_t(1), int64_t(5), int64_t(64)}) {
      const uint64_t seed = fresh_seed();
      SCOPED_TRACE("n " + std::to_string(n) + " rows " + std::to_string(rows) + " seed " + std::to_string(seed));
      std::mt19937_64 rng(seed);
      // Gates ~ N(0, 4): both tails of silu (g -> 0 for g << 0, g for g >> 0).
      const auto gu = random_bf16(size_t(rows * 2 * n), rng, 4.0f);
      const int64_t out_stride = n + 8;  // 8 padding columns that must stay untouched
      DeviceArray<bf16> din(gu, stream), dout(size_t(rows * out_stride));
      dout.poison(stream);
      cuda::silu_mul(din.get(), din.get() + n, 2 * n, dout.get(), out_stride, rows, n, stream);
      const auto out = dout.download(stream);
      expect_rows_close(out, rows, n, out_stride, cpu_reference(gu, rows, n, 2 * n, n));
      for (int64_t r = 0; r < rows; ++r)
        EXPECT_EQ(count_poisoned(out, size_t(r * out_stride + n), size_t((r + 1) * out_stride)), 8) << "row " << r;
    }
}

TEST(SiluMul, SeparateBuffersInPlace) {
  QF_REQUIRE_GPU();
  cuda::Stream stream;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t rows = 3, n = 1536;
  const auto gate = random_bf16(size_t(rows * n), rng, 4.0f), up = random_bf16(size_t(rows * n), rng);
  DeviceArray<bf16> dg(gate, stream), du(up, stream);
  cuda::silu_mul(dg.get(), du.get(), n, dg.get(), n, rows, n, stream);  // out aliases gate
  std::vector<float> ref(static_cast<size_t>(rows * n));
  cpu::silu_mul(to_float(gate).data(), to_float(up).data(), rows * n, ref.data());
  expect_rows_close(dg.download(stream), rows, n, n, ref);
}

// The w4a8 engine's fused form: the FP32 products quantized per token to FP8 in the kernel.
TEST(SiluMul, Fp8OutputMatchesCpuTwinQuantized) {
  QF_REQUIRE_GPU();
  cuda::Stream stream;
  for (int64_t n : {1536, 11008, 14336, 28672}) {
    const int64_t rows = n > 14336 ? 3 : 9;
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("n " + std::to_string(n) + " seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const auto in = random_bf16(size_t(rows * 2 * n), rng, 2.0f);
    DeviceArray<bf16> din(in, stream);
    DeviceArray<uint8_t> dq(size_t(rows * n));
    DeviceArray<float> ds(static_cast<size_t>(rows));
    QF_CUDA_CHECK(cudaMemsetAsync(dq.get(), 0x7F, size_t(rows * n), stream));  // FP8 NaN: never written
    cuda::silu_mul_fp8(din.get(), din.get() + n, 2 * n, reinterpret_cast<__nv_fp8_e4m3*>(dq.get()), ds.get(), rows, n,
                       stream);
    expect_fp8_token_rows(dq.download(stream), ds.download(stream), cpu_reference(in, rows, n, 2 * n, n), rows, n);
  }
}

}  // namespace
}  // namespace qf::testing
