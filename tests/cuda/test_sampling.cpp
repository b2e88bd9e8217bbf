// On-GPU sampling against the CPU twin qf::Sampler (runtime/sampling.h): the same token for the
// same uniform u, for greedy, temperature, top-k, top-p and their combinations, at Llama-3's
// vocabulary (128256), with ties (BF16 logits) and with nuclei that span many 1024-token chunks.
//
// How u is chosen. The two sides sum probabilities in different orders, so they may disagree
// only when u lies within ~1e-15 of a boundary between two tokens' cumulative probabilities.
// The tests therefore (a) put u at the middle of chosen tokens' intervals of the CPU's
// distribution (Sampler::distribution), where both must return exactly that token — this
// checks the ranking, the top-k cut, the top-p cut and the walk — and (b) draw u from seeded
// generators exactly as the CPU sampler does and require the same token (a mismatch by rounding
// has a probability of ~1e-13 per draw).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "backends/cuda/device.h"
#include "backends/cuda/sampling.h"
#include "gpu_test.h"
#include "kernel_test_util.h"
#include "runtime/sampling.h"

namespace qf::testing {
namespace {

enum class Logits { Peaked, Flat, Ties };

// Peaked: N(0, 2) with a handful of strong tokens, as language models produce. Flat: N(0, 0.5).
// Ties: values on a grid of 0.5 (exactly representable in BF16), so most logits are shared by
// many tokens and the lower-id-first rule decides the ranking.
std::vector<float> make_logits(Logits kind, int64_t vocab, std::mt19937_64& rng) {
  std::vector<float> l(static_cast<size_t>(vocab));
  std::normal_distribution<float> nd(0.0f, kind == Logits::Flat ? 0.5f : 2.0f);
  for (auto& x : l) x = nd(rng);
  if (kind == Logits::Ties)
    for (auto& x : l) x = std::round(x * 2.0f) / 2.0f;
  if (kind == Logits::Peaked) {
    std::uniform_int_distribution<int64_t> any(0, vocab - 1);
    const float boosts[] = {9.0f, 8.5f, 7.0f, 6.0f, 6.0f};
    for (float b : boosts) l[size_t(any(rng))] += b;
  }
  return l;
}

struct Case {
  const char* what;
  Logits kind;
  int64_t vocab;
  double temperature;
  int64_t top_k;
  double top_p;
  bool bf16_logits;
};

const Case kCases[] = {
    {"greedy", Logits::Peaked, 128256, 0.0, 0, 1.0, false},
    {"top_k 1 is greedy", Logits::Peaked, 128256, 1.0, 1, 1.0, false},
    {"temperature only", Logits::Peaked, 128256, 0.8, 0, 1.0, false},
    {"top_k 40", Logits::Peaked, 128256, 0.7, 40, 1.0, false},
    {"top_k 40 + top_p 0.9", Logits::Peaked, 128256, 1.0, 40, 0.9, false},
    {"top_p 0.95", Logits::Peaked, 128256, 1.0, 0, 0.95, false},
    {"top_k 3000 (> a chunk) + top_p 0.99", Logits::Peaked, 128256, 1.2, 3000, 0.99, false},
    {"top_k past the vocabulary", Logits::Peaked, 50000, 1.0, 1 << 20, 1.0, false},
    {"flat, nucleus over many chunks", Logits::Flat, 32000, 1.5, 0, 0.97, false},
    {"ties, bf16 logits, top_k 50", Logits::Ties, 49152, 1.0, 50, 1.0, true},
    {"ties, bf16 logits, top_p 0.5", Logits::Ties, 49152, 0.9, 0, 0.5, true},
};

SamplingParams params_of(const Case& c, uint64_t seed) {
  SamplingParams p;
  p.temperature = c.temperature;
  p.top_k = c.top_k;
  p.top_p = c.top_p;
  p.seed = seed;
  return p;
}

// The uniform the CPU sampler draws first from a generator seeded with `seed`.
double first_uniform(uint64_t seed) {
  std::mt19937_64 rng(seed);
  return double(rng() >> 11) * 0x1.0p-53;
}

// GPU tokens for the rows (same logits each row, uniform us[r]).
std::vector<int32_t> gpu_sample(const Case& c, const std::vector<float>& logits, const std::vector<double>& us,
                                cudaStream_t stream) {
  const int rows = int(us.size());
  // Rows padded to a stride past the vocabulary: the kernel must read only [0, vocab).
  const int64_t stride = c.vocab + 7;
  std::vector<cuda::SamplingRow> settings(static_cast<size_t>(rows));
  for (int r = 0; r < rows; ++r) settings[size_t(r)] = {c.temperature, c.top_p, us[size_t(r)], c.top_k};
  DeviceArray<cuda::SamplingRow> dset(settings, stream);
  DeviceArray<int32_t> dtok(static_cast<size_t>(rows));
  dtok.poison(stream);
  if (c.bf16_logits) {
    std::vector<bf16> all(static_cast<size_t>(rows) * stride, float_to_bf16(1e30f));  // padding: would win if read
    for (int r = 0; r < rows; ++r)
      for (int64_t i = 0; i < c.vocab; ++i) all[size_t(r * stride + i)] = float_to_bf16(logits[size_t(i)]);
    DeviceArray<bf16> dl(all, stream);
    cuda::sample_tokens(dl.get(), stride, c.vocab, rows, dset.get(), dtok.get(), stream);
  } else {
    std::vector<float> all(static_cast<size_t>(rows) * stride, 1e30f);
    for (int r = 0; r < rows; ++r) std::copy(logits.begin(), logits.end(), all.begin() + r * stride);
    DeviceArray<float> dl(all, stream);
    cuda::sample_tokens(dl.get(), stride, c.vocab, rows, dset.get(), dtok.get(), stream);
  }
  return dtok.download(stream);
}

TEST(Sampling, MatchesCpuSamplerAtIntervalMidpoints) {
  QF_REQUIRE_GPU();
  cuda::Stream stream;
  for (const Case& c : kCases) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE(std::string(c.what) + " seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    std::vector<float> logits = make_logits(c.kind, c.vocab, rng);
    if (c.bf16_logits)  // the CPU sees exactly the values the GPU reads
      for (auto& x : logits) x = bf16_to_float(float_to_bf16(x));
    const Sampler cpu(params_of(c, 0));
    const auto dist = cpu.distribution(logits.data(), c.vocab);
    ASSERT_FALSE(dist.empty());
    // Probe tokens: the first few, some in the middle, the last kept, random ones.
    std::vector<size_t> probes{0, 1, 2, dist.size() / 2, dist.size() - 1};
    std::uniform_int_distribution<size_t> any(0, dist.size() - 1);
    for (int i = 0; i < 8; ++i) probes.push_back(any(rng));
    std::vector<double> us;
    std::vector<int32_t> want;
    std::vector<double> starts(dist.size() + 1, 0.0);
    for (size_t j = 0; j < dist.size(); ++j) starts[j + 1] = starts[j] + dist[j].second;
    for (size_t j : probes) {
      if (j >= dist.size() || dist[j].second < 1e-9) continue;  // intervals too thin to aim at
      us.push_back(starts[j] + dist[j].second / 2);
      want.push_back(dist[j].first);
    }
    if (c.temperature <= 0.0 || c.top_k == 1) {
      us = {0.0, 0.5, 0.999};
      want.assign(3, argmax(logits.data(), c.vocab));
    }
    ASSERT_FALSE(us.empty());
    const auto got = gpu_sample(c, logits, us, stream);
    for (size_t r = 0; r < us.size(); ++r)
      EXPECT_EQ(got[r], want[r]) << "u = " << us[r] << " (kept " << dist.size() << " tokens)";
  }
}

TEST(Sampling, SameSeedSameTokenAsCpuSampler) {
  QF_REQUIRE_GPU();
  cuda::Stream stream;
  for (const Case& c : kCases) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE(std::string(c.what) + " seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    std::vector<float> logits = make_logits(c.kind, c.vocab, rng);
    if (c.bf16_logits)
      for (auto& x : logits) x = bf16_to_float(float_to_bf16(x));
    std::vector<double> us;
    std::vector<int32_t> want;
    for (int i = 0; i < 16; ++i) {
      const uint64_t s = rng();
      Sampler cpu(params_of(c, s));
      want.push_back(cpu.sample(logits.data(), c.vocab));
      us.push_back(first_uniform(s));
    }
    const auto got = gpu_sample(c, logits, us, stream);
    for (size_t r = 0; r < us.size(); ++r) EXPECT_EQ(got[r], want[r]) << "u = " << us[r];
  }
}

TEST(Sampling, RejectsBadArguments) {
  const auto* l = reinterpret_cast<const float*>(256);
  const auto* rows = reinterpret_cast<const cuda::SamplingRow*>(256);
  auto* out = reinterpret_cast<int32_t*>(256);
  EXPECT_THROW(cuda::sample_tokens(l, 10, 0, 1, rows, out, nullptr), Error);              // empty vocabulary
  EXPECT_THROW(cuda::sample_tokens(l, 10, 20, 1, rows, out, nullptr), Error);             // stride < vocab
  EXPECT_THROW(cuda::sample_tokens(l, 1 << 25, 1 << 25, 1, rows, out, nullptr), Error);  // > 2^24
}

}  // namespace
}  // namespace qf::testing
