#include "runtime/generation.h"

#include <chrono>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace qf {
namespace {

// Length of the UTF-8 sequence a lead byte starts; 0 for a continuation or invalid byte.
int sequence_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 0;
}

}  // namespace

std::string Utf8Stream::push(std::string_view bytes) {
  pending_.append(bytes);
  // Only the last character can be incomplete: find its lead byte among the last 3 bytes.
  size_t keep_from = pending_.size();
  for (size_t back = 1; back <= 3 && back <= pending_.size(); ++back) {
    const unsigned char c = static_cast<unsigned char>(pending_[pending_.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: keep looking for the lead
    const int need = sequence_length(c);
    if (need > int(back)) keep_from = pending_.size() - back;  // the character is not complete yet
    break;
  }
  std::string out = pending_.substr(0, keep_from);
  pending_.erase(0, keep_from);
  return out;
}

std::string Utf8Stream::flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

GenerationResult generate(Engine& engine, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                          const GenerationOptions& options, const std::function<void(std::string_view)>& on_text) {
  QF_CHECK(!prompt.empty(), "generate: the prompt is empty (no tokens)");
  QF_CHECK(int64_t(prompt.size()) < engine.slot_capacity(), "generate: the prompt has ", prompt.size(),
           " tokens, the engine's cache holds ", engine.slot_capacity());
  GenerationResult r;
  r.prompt_tokens = int64_t(prompt.size());
  Sampler sampler(options.sampling);
  Utf8Stream utf8;
  const int64_t vocab = engine.config().vocab_size;
  engine.reset(options.slot);

  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  Batch batch;
  batch.add_sequence(options.slot, 0, prompt, Batch::Logits::Last);
  Tensor logits = engine.forward(batch);
  r.prefill_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  t0 = clock::now();

  int64_t position = int64_t(prompt.size());
  for (int64_t i = 0; i < options.max_new_tokens; ++i) {
    const int32_t token = sampler.sample(logits.data<float>(), vocab);
    if (tokenizer.is_end_of_generation(token)) {
      r.stopped_at_end_of_generation = true;
      break;
    }
    r.tokens.push_back(token);
    const std::string piece = utf8.push(tokenizer.token_to_piece(token));
    if (on_text && !piece.empty()) on_text(piece);
    if (i + 1 == options.max_new_tokens || position >= engine.slot_capacity()) break;
    batch.clear();
    batch.add(token, int32_t(position++), options.slot, true);
    logits = engine.forward(batch);
    ++r.decode_steps;
  }
  const std::string rest = utf8.flush();
  if (on_text && !rest.empty()) on_text(rest);
  r.decode_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  r.text = tokenizer.decode(r.tokens);
  return r;
}

}  // namespace qf
