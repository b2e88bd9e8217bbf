// Tokenizers of Llama-family models: byte-level BPE (GPT-2 / Llama-3 / SmolLM2 / Qwen2: a
// pre-tokenizer regex, then merges by rank over byte-mapped pieces) and SentencePiece-style BPE
// (Llama-2: "▁" for spaces, merges by score, byte fallback <0xXX>). Read from GGUF metadata or
// from a Hugging Face tokenizer.json; ids equal llama.cpp's (tests/tokenizer keeps the
// reference ids it was compared against).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace qf {

namespace gguf { class Metadata; }
struct Vocab;
class ChatTemplate;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

class Tokenizer {
 public:
  static Tokenizer from_gguf(const gguf::Metadata& md, const std::string& source);
  // A Hugging Face model directory: tokenizer.json and, when present, tokenizer_config.json
  // (special-token flags, add_bos, chat_template).
  static Tokenizer from_hf_dir(const std::string& dir);
  // From a vocabulary already in memory (tokenizer/vocab.h); what the two above build.
  static Tokenizer from_vocab(Vocab vocab);

  Tokenizer();
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // add_bos: prepend BOS when the model's tokenizer asks for it (add_bos_token) — pass false to
  // never add it. (add_eos_token is not applied: no Llama-family model sets it.)
  // parse_special: text such as "<|im_start|>" becomes its special token id; user-defined
  // tokens are split out of the text either way, as in llama.cpp.
  // Thread-safe (const, no shared scratch).
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special) const;
  // The text of the ids: special tokens as their text, so decode(encode(s)) == s. For
  // SentencePiece vocabularies the space encode put before the text (and after each special
  // token) is taken back; to print generated tokens one by one use token_to_piece.
  std::string decode(std::span<const int32_t> ids) const;
  // The bytes one token stands for (may be an incomplete UTF-8 sequence); special tokens give
  // their text.
  std::string token_to_piece(int32_t id) const;

  int64_t vocab_size() const;
  int32_t bos_id() const;  // -1 if none
  int32_t eos_id() const;  // -1 if none
  bool adds_bos() const;   // the model's add_bos_token
  // End of generation: EOS, and end-of-turn tokens such as <|im_end|>, <|eot_id|>, <|end|>.
  bool is_end_of_generation(int32_t id) const;
  std::string kind() const;  // "bpe (smollm)", "spm", ...
  int32_t token_id(std::string_view text) const;  // the token whose text this is, or -1

  // The model's chat template (GGUF tokenizer.chat_template, tokenizer_config.json, or
  // set_chat_template), recognized by family (chat_template.h). A missing or unknown template
  // renders as ChatML, and chat_template().warning() says so.
  void set_chat_template(std::string jinja_text);
  const ChatTemplate& chat_template() const;
  std::string apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace qf
