// Text generation on an Engine: prefill the prompt, then sample one token at a time from the
// KV cache, streaming the text as it is produced.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/engine.h"
#include "runtime/sampling.h"

namespace qf {

class Tokenizer;

// Byte-level tokenizers split multi-byte UTF-8 characters across tokens (an emoji is often
// two or three tokens). push() appends a token's bytes and returns the longest prefix of the
// pending bytes that ends on a character boundary, holding back an incomplete trailing
// sequence; bytes that can never complete (a stray continuation byte, an invalid lead byte)
// are released as they are. flush() returns whatever is left.
class Utf8Stream {
 public:
  std::string push(std::string_view bytes);
  std::string flush();

 private:
  std::string pending_;
};

struct GenerationOptions {
  int64_t max_new_tokens = 256;
  SamplingParams sampling;
  int slot = 0;  // the engine slot used (reset first)
};

struct GenerationResult {
  std::vector<int32_t> tokens;  // generated tokens, without the prompt, without the stop token
  std::string text;             // their decoded text
  int64_t prompt_tokens = 0;
  bool stopped_at_end_of_generation = false;
  int64_t decode_steps = 0;  // single-token forward calls after the prefill
  double prefill_seconds = 0, decode_seconds = 0;
  double decode_tokens_per_second() const { return decode_seconds > 0 ? double(decode_steps) / decode_seconds : 0; }
  double prefill_tokens_per_second() const { return prefill_seconds > 0 ? double(prompt_tokens) / prefill_seconds : 0; }
};

// Generates up to max_new_tokens after `prompt`, stopping early at an end-of-generation token
// (Tokenizer::is_end_of_generation) or when the slot is full. on_text receives the text in
// complete UTF-8 pieces as tokens are produced.
GenerationResult generate(Engine& engine, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                          const GenerationOptions& options,
                          const std::function<void(std::string_view)>& on_text = {});

}  // namespace qf
