// RoPE on the GPU against the CPU twin (cpu::rope_cos_sin + cpu::rope_apply), both fed the
// runtime's inverse-frequency table (qf::rope_frequencies) for Llama-2-7B (theta 1e4, no
// scaling), Llama-3-8B (theta 5e5, llama3 scaling x8), SmolLM2-135M (theta 1e5, head dim 64)
// and a YaRN model (attention factor != 1), in place on q and k inside a fused QKV buffer.
//
// Expected agreement: the same float formula on the same float cos/sin (both rounded from
// double; CUDA's double sin/cos may differ from glibc's in the last double bit, which changes
// the float only when it sits on a rounding boundary, ~2^-29 of the time). The compilers may
// fuse a product and the sum into an FMA on either side (g++ does in cpu::rope_apply), so the
// float results may differ by a few ulps of the larger product: |error| <= 2^-20 (|lo| + |hi|)
// * attention_factor. After the BF16 rounding (half an ulp, <= 2^-8 relative) every element
// must be within 2^-7 |ref| + 2^-20 (|lo| + |hi|) * attention_factor, and the BF16 results are
// bit-identical except where a last-bit difference crosses a rounding boundary: at most 1 in
// 10^4 elements may differ. A wrong pairing, sign or position is off by O(1).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backends/cpu/rope.h"
#include "backends/cuda/device.h"
#include "backends/cuda/rope.h"
#include "gpu_test.h"
#include "io/model_config.h"
#include "kernel_test_util.h"
#include "runtime/rope_frequencies.h"

namespace qf::testing {
namespace {

struct RopeModel {
  const char* name;
  int heads, kv_heads, head_dim;
  double theta;
  RopeScaling scaling;
};

ModelConfig config_of(const RopeModel& m) {
  ModelConfig c;
  c.head_dim = m.head_dim;
  c.rope_theta = m.theta;
  c.rope_scaling = m.scaling;
  c.max_position_embeddings = 131072;
  return c;
}

RopeScaling llama3_scaling() {
  RopeScaling s;
  s.type = RopeScalingType::Llama3;
  s.factor = 8.0;
  s.low_freq_factor = 1.0;
  s.high_freq_factor = 4.0;
  s.original_max_position_embeddings = 8192;
  return s;
}

RopeScaling yarn_scaling() {
  RopeScaling s;
  s.type = RopeScalingType::Yarn;
  s.factor = 4.0;
  s.original_max_position_embeddings = 32768;
  return s;
}

void run_rope(const RopeModel& m, uint64_t seed) {
  SCOPED_TRACE(std::string(m.name) + " seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  cuda::Stream stream;
  const RopeFrequencies freq = rope_frequencies(config_of(m), 131072);
  // Positions: 0 (identity), the ends of the range, random ones, and a run of consecutive ones.
  std::vector<int32_t> pos{0, 1, 131071, 8191, 8192};
  std::uniform_int_distribution<int32_t> any(0, 131071);
  for (int i = 0; i < 100; ++i) pos.push_back(any(rng));
  for (int i = 0; i < 150; ++i) pos.push_back(4000 + i);
  const int n = int(pos.size());
  const int d = m.head_dim, half = d / 2;
  const int64_t stride = int64_t(m.heads + 2 * m.kv_heads) * d;  // fused [q | k | v] rows
  const auto qkv = random_bf16(size_t(n) * stride, rng, 2.0f);

  DeviceArray<bf16> dqkv(qkv, stream);
  DeviceArray<int32_t> dpos(pos, stream);
  DeviceArray<double> dfreq(freq.inv_freq, stream);
  cuda::rope_apply(dqkv.get(), stride, m.heads, dqkv.get() + int64_t(m.heads) * d, stride, m.kv_heads, d, dpos.get(),
                   n, dfreq.get(), freq.attention_factor, stream);
  const auto got = dqkv.download(stream);

  // CPU twin on float copies of q and k (each as its own [n, heads * d] matrix).
  std::vector<float> c(static_cast<size_t>(n) * half), s(size_t(n) * half);
  cpu::rope_cos_sin(pos.data(), n, freq.inv_freq.data(), half, freq.attention_factor, c.data(), s.data());
  const auto all = to_float(qkv);
  std::vector<float> ref = all;
  cpu::rope_apply(ref.data(), n, m.heads + m.kv_heads, d, stride, c.data(), s.data());  // q then k: contiguous heads

  int64_t differ = 0, beyond_rounding = 0, v_changed = 0;
  const int64_t rotated = int64_t(m.heads + m.kv_heads) * d;
  for (int i = 0; i < n; ++i)
    for (int64_t j = 0; j < stride; ++j) {
      const size_t at = size_t(i * stride + j);
      if (j >= rotated) {  // V: untouched, bit for bit
        v_changed += bf16_bits(got[at]) != bf16_bits(qkv[at]);
        continue;
      }
      const bf16 want = float_to_bf16(ref[at]);
      if (bf16_bits(got[at]) != bf16_bits(want)) {
        ++differ;
        const float g = bf16_to_float(got[at]);
        // The pair (lo, hi) this element was rotated from.
        const int64_t in_head = j % d, head_start = i * stride + (j - in_head);
        const int64_t lo_at = head_start + in_head % half, hi_at = lo_at + half;
        const double pair = std::fabs(all[size_t(lo_at)]) + std::fabs(all[size_t(hi_at)]);
        const double tol = std::ldexp(std::fabs(ref[at]), -7) + std::ldexp(pair, -20) * freq.attention_factor;
        beyond_rounding += !(std::fabs(g - ref[at]) <= tol);
      }
    }
  EXPECT_EQ(v_changed, 0) << "the V part of the rows was written";
  EXPECT_EQ(beyond_rounding, 0);
  EXPECT_LE(differ, int64_t(n) * rotated / 10000) << differ << " elements differ from the CPU in the last bit";
}

TEST(Rope, Llama2_7B) {
  QF_REQUIRE_GPU();
  run_rope({"llama2-7b", 32, 32, 128, 10000.0, {}}, fresh_seed());
}

TEST(Rope, Llama3_8B_Llama3Scaling) {
  QF_REQUIRE_GPU();
  run_rope({"llama3-8b", 32, 8, 128, 500000.0, llama3_scaling()}, fresh_seed());
}

TEST(Rope, SmolLM2_HeadDim64) {
  QF_REQUIRE_GPU();
  run_rope({"smollm2-135m", 9, 3, 64, 100000.0, {}}, fresh_seed());
}

TEST(Rope, YarnAttentionFactor) {
  QF_REQUIRE_GPU();
  const RopeModel m{"yarn-x4", 16, 4, 128, 1000000.0, yarn_scaling()};
  ASSERT_NE(rope_frequencies(config_of(m), 1).attention_factor, 1.0);
  run_rope(m, fresh_seed());
}

// Queries only (k = null) leave the K part alone.
TEST(Rope, QueriesOnly) {
  QF_REQUIRE_GPU();
  cuda::Stream stream;
  std::mt19937_64 rng(fresh_seed());
  const int heads = 4, kv = 2, d = 64, n = 3;
  const int64_t stride = int64_t(heads + 2 * kv) * d;
  const auto qkv = random_bf16(size_t(n) * stride, rng);
  std::vector<int32_t> pos{5, 6, 7};
  std::vector<double> inv_freq(d / 2);
  for (int j = 0; j < d / 2; ++j) inv_freq[size_t(j)] = std::pow(10000.0, -2.0 * j / d);
  DeviceArray<bf16> dqkv(qkv, stream);
  DeviceArray<int32_t> dpos(pos, stream);
  DeviceArray<double> dfreq(inv_freq, stream);
  cuda::rope_apply(dqkv.get(), stride, heads, nullptr, 0, 0, d, dpos.get(), n, dfreq.get(), 1.0, stream);
  const auto got = dqkv.download(stream);
  int64_t q_changed = 0, rest_changed = 0;
  for (int i = 0; i < n; ++i)
    for (int64_t j = 0; j < stride; ++j) {
      const bool changed = bf16_bits(got[size_t(i * stride + j)]) != bf16_bits(qkv[size_t(i * stride + j)]);
      (j < int64_t(heads) * d ? q_changed : rest_changed) += changed;
    }
  EXPECT_GT(q_changed, 0);
  EXPECT_EQ(rest_changed, 0);
}

}  // namespace
}  // namespace qf::testing
