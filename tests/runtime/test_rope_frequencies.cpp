// RoPE inverse frequencies for each rope_scaling kind, against the published definitions
// (HF transformers' modeling_rope_utils.py), written out independently here.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "core/error.h"
#include "runtime/rope_frequencies.h"

namespace qf {
namespace {

ModelConfig base_config(double theta, int64_t head_dim, int64_t max_pos) {
  ModelConfig c;
  c.architecture = "llama";
  c.head_dim = head_dim;
  c.rope_theta = theta;
  c.max_position_embeddings = max_pos;
  return c;
}

double plain(double theta, int64_t d, int64_t j) { return 1.0 / std::pow(theta, double(2 * j) / double(d)); }

TEST(RopeFrequencies, NoneIsThePowerSeries) {
  const auto c = base_config(10000.0, 64, 2048);
  const auto f = rope_frequencies(c, 100);
  ASSERT_EQ(f.inv_freq.size(), 32u);
  EXPECT_EQ(f.inv_freq[0], 1.0);
  for (int64_t j = 0; j < 32; ++j) EXPECT_NEAR(f.inv_freq[j], plain(10000.0, 64, j), 1e-15 * plain(10000.0, 64, j));
  EXPECT_EQ(f.attention_factor, 1.0);
}

TEST(RopeFrequencies, LinearDividesByFactor) {
  auto c = base_config(10000.0, 128, 4096);
  c.rope_scaling.type = RopeScalingType::Linear;
  c.rope_scaling.factor = 4.0;
  const auto f = rope_frequencies(c, 10);
  for (int64_t j = 0; j < 64; ++j) EXPECT_NEAR(f.inv_freq[j], plain(10000.0, 128, j) / 4.0, 1e-15);
}

TEST(RopeFrequencies, DynamicNtkChangesTheBaseOnlyPastTheTrainedLength) {
  auto c = base_config(10000.0, 64, 2048);
  c.rope_scaling.type = RopeScalingType::Dynamic;
  c.rope_scaling.factor = 2.0;
  const auto short_seq = rope_frequencies(c, 2048);
  for (int64_t j = 0; j < 32; ++j) EXPECT_NEAR(short_seq.inv_freq[j], plain(10000.0, 64, j), 1e-15);
  // L = 8192: base' = 10000 * (2 * 8192 / 2048 - 1)^(64 / 62) = 10000 * 7^(32/31).
  const double base2 = 10000.0 * std::pow(7.0, 64.0 / 62.0);
  const auto long_seq = rope_frequencies(c, 8192);
  for (int64_t j = 0; j < 32; ++j) EXPECT_NEAR(long_seq.inv_freq[j], plain(base2, 64, j), 1e-14);
  EXPECT_LT(long_seq.inv_freq[31], short_seq.inv_freq[31]);
}

TEST(RopeFrequencies, Llama3ScalesLowFrequenciesAndBlendsTheMiddleBand) {
  // Llama 3.1's values: theta 500000, head_dim 128, factor 8, low 1, high 4, old context 8192.
  auto c = base_config(500000.0, 128, 131072);
  c.rope_scaling.type = RopeScalingType::Llama3;
  c.rope_scaling.factor = 8.0;
  c.rope_scaling.low_freq_factor = 1.0;
  c.rope_scaling.high_freq_factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 8192;
  const auto f = rope_frequencies(c, 1);
  int kept = 0, divided = 0, blended = 0;
  for (int64_t j = 0; j < 64; ++j) {
    const double p = plain(500000.0, 128, j), wavelen = 2 * std::numbers::pi / p;
    if (wavelen < 8192.0 / 4.0) {  // high frequencies: unchanged
      EXPECT_NEAR(f.inv_freq[j], p, 1e-15 * p) << j;
      ++kept;
    } else if (wavelen > 8192.0 / 1.0) {  // low frequencies: interpolated by the factor
      EXPECT_NEAR(f.inv_freq[j], p / 8.0, 1e-15 * p) << j;
      ++divided;
    } else {  // in between: (1 - s) p / 8 + s p with s = (8192 / wavelen - 1) / (4 - 1)
      const double s = (8192.0 / wavelen - 1.0) / 3.0;
      EXPECT_NEAR(f.inv_freq[j], (1 - s) * p / 8.0 + s * p, 1e-15 * p) << j;
      EXPECT_LT(f.inv_freq[j], p);
      EXPECT_GT(f.inv_freq[j], p / 8.0);
      ++blended;
    }
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(blended, 0);
  for (int64_t j = 1; j < 64; ++j) EXPECT_LT(f.inv_freq[j], f.inv_freq[j - 1]) << "frequencies must decrease";
}

TEST(RopeFrequencies, FreqFactorsDivideAndReplaceLlama3) {
  auto c = base_config(500000.0, 8, 131072);
  c.rope_scaling.type = RopeScalingType::Llama3;
  c.rope_scaling.factor = 8.0;
  c.rope_scaling.original_max_position_embeddings = 8192;
  c.rope_freq_factors = {1.0f, 2.0f, 4.0f, 8.0f};
  const auto f = rope_frequencies(c, 1);
  for (int64_t j = 0; j < 4; ++j) EXPECT_NEAR(f.inv_freq[j], plain(500000.0, 8, j) / c.rope_freq_factors[j], 1e-15);
  c.rope_freq_factors = {1.0f, 2.0f};  // wrong count
  EXPECT_THROW(rope_frequencies(c, 1), Error);
}

TEST(RopeFrequencies, YarnRampsBetweenExtrapolationAndInterpolation) {
  auto c = base_config(10000.0, 64, 32768);
  c.rope_scaling.type = RopeScalingType::Yarn;
  c.rope_scaling.factor = 8.0;
  c.rope_scaling.original_max_position_embeddings = 4096;
  const auto f = rope_frequencies(c, 1);
  // Correction dims: d * ln(L0 / (2π r)) / (2 ln base) for r = beta_fast 32 and beta_slow 1,
  // floored / ceiled: the ramp runs from `low` to `high` over the dimension index j.
  auto dim_of = [](double r) { return 64.0 * std::log(4096.0 / (r * 2 * std::numbers::pi)) / (2 * std::log(10000.0)); };
  const double low = std::max(0.0, std::floor(dim_of(32.0))), high = std::min(63.0, std::ceil(dim_of(1.0)));
  ASSERT_LT(low, high);
  for (int64_t j = 0; j < 32; ++j) {
    const double p = plain(10000.0, 64, j);
    const double ramp = std::clamp((j - low) / (high - low), 0.0, 1.0);
    const double expected = p / 8.0 * ramp + p * (1.0 - ramp);
    EXPECT_NEAR(f.inv_freq[j], expected, 1e-15 * p) << j;
  }
  EXPECT_NEAR(f.inv_freq[0], 1.0, 1e-15) << "the fastest rotations are extrapolated (unchanged)";
  EXPECT_NEAR(f.inv_freq[31], plain(10000.0, 64, 31) / 8.0, 1e-18) << "the slowest are interpolated";
  EXPECT_NEAR(f.attention_factor, 0.1 * std::log(8.0) + 1.0, 1e-15);
  c.rope_scaling.attention_factor = 1.5;
  EXPECT_EQ(rope_frequencies(c, 1).attention_factor, 1.5);
}

TEST(RopeFrequencies, RejectsBadConfigs) {
  auto c = base_config(10000.0, 63, 2048);
  EXPECT_THROW(rope_frequencies(c, 1), Error);
  c.head_dim = 64;
  c.rope_scaling.type = RopeScalingType::Linear;
  c.rope_scaling.factor = 0.0;
  EXPECT_THROW(rope_frequencies(c, 1), Error);
}

}  // namespace
}  // namespace qf
