// The data a tokenizer is made from, whatever file it came from: GGUF metadata and HF
// tokenizer.json both load into a Vocab, and Tokenizer::from_vocab builds the one engine from
// it. Tests build small Vocabs in memory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qf {

// Token types, numbered as GGUF's tokenizer.ggml.token_type (= SentencePiece's piece types).
enum class TokenType : int32_t {
  Undefined = 0,
  Normal = 1,
  Unknown = 2,
  Control = 3,      // <s>, <|im_start|>, ...: split out of the text only when parsing specials
  UserDefined = 4,  // always split out of the text
  Unused = 5,
  Byte = 6,         // SentencePiece byte fallback <0xXX>
};

enum class VocabKind {
  ByteLevelBpe,  // GGUF tokenizer.ggml.model "gpt2": GPT-2 bytes, pre-tokenizer regex, merge ranks
  SentencePiece, // GGUF "llama": "▁" for spaces, merges by piece score, byte fallback
};

inline constexpr uint8_t kStripLeft = 1;
inline constexpr uint8_t kStripRight = 2;

struct Vocab {
  VocabKind kind = VocabKind::ByteLevelBpe;
  std::string pre;                 // ByteLevelBpe: pre-tokenizer name (GGUF tokenizer.ggml.pre)
  std::vector<std::string> tokens; // id -> text
  std::vector<TokenType> types;    // id -> type; empty: all Normal
  std::vector<float> scores;       // SentencePiece: id -> merge priority (higher merges first)
  std::vector<std::string> merges; // ByteLevelBpe: "left right", rank = index
  // Per token, for special tokens: whitespace next to the token in the text is dropped when it
  // is split out (HF added_tokens lstrip/rstrip; llama.cpp's LSTRIP/RSTRIP). Empty: none.
  std::vector<uint8_t> strip;      // kStripLeft | kStripRight
  int32_t bos = -1, eos = -1, unk = -1;
  int32_t eot = -1;                // end of turn, when the file names it (else found by text)
  bool add_bos = false;
  bool add_eos = false;
  bool add_space_prefix = false;   // SentencePiece: a space before the text
  bool ignore_merges = false;      // ByteLevelBpe: a word that is a token is taken whole (Llama-3)
  std::string chat_template;       // Jinja text, may be empty
  std::string source = "vocab";    // named in error messages
};

}  // namespace qf
