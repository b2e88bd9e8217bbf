// Hugging Face config.json -> ModelConfig for llama, mistral and qwen2, defaults, RoPE scaling
// kinds, and errors that name the key.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "io/hf_config.h"
#include "io_test_util.h"

namespace qf {
namespace {

constexpr char kSource[] = "dir/config.json";

// Llama-3.1-8B's config.json, as transformers writes it.
nlohmann::json llama31() {
  return nlohmann::json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072,
    "mlp_bias": false, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0", "use_cache": true, "vocab_size": 128256})");
}

ModelConfig parse(const nlohmann::json& j) { return parse_hf_config(j.dump(), kSource); }

TEST(HfConfig, Llama31) {
  const ModelConfig c = parse(llama31());
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_layers, 32);
  EXPECT_EQ(c.num_heads, 32);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::Llama3);
  EXPECT_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_NO_THROW(c.validate(kSource));
}

TEST(HfConfig, DefaultsOfOptionalKeys) {
  nlohmann::json j = llama31();
  for (const char* k : {"num_key_value_heads", "rope_theta", "rope_scaling", "tie_word_embeddings", "hidden_act"})
    j.erase(k);
  ModelConfig c = parse(j);
  EXPECT_EQ(c.num_kv_heads, 32);  // no GQA
  EXPECT_EQ(c.head_dim, 128);     // hidden / heads
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::None);
  EXPECT_FALSE(c.tie_word_embeddings);
  // JSON null counts as absent; an explicit head_dim wins.
  j["num_key_value_heads"] = nullptr;
  j["head_dim"] = 64;
  c = parse(j);
  EXPECT_EQ(c.num_kv_heads, 32);
  EXPECT_EQ(c.head_dim, 64);
}

TEST(HfConfig, MistralSlidingWindow) {
  nlohmann::json j = llama31();
  j["model_type"] = "mistral";
  j.erase("rope_scaling");
  j["sliding_window"] = 4096;
  EXPECT_EQ(parse(j).sliding_window, 4096);
  j["sliding_window"] = nullptr;
  EXPECT_EQ(parse(j).sliding_window, 0);
}

TEST(HfConfig, Qwen2AlwaysHasQkvBias) {
  // Qwen2.5-0.5B's config (abridged).
  const nlohmann::json j = nlohmann::json::parse(R"({
    "architectures": ["Qwen2ForCausalLM"], "hidden_act": "silu", "hidden_size": 896,
    "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 21,
    "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
    "use_sliding_window": false, "vocab_size": 151936})");
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.architecture, "qwen2");
  EXPECT_TRUE(c.attention_bias);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.sliding_window, 0);  // present but not used: use_sliding_window is false
  EXPECT_EQ(c.rms_norm_eps, 1e-6);
}

TEST(HfConfig, RopeScalingKinds) {
  nlohmann::json j = llama31();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};  // the pre-4.45 key
  EXPECT_EQ(parse(j).rope_scaling.type, RopeScalingType::Linear);
  EXPECT_EQ(parse(j).rope_scaling.factor, 2.0);

  j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 3.0}};
  ModelConfig c = parse(j);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::Dynamic);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 131072);

  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768},
                       {"beta_fast", 16}};
  c = parse(j);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::Yarn);
  EXPECT_EQ(c.rope_scaling.factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 32768);
  EXPECT_EQ(c.rope_scaling.beta_fast, 16.0);
  EXPECT_EQ(c.rope_scaling.beta_slow, 1.0);
  EXPECT_EQ(c.rope_scaling.attention_factor, 0.0);

  j["rope_scaling"] = {{"rope_type", "default"}};
  EXPECT_EQ(parse(j).rope_scaling.type, RopeScalingType::None);

  j["rope_scaling"] = {{"rope_type", "longrope"}, {"factor", 4.0}};
  EXPECT_ERROR(parse(j), kSource, "\"longrope\" is not supported");
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  EXPECT_ERROR(parse(j), kSource, "rope_scaling", "missing key \"low_freq_factor\"");
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 0}};
  EXPECT_ERROR(parse(j), kSource, "factor must be positive");
  j["rope_scaling"] = "linear";
  EXPECT_ERROR(parse(j), kSource, "rope_scaling must be an object");
}

TEST(HfConfig, MissingKeysAreNamed) {
  for (const char* key : {"model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                          "vocab_size", "max_position_embeddings", "rms_norm_eps"}) {
    nlohmann::json j = llama31();
    j.erase(key);
    EXPECT_ERROR(parse(j), kSource, std::string("missing key \"") + key + "\"");
  }
}

TEST(HfConfig, WrongTypesAreNamed) {
  nlohmann::json j = llama31();
  j["hidden_size"] = "4096";
  EXPECT_ERROR(parse(j), kSource, "\"hidden_size\"", "must be an integer");
  j = llama31();
  j["num_hidden_layers"] = 32.5;
  EXPECT_ERROR(parse(j), "\"num_hidden_layers\"", "must be an integer");
  j = llama31();
  j["rms_norm_eps"] = "1e-5";
  EXPECT_ERROR(parse(j), "\"rms_norm_eps\"", "must be a number");
  j = llama31();
  j["tie_word_embeddings"] = 1;
  EXPECT_ERROR(parse(j), "\"tie_word_embeddings\"", "true or false");
}

TEST(HfConfig, UnsupportedModelsAreRejectedByName) {
  nlohmann::json j = llama31();
  j["model_type"] = "gpt2";
  EXPECT_ERROR(parse(j), kSource, "model_type \"gpt2\" is not supported");
  j = llama31();
  j["hidden_act"] = "gelu";
  EXPECT_ERROR(parse(j), "hidden_act \"gelu\"");
  j = llama31();
  j["attention_bias"] = true;
  EXPECT_ERROR(parse(j), "attention_bias = true");
  j = llama31();
  j["mlp_bias"] = true;
  EXPECT_ERROR(parse(j), "mlp_bias");
  j = llama31();
  j["partial_rotary_factor"] = 0.5;
  EXPECT_ERROR(parse(j), "partial_rotary_factor");
}

TEST(HfConfig, NotJson) {
  EXPECT_ERROR(parse_hf_config("{\"model_type\": ", kSource), kSource, "invalid JSON");
  EXPECT_ERROR(parse_hf_config("[]", kSource), kSource, "not a JSON object");
  EXPECT_ERROR(parse_hf_config("", kSource), kSource, "invalid JSON");
}

TEST(HfConfig, ValidateCatchesInconsistentValues) {
  nlohmann::json j = llama31();
  j["num_key_value_heads"] = 5;  // 32 heads are not a multiple of 5
  EXPECT_ERROR(parse(j).validate(kSource), kSource, "not a multiple of num_key_value_heads");
  j = llama31();
  j["vocab_size"] = 0;
  EXPECT_ERROR(parse(j).validate(kSource), "vocab_size must be positive");
  // Absurd sizes, each below 2^31 but not a model: rejected before anything is enumerated or
  // multiplied.
  j = llama31();
  j["num_hidden_layers"] = 5000;
  EXPECT_ERROR(parse(j).validate(kSource), "num_hidden_layers = 5000 exceeds the limit");
  j = llama31();
  j["vocab_size"] = int64_t(1) << 30;  // x 4096 hidden = 2^42 elements
  EXPECT_ERROR(parse(j).validate(kSource), "vocab_size x hidden_size", "absurdly large");
  j = llama31();
  j["hidden_size"] = int64_t(1) << 31;
  EXPECT_ERROR(parse(j).validate(kSource), "hidden_size", "absurdly large");
}

TEST(HfConfig, ChatTemplate) {
  EXPECT_EQ(parse_hf_chat_template(R"({"chat_template": "{{ x }}"})", "t.json"), "{{ x }}");
  EXPECT_EQ(parse_hf_chat_template(R"({"bos_token": "<s>"})", "t.json"), "");
  EXPECT_EQ(parse_hf_chat_template(
                R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})",
                "t.json"),
            "D");
  EXPECT_EQ(parse_hf_chat_template(R"({"chat_template": [{"name": "rag", "template": "R"}]})", "t.json"), "R");
  EXPECT_ERROR(parse_hf_chat_template(R"({"chat_template": 3})", "t.json"), "t.json", "chat_template");
}

// hf_config_json is parse_hf_config's inverse (quantized checkpoints write their config.json
// with it): every field survives the round trip, for each architecture and RoPE scaling kind.
TEST(HfConfig, WriterRoundTrips) {
  auto same = [](const ModelConfig& a, const ModelConfig& b) {
    const RopeScaling &x = a.rope_scaling, &y = b.rope_scaling;
    return a.architecture == b.architecture && a.name == b.name && a.vocab_size == b.vocab_size &&
           a.hidden_size == b.hidden_size && a.intermediate_size == b.intermediate_size &&
           a.num_layers == b.num_layers && a.num_heads == b.num_heads && a.num_kv_heads == b.num_kv_heads &&
           a.head_dim == b.head_dim && a.max_position_embeddings == b.max_position_embeddings &&
           a.rope_theta == b.rope_theta && a.rms_norm_eps == b.rms_norm_eps &&
           a.tie_word_embeddings == b.tie_word_embeddings && a.attention_bias == b.attention_bias &&
           a.sliding_window == b.sliding_window && x.type == y.type && x.factor == y.factor &&
           x.low_freq_factor == y.low_freq_factor && x.high_freq_factor == y.high_freq_factor &&
           x.original_max_position_embeddings == y.original_max_position_embeddings && x.beta_fast == y.beta_fast &&
           x.beta_slow == y.beta_slow && x.attention_factor == y.attention_factor;
  };
  std::vector<nlohmann::json> configs;
  configs.push_back(llama31());
  for (const nlohmann::json& rs : {nlohmann::json(nullptr), nlohmann::json{{"rope_type", "linear"}, {"factor", 2.0}},
                                   nlohmann::json{{"rope_type", "dynamic"}, {"factor", 3.0}},
                                   nlohmann::json{{"rope_type", "yarn"}, {"factor", 4.0}, {"beta_fast", 16},
                                                  {"original_max_position_embeddings", 32768}}}) {
    nlohmann::json j = llama31();
    j["rope_scaling"] = rs;
    j["tie_word_embeddings"] = true;
    j["head_dim"] = 64;
    configs.push_back(j);
  }
  nlohmann::json mistral = llama31();
  mistral["model_type"] = "mistral";
  mistral["sliding_window"] = 4096;
  configs.push_back(mistral);
  nlohmann::json qwen = llama31();
  qwen["model_type"] = "qwen2";
  qwen["use_sliding_window"] = false;
  qwen.erase("attention_bias");
  configs.push_back(qwen);
  for (const nlohmann::json& j : configs) {
    const ModelConfig c = parse(j);
    const ModelConfig back = parse_hf_config(hf_config_json(c).dump(), "written");
    EXPECT_TRUE(same(c, back)) << j.dump();
  }
}

}  // namespace
}  // namespace qf
