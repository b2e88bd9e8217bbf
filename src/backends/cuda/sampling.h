// Choosing the next token on the GPU, one row of logits per sequence. The CPU twin is
// qf::Sampler (runtime/sampling.h) and this kernel computes the same function of the logits and
// one uniform number u per row:
//   0. temperature <= 0 or top_k == 1: greedy, the largest logit, lowest id on ties. u unused.
//   1. rank tokens by logit, largest first, lower id first on ties; top_k > 0 keeps the first
//      top_k (0: all);
//   2. p_i = exp((l_i - l_max) / temperature) in double, Z = their sum;
//   3. top_p < 1 keeps the shortest prefix of the ranking whose mass reaches top_p * Z (at
//      least one token), of mass P;
//   4. returns the first token of the ranking whose cumulative mass exceeds u * P (the last
//      kept token if rounding leaves none).
// The uniform is drawn on the host from the same generator as the CPU sampler (one
// std::mt19937_64 per sequence, seeded with SamplingParams::seed, u = (rng() >> 11) * 2^-53),
// and passed in: the GPU needs no RNG of its own and a seed gives the same text on both
// backends. The one difference is the order of the double-precision sums (the CPU adds
// sequentially, the GPU in a tree) and the last bit of exp: a token can differ only when u or
// top_p falls within ~1e-15 relative of a boundary between two tokens' cumulative masses.
//
// Logits must be finite (-0.0 and +0.0 rank as equal, as on the CPU). Vocabulary up to 2^24.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace qf::cuda {

// Per-row sampling settings, in device memory (each sequence of a batch may differ).
struct SamplingRow {
  double temperature = 0.0;  // <= 0: greedy
  double top_p = 1.0;        // in (0, 1]
  double uniform = 0.0;      // u in [0, 1): the row's draw
  int64_t top_k = 0;         // 0: no limit; 1: greedy
};

// tokens[r] = the token chosen from logits[r * row_stride + 0 .. vocab) with rows[r]'s settings.
void sample_tokens(const float* logits, int64_t row_stride, int64_t vocab, int num_rows, const SamplingRow* rows,
                   int32_t* tokens, cudaStream_t stream);
void sample_tokens(const __nv_bfloat16* logits, int64_t row_stride, int64_t vocab, int num_rows,
                   const SamplingRow* rows, int32_t* tokens, cudaStream_t stream);

}  // namespace qf::cuda
