// The whole runtime on the default model (SmolLM2-135M-Instruct, Q4_1 GGUF): a greedy chat
// answer, and perplexity against llama.cpp's llama-perplexity on the same windows
// (tests/data/runtime/llama_cpp_perplexity_c512.txt holds its per-window numbers and the
// command lines). Skips when the model is absent (scripts/setup.sh fetches it); $QF_MODEL or
// $QF_MODELS_DIR and $QF_SHARED_DIR override where the model and WikiText-2 are found.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "runtime/generation.h"
#include "runtime/model.h"
#include "runtime/perplexity.h"
#include "tokenizer/tokenizer.h"

namespace qf {
namespace {

std::string model_path() {
  if (const char* m = std::getenv("QF_MODEL"); m && *m) return m;
  const char* env = std::getenv("QF_MODELS_DIR");
  return std::string(env && *env ? env : QF_TEST_MODELS_DIR) + "/SmolLM2-135M-Instruct.Q4_1.gguf";
}

std::string wikitext_path() {
  const char* env = std::getenv("QF_SHARED_DIR");
  return std::string(env && *env ? env : QF_TEST_SHARED_DIR) + "/data/wikitext-2-raw-test.txt";
}

// One model for every test of the file (loading dequantizes 135M weights).
const Model& default_model() {
  static const Model m = load_model(model_path());
  return m;
}

#define REQUIRE_MODEL()                                                                                \
  if (!std::filesystem::exists(model_path()))                                                          \
  GTEST_SKIP() << "default model not found at " << model_path() << " (run scripts/setup.sh)"

TEST(DefaultModel, GreedyChatAnswerIsCoherent) {
  REQUIRE_MODEL();
  const Model& m = default_model();
  auto engine = create_engine(m, {});
  const std::string prompt =
      m.tokenizer.apply_chat_template({{"user", "What is the capital of France?"}}, /*add_generation_prompt=*/true);
  const auto ids = m.tokenizer.encode(prompt, m.tokenizer.adds_bos(), /*parse_special=*/true);
  GenerationOptions g;
  g.max_new_tokens = 24;
  std::string streamed;
  const auto r = generate(*engine, m.tokenizer, ids, g, [&](std::string_view s) { streamed += s; });
  EXPECT_NE(r.text.find("Paris"), std::string::npos) << "answer: " << r.text;
  EXPECT_EQ(streamed, r.text) << "the streamed pieces must add up to the decoded text";
  EXPECT_TRUE(r.stopped_at_end_of_generation) << "a short answer ends with <|im_end|>: " << r.text;

  // A second prompt, to catch an engine that only knows one fact.
  const std::string p2 = m.tokenizer.apply_chat_template({{"user", "What color is the sky on a clear day?"}}, true);
  const auto r2 = generate(*engine, m.tokenizer, m.tokenizer.encode(p2, false, true), g);
  EXPECT_NE(r2.text.find("blue"), std::string::npos) << "answer: " << r2.text;
}

// Per-window running perplexities recorded from llama-perplexity: key -> values.
std::map<std::string, std::vector<double>> read_reference() {
  const std::string path = std::string(QF_TEST_DATA_DIR) + "/runtime/llama_cpp_perplexity_c512.txt";
  std::ifstream f(path);
  EXPECT_TRUE(f) << "cannot open " << path;
  std::map<std::string, std::vector<double>> out;
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ss(line);
    std::string key;
    ss >> key;
    double v;
    while (ss >> v) out[key].push_back(v);
  }
  return out;
}

std::string read_wikitext() {
  std::ifstream f(wikitext_path(), std::ios::binary);
  std::ostringstream text;
  text << f.rdbuf();
  return text.str();
}

// qforge's perplexity with llama.cpp's scoring on the first windows of 512 tokens.
std::vector<double> qforge_running_ppl(size_t windows, const std::string& activation_format) {
  const Model& m = default_model();
  EngineOptions eo;
  eo.slot_capacity = 512;
  eo.activation_format = activation_format;
  auto engine = create_engine(m, eo);
  PerplexityOptions o;
  o.ctx = 512;
  o.max_windows = int64_t(windows);
  o.scoring = PerplexityScoring::LlamaCpp;
  const auto r = perplexity_of_text(*engine, m.tokenizer, read_wikitext(), o);
  EXPECT_EQ(r.tokens_scored, int64_t(windows) * 255) << "512 - 256 - 1 scored tokens per window";
  return r.running_ppl;
}

#define REQUIRE_WIKITEXT() \
  if (!std::filesystem::exists(wikitext_path())) GTEST_SKIP() << "WikiText-2 not found at " << wikitext_path()

TEST(DefaultModel, PerplexityEqualsLlamaCppOnTheSameWeightsInFp32) {
  // llama.cpp run on an F32 copy of the weights (with an F32 KV cache) computes the same function
  // as qforge: equal up to FP32 summation order. llama.cpp prints 4 decimals: 1e-4 relative.
  REQUIRE_MODEL();
  REQUIRE_WIKITEXT();
  const auto ref = read_reference().at("dequantized_f32");
  const auto ours = qforge_running_ppl(ref.size(), "");
  ASSERT_EQ(ours.size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(ours[i], ref[i], 1e-4 * ref[i]) << "window " << i + 1;
}

TEST(DefaultModel, PerplexityMatchesLlamaCppOnTheQ41FileWithItsActivationQuantization) {
  // On the Q4_1 file llama.cpp quantizes activations to 8 bits per block of 32 with an F16 scale
  // (Q8_1/Q8_0 dot products), which raises perplexity by ~0.4% (docs/accuracy.md). qforge
  // simulating those activations (int8:g32:scale=f16) must land within the 0.2%; the
  // remaining differences (scale rounding details, F16 K/V) measured at <= 0.1% per window.
  REQUIRE_MODEL();
  REQUIRE_WIKITEXT();
  const auto ref = read_reference().at("q4_1");
  const auto ours = qforge_running_ppl(ref.size(), "int8:g32:scale=f16");
  ASSERT_EQ(ours.size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(ours[i], ref[i], 2e-3 * ref[i]) << "window " << i + 1;
}

}  // namespace
}  // namespace qf
