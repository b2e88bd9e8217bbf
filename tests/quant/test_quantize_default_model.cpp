// End to end on the default model: quantize (RTN: seconds, no calibration), then info, ppl and
// generate load the quantized checkpoint; and the checkpoint carries its tokenizer, so it works
// after the source GGUF is gone. Skips when the default model is absent.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/gguf.h"
#include "io/io_test_util.h"
#include "io/quantized_checkpoint.h"
#include "runtime/cli_util.h"
#include "runtime/model.h"
#include "tokenizer/chat_template.h"

namespace qf {
namespace {

using cli_test::run_qforge;

TEST(QuantizeDefaultModel, QuantizedCheckpointRunsInPplGenerateAndInfo) {
  const std::string model = std::string(QF_TEST_MODELS_DIR) + "/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(model)) GTEST_SKIP() << "no default model (scripts/setup.sh fetches it)";
  const std::string out = (std::filesystem::temp_directory_path() / "qf_test_quantize_w8a8").string();
  std::filesystem::remove_all(out);
  const auto q = run_qforge("quantize " + model + " --recipe w8a8-fp8 -o " + out + " --quiet");
  ASSERT_EQ(q.status, 0) << q.output;
  for (const char* s : {"reconstruction error per layer kind", "down_proj", "peak memory", "wrote"})
    EXPECT_NE(q.output.find(s), std::string::npos) << s << "\n" << q.output;
  const auto info = run_qforge("info " + out);
  EXPECT_EQ(info.status, 0) << info.output;
  EXPECT_NE(info.output.find("fp8_e4m3:channel x fp8_e4m3:token (210)"), std::string::npos) << info.output;
  const auto ppl = run_qforge("ppl " + out + " --ctx 64 --chunks 2 --json --quiet");
  ASSERT_EQ(ppl.status, 0) << ppl.output;
  const nlohmann::json j = nlohmann::json::parse(ppl.output.substr(ppl.output.find('{')));
  const double p = j["ppl"].get<double>();
  EXPECT_TRUE(std::isfinite(p) && p > 1 && p < 1000) << p;
  EXPECT_EQ(j["activations"], "checkpoint's: fp8_e4m3:token");
  // The FP8 activations are really applied: the same weights with FP32 activations differ.
  const auto f32 = run_qforge("ppl " + out + " --ctx 64 --chunks 2 --json --quiet --activations f32");
  ASSERT_EQ(f32.status, 0) << f32.output;
  EXPECT_NE(nlohmann::json::parse(f32.output.substr(f32.output.find('{')))["ppl"].get<double>(), p);
  const auto gen = run_qforge("generate " + out + " -p 'The capital of France is' -n 4 --temp 0 --quiet");
  EXPECT_EQ(gen.status, 0) << gen.output;
  const auto again = run_qforge("quantize " + model + " --recipe w8a8-fp8 -o " + out);
  EXPECT_NE(again.status, 0);
  EXPECT_NE(again.output.find("--force"), std::string::npos) << again.output;
  std::filesystem::remove_all(out);
}

// A checkpoint quantized from a GGUF file used to name that file by absolute path for its
// tokenizer; now it carries tokenizer.gguf. Quantize from a copy of the model, delete the copy,
// and the checkpoint must still tokenize exactly as the original and have the same chat template.
TEST(QuantizeDefaultModel, CheckpointFromGgufKeepsItsTokenizerAfterTheSourceIsGone) {
  const std::string model = std::string(QF_TEST_MODELS_DIR) + "/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(model)) GTEST_SKIP() << "no default model (scripts/setup.sh fetches it)";
  testing::ScratchDir dir;
  const std::string copy = dir.file("moved-away.gguf");
  const std::string out = dir.file("rtn-w8");
  std::filesystem::copy_file(model, copy);
  const auto q = run_qforge("quantize " + copy + " --recipe rtn-w8 -o " + out + " --quiet");
  ASSERT_EQ(q.status, 0) << q.output;
  ASSERT_TRUE(std::filesystem::remove(copy));

  // Nothing in the checkpoint points at the source any more.
  std::ifstream config_file(out + "/config.json");
  std::stringstream config_text;
  config_text << config_file.rdbuf();
  EXPECT_EQ(config_text.str().find("moved-away"), std::string::npos) << config_text.str().substr(0, 2000);
  EXPECT_FALSE(nlohmann::json::parse(config_text.str())["quantization_config"].contains("tokenizer_gguf"));

  // tokenizer.gguf: no tensors, every tokenizer.* key of the source with its type and value.
  const auto source = gguf::File::open(model);
  const auto carried = gguf::File::open(out + "/" + kTokenizerGgufFile);
  EXPECT_TRUE(carried->tensors().empty());
  size_t tokenizer_keys = 0;
  for (const std::string& key : source->metadata().keys()) {
    if (key.rfind("tokenizer.", 0) != 0 && key != "general.architecture") continue;
    ++tokenizer_keys;
    const gguf::Value* a = source->metadata().find(key);
    const gguf::Value* b = carried->metadata().find(key);
    ASSERT_NE(b, nullptr) << key;
    EXPECT_EQ(a->type, b->type) << key;
    EXPECT_EQ(a->array_type, b->array_type) << key;
    EXPECT_TRUE(a->data == b->data) << key;
  }
  EXPECT_GE(tokenizer_keys, 8u);  // model, tokens, merges, token_type, ids, pre, chat_template, ...
  // It is small: the vocabulary and merges, none of the weights.
  EXPECT_LT(std::filesystem::file_size(out + "/" + kTokenizerGgufFile), 4u << 20);

  const Model loaded = load_model(out);
  const Tokenizer reference = Tokenizer::from_gguf(source->metadata(), model);
  EXPECT_EQ(loaded.tokenizer.vocab_size(), reference.vocab_size());
  EXPECT_EQ(loaded.tokenizer.kind(), reference.kind());
  EXPECT_EQ(loaded.tokenizer.bos_id(), reference.bos_id());
  EXPECT_EQ(loaded.tokenizer.eos_id(), reference.eos_id());
  EXPECT_EQ(loaded.tokenizer.adds_bos(), reference.adds_bos());
  for (const char* text : {"Hello world", "  The quick brown fox, 1234567 \xc3\xbc \xe6\x97\xa5\xe6\x9c\xac\n\ttabs!!",
                           "<|im_start|>user\nWhat is 2+2?<|im_end|>", "don't   stop   'til", ""}) {
    for (bool special : {false, true}) {
      const std::vector<int32_t> ids = loaded.tokenizer.encode(text, true, special);
      EXPECT_EQ(ids, reference.encode(text, true, special)) << text << " special " << special;
      EXPECT_EQ(loaded.tokenizer.decode(ids), reference.decode(ids)) << text;
    }
  }
  const std::string jinja = source->metadata().get_string("tokenizer.chat_template");
  ASSERT_FALSE(jinja.empty());
  EXPECT_EQ(loaded.checkpoint.chat_template, jinja);
  EXPECT_EQ(loaded.tokenizer.chat_template().format(), reference.chat_template().format());
  const std::vector<ChatMessage> chat = {{"system", "Be brief."}, {"user", "Hi!"}, {"assistant", "Hello."},
                                         {"user", "Capital of France?"}};
  EXPECT_EQ(loaded.tokenizer.apply_chat_template(chat, true), reference.apply_chat_template(chat, true));
}

}  // namespace
}  // namespace qf
