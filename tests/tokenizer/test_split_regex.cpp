// The pre-tokenizer regex engine and families: checked against Python's `regex` module on
// awkward and random strings (tests/data/tokenizer/pre_tokenizer_splits.json), plus the
// engine's semantics case by case, the Unicode tables and the byte-level alphabet.
#include <gtest/gtest.h>

#include <set>

#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/split_regex.h"
#include "tokenizer/unicode.h"
#include "tokenizer_test_util.h"

namespace qf {
namespace {

using testing::error_of;

// The pieces `pattern` splits `text` into (one regex, whole text as one piece).
std::vector<std::string> split_with(const std::string& pattern, const std::string& text) {
  SplitRegex re(pattern);
  const std::vector<uint32_t> cps = unicode::decode_utf8(text);
  std::vector<unicode::CharClass> cls;
  for (uint32_t c : cps) cls.push_back(unicode::char_class(c));
  std::vector<size_t> lengths;
  if (!cps.empty()) lengths.push_back(cps.size());
  std::vector<std::string> out;
  size_t at = 0;
  for (size_t len : re.split(cps, cls, lengths)) {
    out.push_back(unicode::encode_utf8(std::vector<uint32_t>(cps.begin() + long(at), cps.begin() + long(at + len))));
    at += len;
  }
  return out;
}

using Pieces = std::vector<std::string>;

TEST(SplitRegex, AlternativesAreTriedInOrderNotLongestFirst) {
  EXPECT_EQ(split_with("a|ab", "ab"), (Pieces{"a", "b"}));
  EXPECT_EQ(split_with("ab|a", "ab"), (Pieces{"ab"}));
}

TEST(SplitRegex, GreedyQuantifiersBacktrackIntoLookahead) {
  // \s+(?!\S) leaves the last space of a run to the word after it.
  EXPECT_EQ(split_with(R"(\s+(?!\S)| ?\p{L}+)", "a   b"), (Pieces{"a", "  ", " b"}));
  // At the end of the text the whole run matches.
  EXPECT_EQ(split_with(R"(\s+(?!\S)| ?\p{L}+)", "a   "), (Pieces{"a", "   "}));
  EXPECT_EQ(split_with(R"(x(?=y))", "xyxz"), (Pieces{"x", "yxz"}));
}

TEST(SplitRegex, CountedRepetition) {
  EXPECT_EQ(split_with(R"(\p{N}{1,3})", "1234567"), (Pieces{"123", "456", "7"}));
  EXPECT_EQ(split_with(R"(a{2})", "aaaaa"), (Pieces{"aa", "aa", "a"}));
  EXPECT_EQ(split_with(R"(a{2,})", "aaaaab"), (Pieces{"aaaaa", "b"}));
}

TEST(SplitRegex, TextBetweenMatchesIsKeptAsPieces) {
  EXPECT_EQ(split_with(R"(\p{N})", "ab12c"), (Pieces{"ab", "1", "2", "c"}));
  EXPECT_EQ(split_with(R"(\s+$)", "ab  "), (Pieces{"ab", "  "}));
  EXPECT_EQ(split_with(R"(\s+$)", "a  b"), (Pieces{"a  b"}));
}

TEST(SplitRegex, ClassesWithCategoriesRangesAndNegation) {
  EXPECT_EQ(split_with(R"([^\s\p{L}]+)", "ab!?c d"), (Pieces{"ab", "!?", "c d"}));
  EXPECT_EQ(split_with(R"(\P{L}+)", "ab12é3"), (Pieces{"ab", "12", "é", "3"}));
  EXPECT_EQ(split_with("[一-龥]+", "x中文y"), (Pieces{"x", "中文", "y"}));
  // '(' and '|' inside a class are literals.
  EXPECT_EQ(split_with("[^(|)]+", "a(b|c)"), (Pieces{"a", "(", "b", "|", "c", ")"}));
  EXPECT_EQ(split_with(R"([\$\+]+)", "a$+b"), (Pieces{"a", "$+", "b"}));
}

TEST(SplitRegex, WhiteSpaceIsTheUnicodeProperty) {
  // U+3000 and U+0085 are White_Space; U+001C (str.isspace in Python) and U+200B are not.
  EXPECT_EQ(split_with(R"(\s+)", "a\u3000\u0085b"), (Pieces{"a", "\u3000\u0085", "b"}));
  EXPECT_EQ(split_with(R"(\s+)", "a\x1c\u200b"), (Pieces{"a\x1c\u200b"}));
}

TEST(SplitRegex, UnsupportedSyntaxIsRejectedWithThePattern) {
  for (const char* bad : {"a+?", "(?i:a)", "(?<=a)b", R"(\d)", R"(\w+)", "(a", "a)", "[ab", ".", R"(\p{Lu})", "(a*)*",
                          "(a{1000}){1000}", ""}) {
    const std::string msg = error_of([&] { SplitRegex r(bad); });
    EXPECT_NE(msg.find("regex"), std::string::npos) << bad << ": " << msg;
  }
}

TEST(PreTokenizer, FamiliesSplitAsPythonRegexDoes) {
  const nlohmann::json fx = testing::read_json(testing::tokenizer_data("pre_tokenizer_splits.json"));
  const auto& strings = fx["strings"];
  ASSERT_GT(strings.size(), 200u);
  size_t families = 0;
  for (const auto& [family, data] : fx["families"].items()) {
    ++families;
    // The fixture was computed with these patterns; the C++ table must not have drifted.
    EXPECT_EQ(PreTokenizer::family_patterns(family), data["patterns"].get<std::vector<std::string>>()) << family;
    const PreTokenizer pre = PreTokenizer::from_gguf_name(family, "test");
    for (size_t i = 0; i < strings.size(); ++i) {
      const std::string s = strings[i].get<std::string>();
      std::string lengths;
      for (const std::string& w : pre.split(s)) {
        if (!lengths.empty()) lengths += ' ';
        lengths += std::to_string(unicode::decode_utf8(w).size());
      }
      EXPECT_EQ(lengths, data["splits"][i].get<std::string>()) << family << " on string " << i << " \"" << s << "\"";
    }
  }
  EXPECT_GE(families, 9u);
}

TEST(PreTokenizer, GgufNamesSelectFamilies) {
  EXPECT_EQ(PreTokenizer::from_gguf_name("smollm", "t").name(), "smollm");
  EXPECT_EQ(PreTokenizer::from_gguf_name("starcoder", "t").name(), "smollm");
  EXPECT_EQ(PreTokenizer::from_gguf_name("llama-bpe", "t").name(), "llama3");
  EXPECT_TRUE(PreTokenizer::from_gguf_name("llama-bpe", "t").ignores_merges());
  EXPECT_FALSE(PreTokenizer::from_gguf_name("dbrx", "t").ignores_merges());
  EXPECT_EQ(PreTokenizer::from_gguf_name("gpt-2", "t").name(), "gpt2");
  EXPECT_EQ(PreTokenizer::from_gguf_name("deepseek-r1-qwen", "t").name(), "qwen2");
}

TEST(PreTokenizer, UnknownNameListsTheSupportedOnes) {
  const std::string msg = error_of([] { PreTokenizer::from_gguf_name("tekken", "model.gguf"); });
  EXPECT_NE(msg.find("model.gguf"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"tekken\""), std::string::npos) << msg;
  for (const char* name : {"smollm", "llama-bpe", "qwen2", "gpt-2", "default"})
    EXPECT_NE(msg.find(name), std::string::npos) << msg;
}

TEST(PreTokenizer, HfSpellingsMapToFamilies) {
  const std::string gpt2_hf = R"re('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)re";
  EXPECT_EQ(PreTokenizer::from_patterns({"\\p{N}", gpt2_hf}, "t").name(), "smollm");
  EXPECT_EQ(PreTokenizer::from_patterns({gpt2_hf}, "t").name(), "gpt2");
  EXPECT_EQ(PreTokenizer::from_patterns(
                {R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re"},
                "t")
                .name(),
            "llama3");
  EXPECT_EQ(PreTokenizer::from_patterns(
                {R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re"},
                "t")
                .name(),
            "qwen2");
  const std::string msg = error_of([&] { PreTokenizer::from_patterns({"[a-z]+", gpt2_hf}, "tok.json"); });
  EXPECT_NE(msg.find("tok.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[a-z]+"), std::string::npos) << msg;
}

TEST(Unicode, TablesAreUnicode15_1AsLlamaCpp) {
  EXPECT_STREQ(unicode::unicode_version(), "15.1.0");
  EXPECT_EQ(unicode::category('A'), unicode::Category::Letter);
  EXPECT_EQ(unicode::category(0x0663), unicode::Category::Number);        // ٣ ARABIC-INDIC DIGIT THREE
  EXPECT_EQ(unicode::category(0x216B), unicode::Category::Number);        // Ⅻ (Nl)
  EXPECT_EQ(unicode::category(0x0301), unicode::Category::Mark);
  EXPECT_EQ(unicode::category('~'), unicode::Category::Symbol);
  EXPECT_EQ(unicode::category(0x0378), unicode::Category::Unassigned);
  EXPECT_EQ(unicode::category(0x2EBF0), unicode::Category::Letter);       // CJK Ext. I: new in 15.1
  EXPECT_EQ(unicode::category(0x1CC00), unicode::Category::Unassigned);   // assigned in 16.0
  EXPECT_EQ(unicode::category(0x10FFFF + 1), unicode::Category::Unassigned);
  EXPECT_TRUE(unicode::is_white_space(0x3000));
  EXPECT_TRUE(unicode::is_white_space(0x85));
  EXPECT_FALSE(unicode::is_white_space(0x1C));
  EXPECT_FALSE(unicode::is_white_space(0x200B));
}

TEST(Unicode, MalformedUtf8BecomesReplacementCharactersOneBytePerError) {
  // A lone continuation byte, a truncated 3-byte sequence, a 5-byte lead, then valid text.
  const std::vector<uint32_t> cps = unicode::decode_utf8("\x80" "\xE2\x82" "\xF8" "a\xC3\xA9");
  EXPECT_EQ(cps, (std::vector<uint32_t>{0xFFFD, 0xFFFD, 0xFFFD, 0xFFFD, 'a', 0xE9}));
  EXPECT_EQ(unicode::encode_utf8(unicode::decode_utf8("😀 €")), "😀 €");
}

TEST(Unicode, ByteLevelAlphabetIsGpt2s) {
  std::set<uint32_t> seen;
  for (int b = 0; b < 256; ++b) {
    const uint32_t cp = unicode::byte_to_code_point(uint8_t(b));
    EXPECT_TRUE(seen.insert(cp).second) << b;
    EXPECT_EQ(unicode::code_point_to_byte(cp), b);
  }
  // The bytes GPT-2 vocabularies are known by: space is 'Ġ' (U+0120), newline 'Ċ' (U+010A).
  EXPECT_EQ(unicode::byte_to_code_point(' '), 0x120u);
  EXPECT_EQ(unicode::byte_to_code_point('\n'), 0x10Au);
  EXPECT_EQ(unicode::byte_to_code_point('a'), uint32_t('a'));
  EXPECT_EQ(unicode::byte_to_code_point(0xAD), 0x143u);  // the last non-printable byte
  std::string all;
  for (int b = 0; b < 256; ++b) all += char(b);
  EXPECT_EQ(unicode::byte_level_to_bytes(unicode::bytes_to_byte_level(all)), all);
}

}  // namespace
}  // namespace qf
