// Sampling: greedy, top-k, top-p, temperature, against the distribution they define, with a
// fixed seed and statistical tolerances; seed reproducibility.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

#include "core/error.h"
#include "runtime/sampling.h"

namespace qf {
namespace {

std::vector<float> random_logits(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

TEST(Sampling, GreedyIsArgmaxWithLowestIdOnTies) {
  const auto l = random_logits(1000, 1);
  const int32_t best = int32_t(std::max_element(l.begin(), l.end()) - l.begin());
  Sampler greedy({});
  EXPECT_EQ(greedy.sample(l.data(), 1000), best);
  SamplingParams k1;
  k1.temperature = 1.5;
  k1.top_k = 1;
  Sampler topk1(k1);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(topk1.sample(l.data(), 1000), best) << "top-k = 1 is greedy";
  const std::vector<float> tie = {1.0f, 3.0f, 0.5f, 3.0f};
  EXPECT_EQ(argmax(tie.data(), 4), 1);
}

// Draws n samples and checks each token's frequency against `expected` within 5 standard
// deviations of a binomial count (a correct sampler fails this with probability < 1e-5).
void expect_frequencies(Sampler& s, const std::vector<float>& logits, const std::map<int32_t, double>& expected,
                        int n) {
  std::map<int32_t, int> count;
  for (int i = 0; i < n; ++i) ++count[s.sample(logits.data(), int64_t(logits.size()))];
  for (const auto& [id, c] : count) EXPECT_TRUE(expected.count(id)) << "token " << id << " must not be drawn";
  for (const auto& [id, p] : expected) {
    const double sd = std::sqrt(n * p * (1 - p));
    EXPECT_NEAR(count[id], n * p, 5 * sd + 1) << "token " << id;
  }
}

TEST(Sampling, TemperatureSoftmaxFrequencies) {
  const std::vector<float> l = {2.0f, 1.0f, 0.0f, -1.0f};
  SamplingParams p;
  p.temperature = 0.7;
  p.seed = 42;
  Sampler s(p);
  std::map<int32_t, double> e;
  double z = 0;
  for (int i = 0; i < 4; ++i) z += std::exp(l[i] / 0.7);
  for (int i = 0; i < 4; ++i) e[i] = std::exp(l[i] / 0.7) / z;
  expect_frequencies(s, l, e, 40000);
}

TEST(Sampling, TopKThenTopPOverTheRenormalisedSoftmax) {
  // (Logits are floats: ln 4 and ln 2 rounded to float move the probabilities by ~1e-8.)
  // Logits chosen so the probabilities are easy: exp(ln 4) : exp(ln 2) : 1 : 1 : 1 -> 4/9, 2/9, 1/9...
  const std::vector<float> l = {float(std::log(4.0)), float(std::log(2.0)), 0.0f, 0.0f, 0.0f};
  SamplingParams p;
  p.temperature = 1.0;
  p.top_k = 3;   // keeps ids 0, 1, 2 (id 2 before 3 and 4 on the tie): 4/7, 2/7, 1/7
  p.top_p = 0.8; // 4/7 = 0.571 < 0.8, 6/7 = 0.857 >= 0.8: keeps 0 and 1 -> 2/3, 1/3
  p.seed = 7;
  Sampler s(p);
  const auto d = s.distribution(l.data(), 5);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].first, 0);
  EXPECT_NEAR(d[0].second, 2.0 / 3.0, 1e-7);
  EXPECT_NEAR(d[1].second, 1.0 / 3.0, 1e-7);
  expect_frequencies(s, l, {{0, 2.0 / 3.0}, {1, 1.0 / 3.0}}, 30000);

  p.top_p = 1.0;  // top-k alone
  Sampler s2(p);
  const auto d2 = s2.distribution(l.data(), 5);
  ASSERT_EQ(d2.size(), 3u);
  EXPECT_EQ(d2[2].first, 2) << "ties are ranked by lower id";
  EXPECT_NEAR(d2[2].second, 1.0 / 7.0, 1e-7);

  p.top_k = 0;
  p.top_p = 0.3;  // the first token alone already reaches 0.3
  Sampler s3(p);
  EXPECT_EQ(s3.distribution(l.data(), 5).size(), 1u);
}

TEST(Sampling, SeedReproducibility) {
  const auto l = random_logits(5000, 3);
  SamplingParams p;
  p.temperature = 1.0;
  p.top_p = 0.95;
  p.seed = 1234;
  Sampler a(p), b(p);
  p.seed = 1235;
  Sampler c(p);
  std::vector<int32_t> ra, rb, rc;
  for (int i = 0; i < 200; ++i) {
    ra.push_back(a.sample(l.data(), 5000));
    rb.push_back(b.sample(l.data(), 5000));
    rc.push_back(c.sample(l.data(), 5000));
  }
  EXPECT_EQ(ra, rb);
  EXPECT_NE(ra, rc);
}

TEST(Sampling, DrawFollowsTheDocumentedUniform) {
  // The draw is u = (mt19937_64() >> 11) * 2^-53 against the cumulative distribution: replay it.
  const std::vector<float> l = {0.0f, 0.0f, 0.0f, 0.0f};
  SamplingParams p;
  p.temperature = 1.0;
  p.seed = 99;
  Sampler s(p);
  std::mt19937_64 rng(99);
  for (int i = 0; i < 100; ++i) {
    const double u = double(rng() >> 11) * 0x1.0p-53;
    EXPECT_EQ(s.sample(l.data(), 4), int32_t(u * 4)) << "draw " << i;
  }
}

TEST(Sampling, RejectsBadParameters) {
  SamplingParams p;
  p.top_p = 0.0;
  EXPECT_THROW(Sampler{p}, Error);
  p.top_p = 1.5;
  EXPECT_THROW(Sampler{p}, Error);
  p.top_p = 1.0;
  p.top_k = -1;
  EXPECT_THROW(Sampler{p}, Error);
}

}  // namespace
}  // namespace qf
