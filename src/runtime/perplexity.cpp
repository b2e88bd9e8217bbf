#include "runtime/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace qf {

double token_nll(const float* logits, int64_t vocab, int32_t target) {
  QF_CHECK(target >= 0 && target < vocab, "token ", target, " is outside the vocabulary of ", vocab);
  float max_l = logits[0];
  for (int64_t i = 1; i < vocab; ++i) max_l = std::max(max_l, logits[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(double(logits[i]) - double(max_l));
  return std::log(sum) + double(max_l) - double(logits[target]);
}

namespace {

void finish(PerplexityResult& r, double sum_nll, double sum_nll_sq) {
  const double n = double(r.tokens_scored);
  r.mean_nll = sum_nll / n;
  r.ppl = std::exp(r.mean_nll);
  const double var = sum_nll_sq / n - r.mean_nll * r.mean_nll;
  r.mean_nll_stderr = (n > 1 && var > 0) ? std::sqrt(var / (n - 1)) : 0.0;
  r.ppl_stderr = r.ppl * r.mean_nll_stderr;
}

}  // namespace

PerplexityResult perplexity_of_tokens(Engine& engine, std::span<const int32_t> tokens, int32_t bos_id,
                                      const PerplexityOptions& options, const PerplexityProgress& progress) {
  const int64_t ctx = options.ctx, n = int64_t(tokens.size());
  const bool llama_cpp = options.scoring == PerplexityScoring::LlamaCpp;
  QF_CHECK(ctx >= 2, "perplexity: the window (--ctx) must be at least 2 tokens, got ", ctx);
  QF_CHECK(ctx <= engine.slot_capacity(), "perplexity: a window of ", ctx, " tokens does not fit the engine's ",
           engine.slot_capacity(), "-token cache");
  QF_CHECK(options.chunk_tokens >= 1, "perplexity: chunk_tokens must be positive");
  const int64_t min_tokens = llama_cpp ? 2 * ctx : ctx;
  QF_CHECK(n >= min_tokens, "perplexity: the text has ", n, " tokens, fewer than the ", min_tokens,
           " needed for windows of ", ctx, llama_cpp ? " (llama.cpp scoring needs two windows)" : "");
  int64_t windows = n / ctx;
  if (options.max_windows > 0) windows = std::min(windows, options.max_windows);
  // Logits at positions first_logit .. ctx-2 predict the tokens after them.
  const int64_t first_logit = llama_cpp ? ctx / 2 : 0;
  const int64_t vocab = engine.config().vocab_size;

  PerplexityResult r;
  r.windows = windows;
  r.ctx = ctx;
  double sum_nll = 0.0, sum_nll_sq = 0.0;
  if (progress) progress(0, windows, r);
  const auto t0 = std::chrono::steady_clock::now();
  // Windows run side by side in the engine's slots, one chunk of each per forward call.
  const int64_t group = std::max<int64_t>(1, engine.num_slots());
  for (int64_t w0 = 0; w0 < windows; w0 += group) {
    const int64_t nw = std::min(group, windows - w0);
    std::vector<std::vector<int32_t>> win(static_cast<size_t>(nw));
    for (int64_t j = 0; j < nw; ++j) {
      win[j].assign(tokens.begin() + (w0 + j) * ctx, tokens.begin() + (w0 + j + 1) * ctx);
      if (llama_cpp && bos_id >= 0) win[j][0] = bos_id;
      engine.reset(int(j));
    }
    std::vector<double> win_sum(static_cast<size_t>(nw)), win_sq(static_cast<size_t>(nw));
    std::vector<int64_t> win_count(static_cast<size_t>(nw));
    for (int64_t c0 = 0; c0 < ctx; c0 += options.chunk_tokens) {
      const int64_t c1 = std::min(ctx, c0 + options.chunk_tokens);
      auto scored = [&](int64_t p) { return p >= first_logit && p < ctx - 1; };
      Batch batch;
      for (int64_t j = 0; j < nw; ++j)
        for (int64_t p = c0; p < c1; ++p) batch.add(win[j][p], int32_t(p), int32_t(j), scored(p));
      const Tensor logits = engine.forward(batch);
      const float* row = logits.data<float>();
      for (int64_t j = 0; j < nw; ++j)
        for (int64_t p = c0; p < c1; ++p) {
          if (!scored(p)) continue;
          const double nll = token_nll(row, vocab, win[j][p + 1]);
          win_sum[j] += nll;
          win_sq[j] += nll * nll;
          ++win_count[j];
          row += vocab;
        }
    }
    // Accumulate window by window, in order, so running_ppl[i] is the value after window i
    // (llama.cpp's "[i]value" list) however many windows ran side by side.
    for (int64_t j = 0; j < nw; ++j) {
      sum_nll += win_sum[j];
      sum_nll_sq += win_sq[j];
      r.tokens_scored += win_count[j];
      r.tokens_evaluated += ctx;
      finish(r, sum_nll, sum_nll_sq);
      r.running_ppl.push_back(r.ppl);
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (progress) progress(std::min(w0 + nw, windows), windows, r);
  }
  return r;
}

PerplexityResult perplexity_of_text(Engine& engine, const Tokenizer& tokenizer, std::string text,
                                    const PerplexityOptions& options, const PerplexityProgress& progress) {
  const bool llama_cpp = options.scoring == PerplexityScoring::LlamaCpp;
  if (llama_cpp && !text.empty() && text.back() == '\n') text.pop_back();  // as llama.cpp's -f does
  const bool add_bos = llama_cpp && tokenizer.adds_bos() && tokenizer.bos_id() >= 0;
  const std::vector<int32_t> tokens = tokenizer.encode(text, add_bos, /*parse_special=*/false);
  return perplexity_of_tokens(engine, tokens, add_bos ? tokenizer.bos_id() : -1, options, progress);
}

}  // namespace qf
