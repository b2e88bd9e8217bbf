// Hugging Face tokenizer.json (+ tokenizer_config.json) -> Vocab. Two shapes are understood:
//  - byte-level BPE: model.type "BPE", a pre_tokenizer chain of Split(Regex, Isolated) /
//    Digits / ByteLevel whose regexes are a known family's (pre_tokenizer.h);
//  - SentencePiece-style BPE: model.type "BPE" with byte_fallback, spaces turned into "▁" by a
//    Prepend+Replace normalizer or a Metaspace pre-tokenizer.
// added_tokens become Control (special) or UserDefined tokens; merges may be "a b" strings or
// [a, b] pairs. Anything else is rejected with a qf::Error naming the file and the field.
#pragma once

#include <string>
#include <string_view>

#include "tokenizer/vocab.h"

namespace qf {

// `tokenizer_config_json` may be empty (no tokenizer_config.json). `source` names the files
// in errors.
Vocab parse_hf_tokenizer(std::string_view tokenizer_json, std::string_view tokenizer_config_json,
                         const std::string& source);

}  // namespace qf
