// Choosing the next token from logits. The GPU sampler mirrors this exactly, so the order of
// the steps and the random draw are part of the definition:
//   0. temperature <= 0 or top_k == 1: greedy, the largest logit (lowest id on ties). No draw.
//   1. rank the tokens by logit, largest first (lower id first on ties); with top_k > 0 keep
//      the first top_k;
//   2. p_i = exp((l_i - l_max) / temperature), normalised over the kept tokens (in double);
//   3. with top_p < 1, keep the shortest prefix of the ranking whose probability sum reaches
//      top_p (at least one token), and renormalise;
//   4. draw u = (rng() >> 11) * 2^-53, uniform in [0, 1) from the 53 high bits of one
//      std::mt19937_64 output, and return the first token of the ranking whose cumulative
//      probability exceeds u.
// The generator is seeded once (SamplingParams::seed) and advances one output per draw, so a
// seed fixes the whole generated text.
#pragma once

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace qf {

struct SamplingParams {
  double temperature = 0.0;  // <= 0: greedy
  int64_t top_k = 0;         // 0: no limit
  double top_p = 1.0;        // in (0, 1]; 1: no nucleus cut
  uint64_t seed = 0;
  bool greedy() const { return temperature <= 0.0 || top_k == 1; }
};

// The index of the largest value (the lowest index among equal maxima).
int32_t argmax(const float* logits, int64_t n);

class Sampler {
 public:
  // Throws qf::Error on top_p outside (0, 1] or a negative top_k.
  explicit Sampler(const SamplingParams& params);

  int32_t sample(const float* logits, int64_t vocab);

  // Steps 1-3: the tokens that can be drawn, in ranking order, with their probabilities
  // (summing to 1). Greedy gives the single argmax with probability 1.
  std::vector<std::pair<int32_t, double>> distribution(const float* logits, int64_t vocab) const;

  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace qf
