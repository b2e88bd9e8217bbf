// SmolLM2-135M-Instruct's tokenizer (the default model's GGUF) against independent
// implementations: the ids llama.cpp's llama-tokenize gave for awkward strings and for all of
// WikiText-2 test, and HF `tokenizers` on SmolLM2's tokenizer.json rebuilt from the same
// vocabulary (tests/data/tokenizer/reference_ids.json). Skips when the model is absent.
#include <gtest/gtest.h>

#include <chrono>

#include "io/gguf.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_test_util.h"

namespace qf {
namespace {

using Ids = std::vector<int32_t>;
using nlohmann::json;
using testing::ScratchDir;

class SmolLM2 : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string path = testing::default_model_path();
    if (path.empty()) return;
    file_ = gguf::File::open(path);
    tok_ = new Tokenizer(Tokenizer::from_gguf(file_->metadata(), path));
    ref_ = new nlohmann::json(testing::read_json(testing::tokenizer_data("reference_ids.json")));
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete ref_;
    tok_ = nullptr;
    ref_ = nullptr;
    file_.reset();
  }
  void SetUp() override {
    if (!tok_) GTEST_SKIP() << "the default model is absent (scripts/setup.sh fetches it into models/)";
  }
  static inline std::shared_ptr<const gguf::File> file_;
  static inline Tokenizer* tok_ = nullptr;
  static inline nlohmann::json* ref_ = nullptr;
};

TEST_F(SmolLM2, PropertiesAreTheFilesAndLlamaCpps) {
  EXPECT_EQ(tok_->kind(), "bpe (smollm)");
  EXPECT_EQ(tok_->vocab_size(), 49152);
  EXPECT_EQ(tok_->bos_id(), 1);  // <|im_start|>
  EXPECT_EQ(tok_->eos_id(), 2);  // <|im_end|>
  EXPECT_FALSE(tok_->adds_bos());  // add_bos_token = false in this file
  // Generation stops at <|im_end|> (EOS and end of turn) and <|endoftext|>, not <|im_start|>.
  EXPECT_TRUE(tok_->is_end_of_generation(2));
  EXPECT_TRUE(tok_->is_end_of_generation(0));
  EXPECT_FALSE(tok_->is_end_of_generation(1));
  EXPECT_EQ(tok_->token_id("<|im_end|>"), 2);
  EXPECT_EQ(tok_->chat_template().format(), ChatFormat::ChatML);
  EXPECT_EQ(tok_->chat_template().default_system_prompt(), "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
}

TEST_F(SmolLM2, IdsEqualLlamaCppOnAwkwardStrings) {
  const auto& rec = (*ref_)["vocabs"]["smollm2"];
  const std::vector<std::string> inputs = testing::reference_inputs(*ref_);
  ASSERT_EQ(inputs.size(), rec["llama_cpp_parse_special"].size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    EXPECT_EQ(tok_->encode(inputs[i], true, true), testing::parse_ids(rec["llama_cpp_parse_special"][i]))
        << "input " << i << " \"" << inputs[i] << "\"";
    EXPECT_EQ(tok_->encode(inputs[i], true, false), testing::parse_ids(rec["llama_cpp_no_parse_special"][i]))
        << "input " << i << " \"" << inputs[i] << "\" (no parse_special)";
  }
}

TEST_F(SmolLM2, DecodeInvertsEncode) {
  for (const std::string& s : (*ref_)["strings"].get<std::vector<std::string>>()) {
    for (bool ps : {true, false}) EXPECT_EQ(tok_->decode(tok_->encode(s, false, ps)), s) << s;
  }
}

TEST_F(SmolLM2, IdsEqualLlamaCppOnAllOfWikiText2Test) {
  const std::string text = testing::read_text(std::string(QF_TEST_SHARED_DIR) + "/data/wikitext-2-raw-test.txt");
  const auto t0 = std::chrono::steady_clock::now();
  const Ids ids = tok_->encode(text, true, true);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto& want = (*ref_)["vocabs"]["smollm2"]["wikitext2_test_llama_cpp"];
  EXPECT_EQ(int64_t(ids.size()), want["count"].get<int64_t>());
  EXPECT_EQ(testing::ids_sha256(ids), want["sha256"].get<std::string>());
  // Where they differ: the first block whose digest differs.
  const size_t block = want["block_ids"].get<size_t>();
  for (size_t b = 0; b * block < ids.size() && b < want["block_sha256"].size(); ++b) {
    const Ids part(ids.begin() + long(b * block), ids.begin() + long(std::min(ids.size(), (b + 1) * block)));
    if (testing::ids_sha256(part) != want["block_sha256"][b].get<std::string>()) {
      ADD_FAILURE() << "first difference in ids " << b * block << ".." << (b + 1) * block;
      break;
    }
  }
  EXPECT_EQ(Ids(ids.begin(), ids.begin() + 64), testing::parse_ids(want["first_ids"]));
  std::printf("[ perf ] SmolLM2 encode of WikiText-2 test: %zu bytes -> %zu tokens in %.3f s (%.0f tokens/s, %.2f MB/s)\n",
              text.size(), ids.size(), s, double(ids.size()) / s, double(text.size()) / s / 1e6);
  EXPECT_EQ(tok_->decode(ids), text);
}

// SmolLM2's tokenizer.json: the committed skeleton (pre-tokenizer, post-processor, ...) with the
// GGUF file's tokens, merges and control tokens filled in, as make_tokenizer_reference.py does.
json smollm2_tokenizer_json(const gguf::Metadata& md, bool merges_as_pairs) {
  json tj = testing::read_json(testing::tokenizer_data("smollm2_tokenizer_skeleton.json"));
  tj.erase("comment");
  const auto tokens = md.get_string_array("tokenizer.ggml.tokens");
  const auto types = md.get_int_array("tokenizer.ggml.token_type");
  tj["added_tokens"] = json::array();
  json vocab = json::object();
  for (size_t i = 0; i < tokens.size(); ++i) {
    vocab[tokens[i]] = i;
    if (types[i] == 3) tj["added_tokens"].push_back({{"id", i}, {"content", tokens[i]}, {"special", true}});
  }
  tj["model"]["vocab"] = std::move(vocab);
  json merges = json::array();
  for (const std::string& m : md.get_string_array("tokenizer.ggml.merges")) {
    if (merges_as_pairs) {
      const size_t sp = m.find(' ', 1);
      merges.push_back(json::array({m.substr(0, sp), m.substr(sp + 1)}));
    } else {
      merges.push_back(m);
    }
  }
  tj["model"]["merges"] = std::move(merges);
  return tj;
}

TEST_F(SmolLM2, HfTokenizerJsonGivesHfTokenizersIdsAndTheGgufPathsIds) {
  const Tokenizer& gg = *tok_;
  const auto strings = (*ref_)["strings"].get<std::vector<std::string>>();
  const auto& want = (*ref_)["vocabs"]["smollm2"]["hf_tokenizers"];
  for (bool pairs : {false, true}) {
    ScratchDir dir;
    dir.write("tokenizer.json", smollm2_tokenizer_json(file_->metadata(), pairs).dump());
    dir.write("tokenizer_config.json", testing::read_text(testing::tokenizer_data("smollm2_tokenizer_config.json")));
    const Tokenizer hf = Tokenizer::from_hf_dir(dir.path());
    EXPECT_EQ(hf.kind(), "bpe (smollm)");
    EXPECT_EQ(hf.bos_id(), 1);
    EXPECT_EQ(hf.eos_id(), 2);
    EXPECT_FALSE(hf.adds_bos());
    EXPECT_EQ(hf.chat_template().default_system_prompt(), gg.chat_template().default_system_prompt());
    for (size_t i = 0; i < strings.size(); ++i) {
      const Ids ids = hf.encode(strings[i], true, true);
      EXPECT_EQ(ids, testing::parse_ids(want[i])) << strings[i];
      EXPECT_EQ(ids, gg.encode(strings[i], true, true)) << strings[i];
      EXPECT_EQ(hf.encode(strings[i], true, false), gg.encode(strings[i], true, false)) << strings[i];
    }
    if (!pairs) {
      const std::string text = testing::read_text(std::string(QF_TEST_SHARED_DIR) + "/data/wikitext-2-raw-test.txt");
      EXPECT_EQ(testing::ids_sha256(hf.encode(text, true, true)),
                (*ref_)["vocabs"]["smollm2"]["wikitext2_test_hf_tokenizers"]["sha256"].get<std::string>());
    }
  }
}

}  // namespace
}  // namespace qf
