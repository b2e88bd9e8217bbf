// SentencePiece-style BPE: the score-ordered merges, byte fallback and the space prefix on small
// vocabularies built in memory, then our trained 4k-piece vocabulary
// (tests/data/tokenizer/spm_wikitext_bpe4k.gguf) against the ids llama.cpp gave, which equal
// SentencePiece's own except where the text spells special tokens (reference_ids.json).
#include <gtest/gtest.h>

#include <chrono>

#include "io/gguf.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"
#include "tokenizer_test_util.h"

namespace qf {
namespace {

using Ids = std::vector<int32_t>;
using testing::error_of;

// <unk> <s> </s>, then the pieces given, with their scores.
Vocab spm_vocab(const std::vector<std::pair<std::string, float>>& pieces, bool byte_tokens) {
  Vocab v;
  v.kind = VocabKind::SentencePiece;
  v.tokens = {"<unk>", "<s>", "</s>"};
  v.types = {TokenType::Unknown, TokenType::Control, TokenType::Control};
  v.scores = {0, 0, 0};
  v.unk = 0, v.bos = 1, v.eos = 2;
  v.add_bos = true;
  v.add_space_prefix = true;
  if (byte_tokens) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) {
      v.tokens.push_back(std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">");
      v.types.push_back(TokenType::Byte);
      v.scores.push_back(0);
    }
  }
  for (const auto& [p, s] : pieces) {
    v.tokens.push_back(p);
    v.types.push_back(TokenType::Normal);
    v.scores.push_back(s);
  }
  return v;
}

// Ids of the pieces in spm_vocab(pieces, true): 3 + 256 + index.
constexpr int32_t kFirstPiece = 3 + 256;

TEST(SentencePiece, HigherScoreMergesFirst) {
  // Pieces ▁ a b c ▁a ab bc (ids kFirstPiece + 0..6); any adjacent pair whose concatenation
  // is a piece may merge, best score first.
  const std::vector<std::pair<std::string, float>> pieces = {
      {"\xE2\x96\x81", -1}, {"a", -1}, {"b", -1}, {"c", -1}, {"\xE2\x96\x81" "a", -5}, {"ab", -2}, {"bc", -3}};
  Tokenizer t = Tokenizer::from_vocab(spm_vocab(pieces, true));
  // "▁abc": ab (-2) beats bc (-3) and ▁a (-5); then neither ▁ab nor abc is a piece.
  EXPECT_EQ(t.encode("abc", false, false), (Ids{kFirstPiece + 0, kFirstPiece + 5, kFirstPiece + 3}));
  // With bc above ab: bc first, then ▁a (a+bc is no piece).
  auto p2 = pieces;
  p2[6].second = -1.5f;
  Tokenizer u = Tokenizer::from_vocab(spm_vocab(p2, true));
  EXPECT_EQ(u.encode("abc", false, false), (Ids{kFirstPiece + 4, kFirstPiece + 6}));
  // Equal scores: the leftmost pair first: "▁aaa" -> ▁ aa a, not ▁ a aa.
  Tokenizer w = Tokenizer::from_vocab(spm_vocab({{"\xE2\x96\x81", -1}, {"a", -1}, {"aa", -2}}, true));
  EXPECT_EQ(w.encode("aaa", false, false), (Ids{kFirstPiece + 0, kFirstPiece + 2, kFirstPiece + 1}));
}

TEST(SentencePiece, CharactersOutsideTheVocabularyFallBackToBytes) {
  Tokenizer t = Tokenizer::from_vocab(spm_vocab({{"\xE2\x96\x81", -1}, {"a", -1}}, true));
  // "é" = C3 A9 -> <0xC3> <0xA9> (ids 3 + byte).
  EXPECT_EQ(t.encode("a\xC3\xA9", false, false), (Ids{kFirstPiece + 0, kFirstPiece + 1, 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(t.decode(t.encode("a\xC3\xA9", true, false)), "<s>a\xC3\xA9");
  // Without byte tokens the unknown token stands for each byte.
  Tokenizer u = Tokenizer::from_vocab(spm_vocab({{"\xE2\x96\x81", -1}, {"a", -1}}, false));
  EXPECT_EQ(u.encode("a\xC3\xA9", false, false), (Ids{3, 4, 0, 0}));
}

TEST(SentencePiece, SpacesBecomeMetaSpaceAndOneIsPrefixedAfterEachSpecialToken) {
  Tokenizer t = Tokenizer::from_vocab(spm_vocab({{"\xE2\x96\x81", -1}, {"a", -1}, {"\xE2\x96\x81" "a", -2}}, true));
  const int32_t space = kFirstPiece, a = kFirstPiece + 1, space_a = kFirstPiece + 2;
  EXPECT_EQ(t.encode("a a", true, false), (Ids{1, space_a, space_a}));
  // llama.cpp puts the space prefix before the text after a special token too.
  EXPECT_EQ(t.encode("a</s>a", true, true), (Ids{1, space_a, 2, space_a}));
  EXPECT_EQ(t.encode(" a", false, false), (Ids{space, space_a}));
  // decode takes those spaces back.
  for (const char* s : {"a a", "a</s>a", " a", "  ", "</s> a", ""}) {
    EXPECT_EQ(t.decode(t.encode(s, false, true)), s) << s;
  }
  Vocab v = spm_vocab({{"\xE2\x96\x81", -1}, {"a", -1}}, true);
  v.add_space_prefix = false;
  Tokenizer n = Tokenizer::from_vocab(v);
  EXPECT_EQ(n.encode("a a", false, false), (Ids{a, space, a}));
}

TEST(SentencePiece, ScoresAreRequired) {
  Vocab v = spm_vocab({{"a", -1}}, false);
  v.scores.pop_back();
  v.source = "spm.gguf";
  const std::string msg = error_of([&] { Tokenizer::from_vocab(v); });
  EXPECT_NE(msg.find("spm.gguf"), std::string::npos) << msg;
  EXPECT_NE(msg.find("score"), std::string::npos) << msg;
}

// ---- the trained 4k vocabulary against llama.cpp and SentencePiece ----------------------------

class SpmWikiText : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string path = testing::tokenizer_data("spm_wikitext_bpe4k.gguf");
    file_ = gguf::File::open(path);
    tok_ = new Tokenizer(Tokenizer::from_gguf(file_->metadata(), path));
    ref_ = new nlohmann::json(testing::read_json(testing::tokenizer_data("reference_ids.json")));
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete ref_;
    file_.reset();
  }
  static inline std::shared_ptr<const gguf::File> file_;
  static inline Tokenizer* tok_ = nullptr;
  static inline nlohmann::json* ref_ = nullptr;
};

TEST_F(SpmWikiText, PropertiesAreLlamaTwos) {
  EXPECT_EQ(tok_->kind(), "spm");
  EXPECT_EQ(tok_->vocab_size(), 4000);
  EXPECT_EQ(tok_->bos_id(), 1);
  EXPECT_EQ(tok_->eos_id(), 2);
  EXPECT_TRUE(tok_->adds_bos());
  EXPECT_TRUE(tok_->is_end_of_generation(2));
  EXPECT_EQ(tok_->token_to_piece(3 + 'A'), "A");  // <0x41>
}

TEST_F(SpmWikiText, IdsEqualLlamaCppOnAwkwardStrings) {
  const auto& rec = (*ref_)["vocabs"]["spm"];
  const std::vector<std::string> inputs = testing::reference_inputs(*ref_);
  ASSERT_EQ(inputs.size(), rec["llama_cpp_parse_special"].size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    EXPECT_EQ(tok_->encode(inputs[i], true, true), testing::parse_ids(rec["llama_cpp_parse_special"][i]))
        << "input " << i << " \"" << inputs[i] << "\"";
    EXPECT_EQ(tok_->encode(inputs[i], true, false), testing::parse_ids(rec["llama_cpp_no_parse_special"][i]))
        << "input " << i << " \"" << inputs[i] << "\" (no parse_special)";
  }
}

TEST_F(SpmWikiText, WithoutSpecialTokensInTheTextIdsEqualSentencePieces) {
  const auto& rec = (*ref_)["vocabs"]["spm"];
  const auto strings = (*ref_)["strings"].get<std::vector<std::string>>();
  size_t compared = 0;
  for (size_t i = 0; i < strings.size(); ++i) {
    // SentencePiece knows no special tokens: "<s>" in text is characters to it.
    EXPECT_EQ(tok_->encode(strings[i], true, false), testing::parse_ids(rec["sentencepiece"][i])) << strings[i];
    ++compared;
  }
  EXPECT_EQ(compared, strings.size());
}

TEST_F(SpmWikiText, DecodeInvertsEncode) {
  for (const std::string& s : (*ref_)["strings"].get<std::vector<std::string>>())
    for (bool ps : {true, false}) EXPECT_EQ(tok_->decode(tok_->encode(s, false, ps)), s) << s;
}

TEST_F(SpmWikiText, IdsEqualLlamaCppOnAllOfWikiText2Test) {
  const std::string text = testing::read_text(std::string(QF_TEST_SHARED_DIR) + "/data/wikitext-2-raw-test.txt");
  const auto t0 = std::chrono::steady_clock::now();
  const Ids ids = tok_->encode(text, true, true);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto& want = (*ref_)["vocabs"]["spm"]["wikitext2_test_llama_cpp"];
  EXPECT_EQ(int64_t(ids.size()), want["count"].get<int64_t>());
  EXPECT_EQ(testing::ids_sha256(ids), want["sha256"].get<std::string>());
  EXPECT_EQ(testing::ids_sha256(ids), (*ref_)["vocabs"]["spm"]["wikitext2_test_sentencepiece"]["sha256"].get<std::string>());
  std::printf("[ perf ] SentencePiece 4k encode of WikiText-2 test: %zu tokens in %.3f s (%.0f tokens/s)\n", ids.size(), s,
              double(ids.size()) / s);
}

}  // namespace
}  // namespace qf
