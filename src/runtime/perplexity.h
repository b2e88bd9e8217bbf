// Perplexity of a model on a text: exp(mean negative log-likelihood of the scored tokens).
//
// Two scorings, because the two conventions in use give different numbers:
//   * Standard (GPTQ / QUIK / most quantization papers): the token stream, without BOS, is cut
//     into floor(n / ctx) non-overlapping windows of ctx tokens; each window is run from an
//     empty cache and predicts its tokens 1..ctx-1 from the tokens before them: ctx - 1 scored
//     tokens per window, every one of them averaged with equal weight.
//   * llama.cpp (`llama-perplexity`, examples/perplexity/perplexity.cpp, Feb 2025): the text
//     loses one trailing '\n' and is tokenized with BOS when the model's tokenizer adds one
//     (add_bos_token); n_chunks = floor(n / ctx); in each window the first token is replaced
//     by BOS (again only when add_bos_token), and only the second half is scored: the logits at
//     positions ctx/2 .. ctx-2 predict tokens ctx/2+1 .. ctx-1, ctx - ctx/2 - 1 tokens per
//     window, averaged over all of them. It also requires at least 2 * ctx tokens.
// Standard error: the per-token NLLs' sample standard deviation over sqrt(count - 1) gives the
// standard error of the mean NLL; by the delta method, stderr(ppl) = ppl * stderr(mean NLL)
// (what llama.cpp prints as "PPL = x +/- y").
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "runtime/engine.h"

namespace qf {

class Tokenizer;

enum class PerplexityScoring { Standard, LlamaCpp };

struct PerplexityOptions {
  int64_t ctx = 2048;       // window length in tokens
  int64_t max_windows = 0;  // 0: every full window of the text
  PerplexityScoring scoring = PerplexityScoring::Standard;
  // Tokens per forward call inside a window (bounds the logits held at once: ctx * vocab
  // floats would be 400 MB at 2048 x 49152). Results do not depend on it.
  int64_t chunk_tokens = 512;
};

struct PerplexityResult {
  double ppl = 0, ppl_stderr = 0;
  double mean_nll = 0, mean_nll_stderr = 0;
  int64_t tokens_scored = 0;     // NLL terms averaged
  int64_t tokens_evaluated = 0;  // tokens run through the model (windows * ctx)
  int64_t windows = 0;
  int64_t ctx = 0;
  double seconds = 0;  // forward passes and scoring, not tokenization
  double tokens_per_second() const { return seconds > 0 ? double(tokens_evaluated) / seconds : 0.0; }
  std::vector<double> running_ppl;  // after each window (llama.cpp prints these as [i]value)
};

// Called once before the first window (done = 0), then after each group of windows, with
// (windows done, windows total, running result).
using PerplexityProgress = std::function<void(int64_t, int64_t, const PerplexityResult&)>;

// NLL of `target` under softmax(logits): log(sum_j exp(l_j - max)) + max - l_target, in double.
double token_nll(const float* logits, int64_t vocab, int32_t target);

// Scores an already tokenized stream (the BOS handling of the LlamaCpp scoring is done on
// `tokens` as given, with bos_id = -1 meaning "the model adds no BOS"). Uses slot 0 of the
// engine, resetting it per window.
PerplexityResult perplexity_of_tokens(Engine& engine, std::span<const int32_t> tokens, int32_t bos_id,
                                      const PerplexityOptions& options, const PerplexityProgress& progress = {});

// Tokenizes `text` once as the scoring requires (see above), then perplexity_of_tokens.
PerplexityResult perplexity_of_text(Engine& engine, const Tokenizer& tokenizer, std::string text,
                                    const PerplexityOptions& options, const PerplexityProgress& progress = {});

}  // namespace qf
