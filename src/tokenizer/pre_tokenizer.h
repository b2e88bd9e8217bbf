// Pre-tokenizers of byte-level BPE models: the list of regexes a model family splits text with
// before BPE (each regex splits the pieces the previous one left; matches and the text between
// matches both become pieces), as llama.cpp's llama-vocab.cpp assigns them to
// tokenizer.ggml.pre names, and as HF tokenizer.json spells them.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/split_regex.h"

namespace qf {

class PreTokenizer {
 public:
  // By GGUF tokenizer.ggml.pre ("smollm", "llama-bpe", "qwen2", ...). Throws qf::Error listing
  // the supported names when `name` is not one of them; `source` is named in it.
  static PreTokenizer from_gguf_name(const std::string& name, const std::string& source);
  // By the regexes of an HF pre_tokenizer chain, in order. They must equal a known family's
  // (HF's spellings of llama.cpp's patterns count as equal); else qf::Error.
  static PreTokenizer from_patterns(const std::vector<std::string>& patterns, const std::string& source);

  const std::string& name() const { return name_; }  // the family ("smollm", "llama3", ...)
  // Whether the family takes a word that is a token whole, without merges (Llama-3's
  // ignore_merges). GGUF files do not record this; llama.cpp sets it by family.
  bool ignores_merges() const { return ignores_merges_; }
  // Whether the family adds BOS when the GGUF file does not say (llama.cpp's default).
  bool adds_bos_by_default() const { return adds_bos_by_default_; }

  // The words of `text` (UTF-8, malformed bytes read as U+FFFD as llama.cpp does).
  std::vector<std::string> split(std::string_view text) const;

  // Every family name and the GGUF names that select it, for messages and tests.
  static std::string supported_names();
  // The regexes (llama.cpp's spelling) of a family, for tests; empty if unknown.
  static std::vector<std::string> family_patterns(const std::string& family);

 private:
  std::string name_;
  bool ignores_merges_ = false;
  bool adds_bos_by_default_ = false;
  std::vector<std::shared_ptr<const SplitRegex>> regexes_;
};

}  // namespace qf
