// Byte-level BPE: the merge loop, the special-token partition and decoding on small vocabularies
// built in memory, with the expected ids worked out by hand. (SmolLM2's real vocabulary against
// llama.cpp: test_smollm2.cpp.)
#include <gtest/gtest.h>

#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"
#include "tokenizer_test_util.h"

namespace qf {
namespace {

using Ids = std::vector<int32_t>;
using testing::error_of;

// Token texts are written in GPT-2's byte alphabet; tests name them by their raw bytes.
std::string bl(const std::string& raw) { return unicode::bytes_to_byte_level(raw); }

// The 256 single bytes (id = byte value), then `extra` raw-byte tokens from id 256, merges
// given as raw-byte pairs.
Vocab byte_vocab(const std::vector<std::string>& extra, const std::vector<std::pair<std::string, std::string>>& merges,
                 const std::string& pre = "gpt2") {
  Vocab v;
  v.kind = VocabKind::ByteLevelBpe;
  v.pre = pre;
  for (int b = 0; b < 256; ++b) v.tokens.push_back(bl(std::string(1, char(b))));
  for (const std::string& t : extra) v.tokens.push_back(bl(t));
  for (const auto& [l, r] : merges) v.merges.push_back(bl(l) + " " + bl(r));
  return v;
}

TEST(BytePairEncoding, LowerRankMergesFirstWhereverItIs) {
  // "abc": the pair (b, c) outranks (a, b), so b+c merges first and then a+bc.
  Tokenizer t = Tokenizer::from_vocab(byte_vocab({"ab", "bc", "abc"}, {{"b", "c"}, {"a", "b"}, {"a", "bc"}}));
  EXPECT_EQ(t.encode("abc", false, false), (Ids{258}));
  // With (a, b) first, "ab" forms and no merge joins it to "c".
  Tokenizer u = Tokenizer::from_vocab(byte_vocab({"ab", "bc", "abc"}, {{"a", "b"}, {"b", "c"}, {"a", "bc"}}));
  EXPECT_EQ(u.encode("abc", false, false), (Ids{256, 'c'}));
}

TEST(BytePairEncoding, EqualRanksMergeLeftmostFirst) {
  Tokenizer t = Tokenizer::from_vocab(byte_vocab({"aa"}, {{"a", "a"}}));
  EXPECT_EQ(t.encode("aaa", false, false), (Ids{256, 'a'}));
  EXPECT_EQ(t.encode("aaaa", false, false), (Ids{256, 256}));
}

TEST(BytePairEncoding, MergesNeverCrossPreTokenizerWords) {
  // gpt2 splits "a b" into "a" and " b": the merge (a, space) cannot apply across them.
  Tokenizer t = Tokenizer::from_vocab(byte_vocab({"a "}, {{"a", " "}}));
  EXPECT_EQ(t.encode("a b", false, false), (Ids{'a', ' ', 'b'}));
  EXPECT_EQ(t.encode("a ", false, false), (Ids{'a', ' '}));
}

TEST(BytePairEncoding, MultiByteCharactersAreMergedFromTheirBytes) {
  // "é" is C3 A9: two byte symbols, joined by a merge.
  Tokenizer t = Tokenizer::from_vocab(byte_vocab({"\xC3\xA9"}, {{"\xC3", "\xA9"}}));
  EXPECT_EQ(t.encode("\xC3\xA9", false, false), (Ids{256}));
  EXPECT_EQ(t.decode(Ids{256}), "\xC3\xA9");
  // Malformed UTF-8 is read as U+FFFD (EF BF BD), as llama.cpp does.
  EXPECT_EQ(t.encode("\xFF", false, false), (Ids{0xEF, 0xBF, 0xBD}));
}

TEST(BytePairEncoding, IgnoreMergesTakesAWordThatIsATokenWhole) {
  Vocab v = byte_vocab({"ab", "abc"}, {{"a", "b"}});
  Tokenizer merged = Tokenizer::from_vocab(v);
  EXPECT_EQ(merged.encode("abc", false, false), (Ids{256, 'c'}));
  v.ignore_merges = true;
  Tokenizer whole = Tokenizer::from_vocab(v);
  EXPECT_EQ(whole.encode("abc", false, false), (Ids{257}));
}

TEST(BytePairEncoding, SpecialTokensAreSplitOutLongestFirst) {
  Vocab v = byte_vocab({"<|a|>", "<|a|>b", "<u>", "xy"}, {{"x", "y"}});
  v.types.assign(v.tokens.size(), TokenType::Normal);
  v.types[256] = TokenType::Control;
  v.types[257] = TokenType::Control;
  v.types[258] = TokenType::UserDefined;
  Tokenizer t = Tokenizer::from_vocab(v);
  // The longer "<|a|>b" is found before "<|a|>"; text between specials is tokenized apart.
  EXPECT_EQ(t.encode("<|a|>bxy<|a|>c", false, true), (Ids{257, 259, 256, 'c'}));
  // Without parse_special control tokens are plain text, user-defined ones still split out.
  EXPECT_EQ(t.encode("<|a|>xy<u>", false, false), (Ids{'<', '|', 'a', '|', '>', 259, 258}));
  // Round trip, specials included.
  for (bool ps : {true, false}) EXPECT_EQ(t.decode(t.encode("<|a|>bxy<|a|>c<u>", false, ps)), "<|a|>bxy<|a|>c<u>");
}

TEST(BytePairEncoding, BosIsAddedOnlyWhenTheModelAsks) {
  Vocab v = byte_vocab({"<s>"}, {});
  v.bos = 256;
  Tokenizer no = Tokenizer::from_vocab(v);
  EXPECT_EQ(no.encode("a", true, true), (Ids{'a'}));
  v.add_bos = true;
  Tokenizer yes = Tokenizer::from_vocab(v);
  EXPECT_EQ(yes.encode("a", true, true), (Ids{256, 'a'}));
  EXPECT_EQ(yes.encode("a", false, true), (Ids{'a'}));
  EXPECT_EQ(yes.encode("", true, true), (Ids{256}));
  v.bos = -1;
  EXPECT_NE(error_of([&] { Tokenizer::from_vocab(v); }).find("BOS"), std::string::npos);
}

TEST(BytePairEncoding, DecodeByTokenType) {
  Vocab v = byte_vocab({" hi", "<ctl>", "<unused>"}, {});
  v.types.assign(v.tokens.size(), TokenType::Normal);
  v.types[257] = TokenType::Control;
  v.types[258] = TokenType::Unused;
  Tokenizer t = Tokenizer::from_vocab(v);
  EXPECT_EQ(v.tokens[256], "\xC4\xA0hi");  // "Ġhi"
  EXPECT_EQ(t.token_to_piece(256), " hi");
  EXPECT_EQ(t.token_to_piece(257), "<ctl>");
  EXPECT_EQ(t.token_to_piece(258), "");  // llama.cpp prints nothing for unused tokens
  EXPECT_EQ(t.decode(Ids{257, 256, '!'}), "<ctl> hi!");
  EXPECT_NE(error_of([&] { t.token_to_piece(259); }).find("out of range"), std::string::npos);
}

TEST(BytePairEncoding, EndOfGenerationIsEosAndEndOfTurnTexts) {
  Vocab v = byte_vocab({"<|im_end|>", "<|eot_id|>", "<|im_start|>"}, {});
  v.eos = 'x';
  Tokenizer t = Tokenizer::from_vocab(v);
  EXPECT_TRUE(t.is_end_of_generation('x'));
  EXPECT_TRUE(t.is_end_of_generation(256));
  EXPECT_TRUE(t.is_end_of_generation(257));
  EXPECT_FALSE(t.is_end_of_generation(258));
  EXPECT_FALSE(t.is_end_of_generation('y'));
  EXPECT_FALSE(t.is_end_of_generation(-1));
  // End-of-turn texts are parsed as control tokens even when the file says normal (llama.cpp).
  EXPECT_EQ(t.encode("a<|im_end|>", false, true), (Ids{'a', 256}));
}

TEST(BytePairEncoding, BadVocabulariesAreRejectedWithTheirSource) {
  Vocab v = byte_vocab({}, {});
  v.merges = {"nospace"};
  v.source = "bad.gguf";
  const std::string msg = error_of([&] { Tokenizer::from_vocab(v); });
  EXPECT_NE(msg.find("bad.gguf"), std::string::npos) << msg;
  EXPECT_NE(msg.find("nospace"), std::string::npos) << msg;
  Vocab w = byte_vocab({}, {}, "no-such-pre");
  EXPECT_NE(error_of([&] { Tokenizer::from_vocab(w); }).find("no-such-pre"), std::string::npos);
  Vocab x = byte_vocab({}, {});
  x.eos = 300;
  EXPECT_NE(error_of([&] { Tokenizer::from_vocab(x); }).find("300"), std::string::npos);
}

}  // namespace
}  // namespace qf
