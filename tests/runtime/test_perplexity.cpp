// Perplexity windows, scoring and averaging on toy engines whose answer is computable by hand.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "runtime/cpu_engine.h"
#include "runtime/perplexity.h"
#include "runtime/tiny_model.h"

namespace qf {
namespace {

// A fake engine over a vocabulary of V tokens: the logits after token t put logit ln(K) on
// token (t + 1) % V and 0 elsewhere, so P(next = t + 1) = K / (K + V - 1) and any other token
// has P = 1 / (K + V - 1). It records the tokens it saw per slot.
class CountingEngine final : public Engine {
 public:
  CountingEngine(int64_t V, double K, int slots, int64_t capacity) : seen_(slots), V_(V), K_(K), cap_(capacity) {
    config_.vocab_size = V;
  }
  const ModelConfig& config() const override { return config_; }
  std::string describe() const override { return "counting"; }
  int num_slots() const override { return int(seen_.size()); }
  int64_t slot_capacity() const override { return cap_; }
  int64_t slot_length(int s) const override { return int64_t(seen_[s].size()); }
  void truncate(int s, int64_t n) override { seen_[s].resize(size_t(n)); }
  Tensor forward(const Batch& b) override {
    Tensor out = Tensor::zeros(DType::F32, {b.num_logits(), V_});
    float* p = out.data_mut<float>();
    for (int64_t i = 0; i < b.size(); ++i) {
      EXPECT_EQ(b.positions[i], int64_t(seen_[b.slots[i]].size()));
      seen_[b.slots[i]].push_back(b.tokens[i]);
      if (!b.want_logits[i]) continue;
      p[(b.tokens[i] + 1) % V_] = float(std::log(K_));
      p += V_;
    }
    ++calls;
    return out;
  }
  std::vector<std::vector<int32_t>> seen_;  // tokens of the last window per slot
  int calls = 0;

 private:
  int64_t V_;
  double K_;
  ModelConfig config_;
  int64_t cap_;
};

TEST(Perplexity, StandardScoringAveragesEveryPredictedToken) {
  // V = 10, K = 3: a hit (next = t + 1) has p = 3/12, a miss p = 1/12.
  const int64_t V = 10;
  std::vector<int32_t> tokens;
  for (int i = 0; i < 25; ++i) tokens.push_back(i % 2 == 0 ? i % V : (i * 7) % V);
  // Windows of 8: floor(25 / 8) = 3 windows, 7 predictions each (tokens 24 is left over).
  int hits = 0, total = 0;
  for (int w = 0; w < 3; ++w)
    for (int p = 0; p < 7; ++p, ++total) hits += tokens[w * 8 + p + 1] == (tokens[w * 8 + p] + 1) % V;
  ASSERT_GT(hits, 0);
  ASSERT_LT(hits, total);
  const double mean_nll = (hits * -std::log(3.0 / 12.0) + (total - hits) * -std::log(1.0 / 12.0)) / total;

  CountingEngine e(V, 3.0, 1, 64);
  PerplexityOptions o;
  o.ctx = 8;
  o.chunk_tokens = 3;  // chunks of a window must not change anything
  const auto r = perplexity_of_tokens(e, tokens, -1, o);
  EXPECT_EQ(r.windows, 3);
  EXPECT_EQ(r.tokens_scored, 21);
  EXPECT_EQ(r.tokens_evaluated, 24);
  // The engine's logit ln(3) is a float: the NLLs carry its ~1e-8 rounding.
  EXPECT_NEAR(r.mean_nll, mean_nll, 1e-7);
  EXPECT_NEAR(r.ppl, std::exp(mean_nll), 1e-6);
  // Two values of NLL, a = -ln(1/4) with frequency f, b = -ln(1/12): the sample standard
  // deviation is |a - b| sqrt(f (1 - f) n / (n - 1)); stderr(ppl) = ppl * sd / sqrt(n).
  const double f = double(hits) / total, n = total;
  const double sd = std::log(3.0) * std::sqrt(f * (1 - f) * n / (n - 1));
  EXPECT_NEAR(r.mean_nll_stderr, sd / std::sqrt(n), 1e-7);
  EXPECT_NEAR(r.ppl_stderr, r.ppl * sd / std::sqrt(n), 1e-6);
  ASSERT_EQ(r.running_ppl.size(), 3u);
  EXPECT_DOUBLE_EQ(r.running_ppl.back(), r.ppl);
  // The last window the engine saw is tokens 16..23, unmodified.
  EXPECT_EQ(e.seen_[0], std::vector<int32_t>(tokens.begin() + 16, tokens.begin() + 24));

  o.max_windows = 2;
  EXPECT_EQ(perplexity_of_tokens(e, tokens, -1, o).tokens_scored, 14);
}

TEST(Perplexity, LlamaCppScoringReplacesBosAndScoresTheSecondHalf) {
  // A stream where every prediction hits: ppl = (K + V - 1) / K exactly, from whatever tokens
  // are scored. Then check which ones were: ctx 8 -> first = 4, logits at 4..6 predict 5..7.
  const int64_t V = 16;
  std::vector<int32_t> tokens(40);
  for (int i = 0; i < 40; ++i) tokens[i] = i % V;
  CountingEngine e(V, 5.0, 2, 64);  // two slots: two windows per forward call
  PerplexityOptions o;
  o.ctx = 8;
  o.scoring = PerplexityScoring::LlamaCpp;
  const int32_t bos = 15;
  const auto r = perplexity_of_tokens(e, tokens, bos, o);
  EXPECT_EQ(r.windows, 5);
  EXPECT_EQ(r.tokens_scored, 5 * 3);  // ctx - ctx/2 - 1 per window
  EXPECT_NEAR(r.ppl, 20.0 / 5.0, 1e-6);  // ln 5 as a float logit: ~1e-7
  EXPECT_EQ(r.ppl_stderr, 0.0);
  // The last group ran window 4 alone in slot 0: its first token replaced by BOS.
  std::vector<int32_t> expect(tokens.begin() + 32, tokens.begin() + 40);
  expect[0] = bos;
  EXPECT_EQ(e.seen_[0], expect);

  // Only the second half counts: break the first half's predictions, same result.
  auto broken = tokens;
  for (int w = 0; w < 5; ++w) broken[w * 8 + 2] = 0;
  EXPECT_NEAR(perplexity_of_tokens(e, broken, bos, o).ppl, r.ppl, 1e-12);
  // ... and in standard scoring they do count.
  o.scoring = PerplexityScoring::Standard;
  EXPECT_GT(perplexity_of_tokens(e, broken, -1, o).ppl, 4.0 + 1e-3);
}

TEST(Perplexity, RejectsTooShortTextsAndOversizedWindows) {
  CountingEngine e(10, 2.0, 1, 16);
  std::vector<int32_t> t(20, 1);
  PerplexityOptions o;
  o.ctx = 32;  // larger than the engine's cache
  EXPECT_THROW(perplexity_of_tokens(e, t, -1, o), Error);
  o.ctx = 12;
  o.scoring = PerplexityScoring::LlamaCpp;  // needs 2 * ctx = 24 tokens
  EXPECT_THROW(perplexity_of_tokens(e, t, -1, o), Error);
}

TEST(Perplexity, TokenNllIsTheLogSoftmax) {
  const std::vector<float> l = {1.0f, 2.0f, 3.0f};
  const double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  EXPECT_NEAR(token_nll(l.data(), 3, 0), std::log(z) - 1.0, 1e-12);
  EXPECT_NEAR(token_nll(l.data(), 3, 2), std::log(z) - 3.0, 1e-12);
  const std::vector<float> big = {1000.0f, 0.0f};  // no overflow thanks to the max shift
  EXPECT_NEAR(token_nll(big.data(), 2, 1), 1000.0, 1e-9);
}

TEST(Perplexity, TinyModelEqualsNllOfItsReferenceLogits) {
  // End to end on a real (tiny) model: the perplexity equals exp(mean NLL) computed from the
  // double-precision reference logits of each window.
  const auto ck = test::tiny_checkpoint({});
  std::mt19937 rng(3);
  std::vector<int32_t> tokens(70);
  for (auto& t : tokens) t = int32_t(rng() % 61);
  CpuEngine engine(ck, 2, 32);
  PerplexityOptions o;
  o.ctx = 32;
  o.chunk_tokens = 10;
  const auto r = perplexity_of_tokens(engine, tokens, -1, o);
  double sum = 0;
  for (int w = 0; w < 2; ++w) {
    const std::vector<int32_t> win(tokens.begin() + w * 32, tokens.begin() + (w + 1) * 32);
    const auto ref = test::reference_forward(ck, win);
    for (int p = 0; p < 31; ++p) {
      double mx = -1e300, z = 0;
      for (double v : ref[p]) mx = std::max(mx, v);
      for (double v : ref[p]) z += std::exp(v - mx);
      sum += std::log(z) + mx - ref[p][win[p + 1]];
    }
  }
  EXPECT_EQ(r.tokens_scored, 62);
  EXPECT_NEAR(r.mean_nll, sum / 62, 1e-5);
}

}  // namespace
}  // namespace qf
