// The regexes that pre-tokenizers split text with ('s|'t| ?\p{L}+| ?\p{N}+|\s+(?!\S)|...),
// matched by a small backtracking engine over code points, not std::regex: std::regex knows no
// Unicode categories and is slow. The engine has the leftmost-first semantics of Perl, Python's
// `regex` and Rust's `regex` (the first alternative that leads to a match wins, quantifiers are
// greedy), which is what the tokenizers these patterns come from use.
//
// Supported syntax (what the pre-tokenizer patterns of llama.cpp and HF tokenizer.json files use):
//   literals (UTF-8), escapes \r \n \t \f \v \xHH and \<punctuation>; classes [...] [^...] with
//   ranges; \p{L} \p{N} \p{P} \p{S} \p{M} \p{Z} \p{C} and \P{..}; \s \S; groups (...) (?:...);
//   lookahead (?=...) (?!...); alternation |; quantifiers ? * + {n} {n,} {n,m} (greedy); $.
// Anything else (lazy quantifiers, (?i), backreferences, \d, \w, .) is rejected with a qf::Error
// naming the pattern, rather than matched differently from the original.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/unicode.h"

namespace qf {

class SplitRegex {
 public:
  explicit SplitRegex(std::string_view pattern);

  const std::string& pattern() const { return pattern_; }

  // Splits each piece of `piece_lengths` (consecutive pieces of `cps`, lengths in code points)
  // into the regex's matches and the runs of text between matches, in order; each piece is
  // matched on its own (its ends are the text's ends for $ and lookahead). Empty matches are
  // dropped. `classes[i]` is unicode::char_class(cps[i]).
  std::vector<size_t> split(std::span<const uint32_t> cps, std::span<const unicode::CharClass> classes,
                            std::span<const size_t> piece_lengths) const;

  // The end of the leftmost-first match starting exactly at `pos` in cps[0, end), or -1.
  int64_t match_at(std::span<const uint32_t> cps, std::span<const unicode::CharClass> classes, size_t pos,
                   size_t end) const;

 private:
  struct CharSet {
    bool negated = false;
    uint16_t class_bits = 0;  // bit c: category c; kSpaceBit / kNonSpaceBit: \s / \S
    std::vector<std::pair<uint32_t, uint32_t>> ranges;  // inclusive
    bool matches(uint32_t cp, unicode::CharClass cls) const;
  };
  static constexpr uint16_t kSpaceBit = 1u << 8;
  static constexpr uint16_t kNonSpaceBit = 1u << 9;

  enum class Op : uint8_t {
    Char,       // consume one code point in sets_[arg]
    Split,      // try arg first, then alt
    Jump,       // to arg
    Look,       // lookahead: the sub-program at pc+1 up to LookEnd; continue at arg if it
                // matches (if it does not, when negated)
    LookEnd,
    AssertEnd,  // $: at the end of the piece
    Match,
  };
  struct Inst {
    Op op;
    bool negated = false;
    int32_t arg = 0;  // Char: set; Split, Jump: target; Look: where to continue
    int32_t alt = 0;  // Split: the second choice
  };

  struct Parser;
  struct Choice {  // a backtracking point: resume at pc with the input at pos
    int32_t pc;
    size_t pos;
  };
  bool run(int32_t pc, std::span<const uint32_t> cps, std::span<const unicode::CharClass> classes, size_t pos,
           size_t end, std::vector<Choice>& stack, size_t& match_end) const;

  std::string pattern_;
  std::vector<CharSet> sets_;
  std::vector<Inst> program_;
};

}  // namespace qf
