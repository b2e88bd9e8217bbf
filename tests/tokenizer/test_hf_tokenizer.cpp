// Tokenizers read from HF tokenizer.json: the SentencePiece test vocabulary in its HF form
// (spm_wikitext_bpe4k.tokenizer.json, converted as transformers does) gives the ids HF
// `tokenizers` gives (reference_ids.json) and the same ids as the GGUF path; small files show
// how each field is read; unsupported files fail by name. (SmolLM2's tokenizer.json:
// test_smollm2.cpp.)
#include <gtest/gtest.h>
#include "io/gguf.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_test_util.h"

namespace qf {
namespace {

using Ids = std::vector<int32_t>;
using nlohmann::json;
using testing::error_of;
using testing::ScratchDir;

const json& reference() {
  static const json ref = testing::read_json(testing::tokenizer_data("reference_ids.json"));
  return ref;
}

TEST(HfTokenizer, SentencePieceFormGivesHfTokenizersIdsAndTheGgufPathsIds) {
  ScratchDir dir;
  dir.write("tokenizer.json", testing::read_text(testing::tokenizer_data("spm_wikitext_bpe4k.tokenizer.json")));
  const Tokenizer hf = Tokenizer::from_hf_dir(dir.path());
  const auto file = gguf::File::open(testing::tokenizer_data("spm_wikitext_bpe4k.gguf"));
  const Tokenizer gg = Tokenizer::from_gguf(file->metadata(), "spm gguf");
  EXPECT_EQ(hf.kind(), "spm");
  EXPECT_TRUE(hf.adds_bos());  // the post-processor template starts with <s>
  EXPECT_EQ(hf.bos_id(), 1);
  const auto strings = reference()["strings"].get<std::vector<std::string>>();
  const auto& want = reference()["vocabs"]["spm"]["hf_tokenizers"];
  for (size_t i = 0; i < strings.size(); ++i) {
    const Ids ids = hf.encode(strings[i], true, true);
    EXPECT_EQ(ids, testing::parse_ids(want[i])) << strings[i];
    EXPECT_EQ(ids, gg.encode(strings[i], true, true)) << strings[i];
    EXPECT_EQ(hf.decode(hf.encode(strings[i], false, true)), strings[i]);
  }
  const std::string text = testing::read_text(std::string(QF_TEST_SHARED_DIR) + "/data/wikitext-2-raw-test.txt");
  EXPECT_EQ(testing::ids_sha256(hf.encode(text, true, true)),
            reference()["vocabs"]["spm"]["wikitext2_test_hf_tokenizers"]["sha256"].get<std::string>());
}

// A small byte-level tokenizer.json to vary field by field: the printable ASCII bytes (which
// map to themselves in GPT-2's alphabet) as ids 0-93, "ab" 94, two added tokens 95 and 96,
// then space, tab and newline (GPT-2's Ġ ĉ Ċ).
constexpr int32_t kSpace = 97, kTab = 98, kNewline = 99;
json tiny_byte_level() {
  json vocab = json::object();
  for (int c = '!'; c <= '~'; ++c) vocab[std::string(1, char(c))] = c - '!';
  vocab["ab"] = 94;
  vocab["\u0120"] = kSpace;
  vocab["\u0109"] = kTab;
  vocab["\u010A"] = kNewline;
  return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array({"a b"})}}},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
          {"added_tokens", json::array({{{"id", 95}, {"content", "<|end|>"}, {"special", true}},
                                        {{"id", 96}, {"content", "<tool>"}, {"special", false}}})}};
}

TEST(HfTokenizer, AddedTokensAreControlWhenSpecialElseUserDefined) {
  const Tokenizer t = Tokenizer::from_vocab(parse_hf_tokenizer(tiny_byte_level().dump(), "", "tiny.json"));
  EXPECT_EQ(t.kind(), "bpe (gpt2)");
  EXPECT_EQ(t.encode("ab<|end|>", false, true), (Ids{94, 95}));
  EXPECT_EQ(t.encode("ab<tool>", false, false), (Ids{94, 96}));  // user-defined: always split out
  EXPECT_TRUE(t.is_end_of_generation(95));                        // <|end|> ends a turn
}

TEST(HfTokenizer, AddedTokensStripWhitespaceWhenTheyAskTo) {
  json j = tiny_byte_level();
  const Tokenizer keep = Tokenizer::from_vocab(parse_hf_tokenizer(j.dump(), "", "tiny.json"));
  EXPECT_EQ(keep.encode("<|end|> \tab", false, true), (Ids{95, kSpace, kTab, 94}));
  EXPECT_EQ(keep.encode("ab \n<tool>", false, true), (Ids{94, kSpace, kNewline, 96}));
  j["added_tokens"][0]["rstrip"] = true;
  j["added_tokens"][1]["lstrip"] = true;
  const Tokenizer strip = Tokenizer::from_vocab(parse_hf_tokenizer(j.dump(), "", "tiny.json"));
  EXPECT_EQ(strip.encode("<|end|> \tab", false, true), (Ids{95, 94}));
  EXPECT_EQ(strip.encode("ab \n<tool>", false, true), (Ids{94, 96}));
}

TEST(HfTokenizer, ConfigNamesBosEosAndTheChatTemplate) {
  const json cfg = {{"bos_token", {{"content", "<|end|>"}}}, {"eos_token", "<|end|>"}, {"add_bos_token", true},
                    {"chat_template", "{{ '<|start_header_id|>' }}{{ '<|end_header_id|>' }}"}};
  const Tokenizer t = Tokenizer::from_vocab(parse_hf_tokenizer(tiny_byte_level().dump(), cfg.dump(), "tiny.json"));
  EXPECT_EQ(t.bos_id(), 95);
  EXPECT_EQ(t.eos_id(), 95);
  EXPECT_EQ(t.encode("ab", true, true), (Ids{95, 94}));
  EXPECT_EQ(t.chat_template().format(), ChatFormat::Llama3);
}

TEST(HfTokenizer, UnsupportedFilesFailNamingTheFieldAndFile) {
  struct Case {
    const char* what;
    std::function<void(json&)> edit;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {"WordPiece", [](json& j) { j["model"]["type"] = "WordPiece"; }, "WordPiece"},
      {"unknown regex",
       [](json& j) {
         j["pre_tokenizer"] = {{"type", "Sequence"},
                               {"pretokenizers", json::array({{{"type", "Split"}, {"pattern", {{"Regex", "[a-z]+"}}}, {"behavior", "Isolated"}},
                                                              {{"type", "ByteLevel"}, {"use_regex", false}}})}};
       },
       "[a-z]+"},
      {"Split behavior",
       [](json& j) {
         j["pre_tokenizer"] = {{"type", "Sequence"},
                               {"pretokenizers", json::array({{{"type", "Split"}, {"pattern", {{"Regex", "\\p{N}"}}}, {"behavior", "Removed"}},
                                                              {{"type", "ByteLevel"}}})}};
       },
       "Removed"},
      {"Whitespace pre-tokenizer", [](json& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; }, "Whitespace"},
      {"no pre-tokenizer", [](json& j) { j.erase("pre_tokenizer"); }, "neither byte-level"},
      {"id gap", [](json& j) { j["added_tokens"][1]["id"] = 200; }, "not contiguous"},
      {"bad merge", [](json& j) { j["model"]["merges"] = json::array({json::array({"a"})}); }, "merges[0]"},
      {"lowercase normalizer", [](json& j) { j["normalizer"] = {{"type", "Lowercase"}}; }, "Lowercase"},
  };
  for (const Case& c : cases) {
    json j = tiny_byte_level();
    c.edit(j);
    const std::string msg = error_of([&] { Tokenizer::from_vocab(parse_hf_tokenizer(j.dump(), "", "tiny.json")); });
    EXPECT_NE(msg.find("tiny.json"), std::string::npos) << c.what << ": " << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.what << ": " << msg;
  }
  const std::string msg = error_of([] { Tokenizer::from_hf_dir("/nonexistent-dir"); });
  EXPECT_NE(msg.find("tokenizer.json"), std::string::npos) << msg;
}

}  // namespace
}  // namespace qf
