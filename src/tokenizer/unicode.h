// Unicode pieces the tokenizers need: UTF-8 decoding (with the replacement rule llama.cpp
// uses, so malformed input gives the same ids), the general category of a code point for the
// pre-tokenizer regexes, and GPT-2's byte <-> code point mapping of byte-level BPE.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace qf::unicode {

// General category groups (the classes \p{L}, \p{N}, ... of the regexes). The numbering is the
// one in unicode_tables.inc (scripts/dev/gen_unicode_tables.py).
enum class Category : uint8_t {
  Unassigned = 0,   // Cn
  Letter = 1,       // L: Lu Ll Lt Lm Lo
  Number = 2,       // N: Nd Nl No
  Punctuation = 3,  // P
  Symbol = 4,       // S
  Mark = 5,         // M
  Separator = 6,    // Z
  Other = 7,        // C: Cc Cf Co Cs
};

// Category in the low 3 bits, kWhiteSpace when the code point has the White_Space property.
using CharClass = uint8_t;
inline constexpr CharClass kCategoryMask = 0x7;
inline constexpr CharClass kWhiteSpace = 0x8;

CharClass char_class(uint32_t cp);
inline Category category(uint32_t cp) { return Category(char_class(cp) & kCategoryMask); }
inline bool is_white_space(uint32_t cp) { return (char_class(cp) & kWhiteSpace) != 0; }
const char* unicode_version();  // of the category tables

inline constexpr uint32_t kReplacementChar = 0xFFFD;

// Length of the UTF-8 sequence a lead byte announces (1 for continuation bytes and ASCII).
inline size_t utf8_sequence_length(uint8_t lead) {
  static constexpr uint8_t kLengthByHighNibble[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLengthByHighNibble[lead >> 4];
}

// Decodes UTF-8 as llama.cpp does: a malformed sequence (bad lead byte, missing or wrong
// continuation byte) consumes one byte and yields U+FFFD. Overlong forms and surrogates are
// not rejected (they decode to their arithmetic value), again as there.
std::vector<uint32_t> decode_utf8(std::string_view text);
void append_utf8(std::string& out, uint32_t cp);
std::string encode_utf8(const std::vector<uint32_t>& cps);

// GPT-2's byte-level alphabet: each byte maps to one printable code point (the printable
// Latin-1 bytes to themselves, the other 68 to U+0100.. in byte order), so any byte string
// becomes a string of "visible" characters the BPE vocabulary is written in.
uint32_t byte_to_code_point(uint8_t byte);
// -1 when cp is not in the alphabet.
int code_point_to_byte(uint32_t cp);
// UTF-8 of byte_to_code_point(b) for every byte of `bytes`, concatenated.
std::string bytes_to_byte_level(std::string_view bytes);
// The inverse: `mapped` must be UTF-8 of alphabet characters; other characters are copied
// through unchanged (they cannot come from bytes_to_byte_level).
std::string byte_level_to_bytes(std::string_view mapped);

}  // namespace qf::unicode
