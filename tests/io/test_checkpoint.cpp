// load_checkpoint on tiny models written here: a llama GGUF (Q/K rows permuted as llama.cpp's
// converter does, token embedding in Q8_0), a qwen2 GGUF, and HF folders (single file and
// sharded); then each kind of missing or wrong piece.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "gguf_builder.h"
#include "io/checkpoint.h"
#include "io/gguf.h"
#include "io/gguf_llama.h"
#include "io/safetensors.h"
#include "io_test_util.h"

namespace qf {
namespace {

namespace st = safetensors;

// head_dim 8 (> 4, where the Q/K permutation stops being its own inverse), GQA 4:2.
ModelConfig tiny_config(const std::string& arch = "llama") {
  ModelConfig c;
  c.architecture = arch;
  c.vocab_size = 10;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 64;
  c.rope_theta = 10000.0;
  c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = true;
  c.attention_bias = arch == "qwen2";
  return c;
}

// Random F32 weights under canonical names, in HF order. The embedding holds Q8_0-representable
// values (0.0625 * int8) so that a Q8_0 copy of it dequantizes exactly.
std::map<std::string, Tensor> tiny_weights(const ModelConfig& c, bool with_biases, uint32_t seed = 5) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist;
  std::map<std::string, Tensor> w;
  ModelConfig shapes_of = c;
  shapes_of.attention_bias = with_biases;
  for (auto& [name, shape] : required_tensor_shapes(shapes_of)) {
    Tensor t = Tensor::empty(DType::F32, shape);
    for (int64_t i = 0; i < t.numel(); ++i) t.data_mut<float>()[i] = dist(gen);
    w[name] = t;
  }
  Tensor& e = w[names::embed()];
  for (int64_t i = 0; i < e.numel(); ++i) e.data_mut<float>()[i] = 0.0625f * float(int(gen() % 256) - 128);
  return w;
}

std::string gguf_name(const std::string& canonical) {
  if (canonical == names::embed()) return "token_embd.weight";
  if (canonical == names::final_norm()) return "output_norm.weight";
  if (canonical == names::lm_head()) return "output.weight";
  // model.layers.N.<leaf>
  const size_t dot = canonical.find('.', 13);
  const std::string layer = canonical.substr(13, dot - 13), leaf = canonical.substr(dot + 1);
  const std::map<std::string, std::string> leaves = {
      {"input_layernorm.weight", "attn_norm.weight"},       {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},         {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},         {"self_attn.o_proj.weight", "attn_output.weight"},
      {"self_attn.q_proj.bias", "attn_q.bias"},             {"self_attn.k_proj.bias", "attn_k.bias"},
      {"self_attn.v_proj.bias", "attn_v.bias"},             {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},              {"mlp.down_proj.weight", "ffn_down.weight"}};
  return "blk." + layer + "." + leaves.at(leaf);
}

std::vector<uint64_t> ne_of(const Shape& s) { return std::vector<uint64_t>(s.rbegin(), s.rend()); }

std::vector<float> values(const Tensor& t) { return std::vector<float>(t.data<float>(), t.data<float>() + t.numel()); }

// Q8_0 blocks of a tensor whose values are 0.0625 * int8: d = 0.0625 (F16 0x2c00).
std::vector<uint8_t> q8_0_of(const Tensor& t) {
  std::vector<uint8_t> out;
  for (int64_t i = 0; i < t.numel(); i += 32) {
    out.push_back(0x00);
    out.push_back(0x2c);
    for (int64_t j = 0; j < 32; ++j) out.push_back(uint8_t(int8_t(t.data<float>()[i + j] / 0.0625f)));
  }
  return out;
}

struct GgufOptions {
  std::string skip;                       // canonical name to leave out
  std::string reshape;                    // canonical name written with a wrong shape
  std::vector<std::string> extra;         // extra GGUF tensor names (4 F32 values each)
  bool embed_q8_0 = true;
};

GgufOptions skipping(const std::string& canonical) {
  GgufOptions o;
  o.skip = canonical;
  return o;
}
GgufOptions reshaping(const std::string& canonical) {
  GgufOptions o;
  o.reshape = canonical;
  return o;
}
GgufOptions extra_tensor(const std::string& gguf_name) {
  GgufOptions o;
  o.extra = {gguf_name};
  return o;
}

void write_gguf(const std::string& path, const ModelConfig& c, const std::map<std::string, Tensor>& w,
                const GgufOptions& o = {}) {
  testing::GgufBuilder b;
  const std::string a = c.architecture + ".";
  b.add_string("general.architecture", c.architecture);
  b.add_string("general.name", "tiny");
  b.add_u32(a + "block_count", uint32_t(c.num_layers));
  b.add_u32(a + "context_length", uint32_t(c.max_position_embeddings));
  b.add_u32(a + "embedding_length", uint32_t(c.hidden_size));
  b.add_u32(a + "feed_forward_length", uint32_t(c.intermediate_size));
  b.add_u32(a + "attention.head_count", uint32_t(c.num_heads));
  b.add_u32(a + "attention.head_count_kv", uint32_t(c.num_kv_heads));
  b.add_f32(a + "rope.freq_base", float(c.rope_theta));
  b.add_f32(a + "attention.layer_norm_rms_epsilon", float(c.rms_norm_eps));
  b.add_u32(a + "vocab_size", uint32_t(c.vocab_size));
  b.add_string("tokenizer.chat_template", "{{ messages }}");
  const bool interleaved = c.architecture == "llama";
  for (const auto& [name, t] : w) {
    if (name == o.skip) continue;
    Tensor stored = t;
    const bool is_q = name.find("q_proj") != std::string::npos, is_k = name.find("k_proj") != std::string::npos;
    if (interleaved && (is_q || is_k)) stored = gguf_llama::permute_qk_rows(t, is_q ? c.num_heads : c.num_kv_heads);
    std::vector<uint64_t> ne = ne_of(stored.shape());
    if (name == o.reshape) ne = {ne[0] * (ne.size() > 1 ? ne[1] : 1)};  // flattened: the wrong shape
    if (name == names::embed() && o.embed_q8_0) {
      b.add_tensor(gguf_name(name), ne, uint32_t(gguf::GGMLType::Q8_0), q8_0_of(stored));
    } else {
      b.add_f32_tensor(gguf_name(name), ne, values(stored));
    }
  }
  for (const std::string& e : o.extra) b.add_f32_tensor(e, {4}, {1, 2, 3, 4});
  testing::write_bytes(path, b.build());
}

void expect_same_values(const Tensor& actual, const Tensor& expected, const std::string& name) {
  ASSERT_EQ(actual.dtype(), DType::F32) << name;
  ASSERT_EQ(actual.shape(), expected.shape()) << name;
  EXPECT_EQ(0, std::memcmp(actual.raw(), expected.raw(), expected.nbytes())) << name;
}

TEST(Checkpoint, LlamaGguf) {
  testing::ScratchDir dir;
  const ModelConfig c = tiny_config();
  const auto w = tiny_weights(c, false);
  const std::string path = dir.file("tiny.gguf");
  write_gguf(path, c, w);
  const Checkpoint ck = load_checkpoint(path);
  EXPECT_EQ(ck.format, CheckpointFormat::GGUF);
  EXPECT_EQ(ck.path, path);
  ASSERT_NE(ck.gguf, nullptr);
  EXPECT_EQ(ck.gguf->metadata().get_string("general.name"), "tiny");
  EXPECT_EQ(ck.chat_template, "{{ messages }}");
  EXPECT_EQ(ck.config.architecture, "llama");
  EXPECT_EQ(ck.config.hidden_size, 32);
  EXPECT_EQ(ck.config.num_kv_heads, 2);
  EXPECT_EQ(ck.config.vocab_size, 10);
  EXPECT_TRUE(ck.config.tie_word_embeddings);
  EXPECT_FALSE(ck.has(names::lm_head()));
  ASSERT_EQ(ck.tensors.size(), w.size());
  // Every tensor comes back under its canonical name with the HF values: q/k rows un-permuted,
  // the Q8_0 embedding dequantized.
  for (const auto& [name, t] : w) expect_same_values(ck.tensor(name), t, name);
  EXPECT_EQ(ck.source_dtypes.at(names::embed()), "Q8_0");
  EXPECT_EQ(ck.source_dtypes.at(names::layer(1, "self_attn.k_proj.weight")), "F32");
  EXPECT_ERROR(ck.tensor("nope"), "tiny.gguf", "no tensor 'nope'");
}

TEST(Checkpoint, LlamaGgufBiasesAreUnpermutedToo) {
  testing::ScratchDir dir;
  const ModelConfig c = tiny_config();
  const auto w = tiny_weights(c, true);
  write_gguf(dir.file("b.gguf"), c, w);
  const Checkpoint ck = load_checkpoint(dir.file("b.gguf"));
  EXPECT_TRUE(ck.config.attention_bias);
  for (const char* leaf : {"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"})
    expect_same_values(ck.tensor(names::layer(0, leaf)), w.at(names::layer(0, leaf)), leaf);
}

TEST(Checkpoint, UntiedGgufHasLmHead) {
  testing::ScratchDir dir;
  ModelConfig c = tiny_config();
  c.tie_word_embeddings = false;
  const auto w = tiny_weights(c, false);
  ASSERT_TRUE(w.count(names::lm_head()));
  write_gguf(dir.file("u.gguf"), c, w);
  const Checkpoint ck = load_checkpoint(dir.file("u.gguf"));
  EXPECT_FALSE(ck.config.tie_word_embeddings);
  expect_same_values(ck.tensor(names::lm_head()), w.at(names::lm_head()), "lm_head");
}

TEST(Checkpoint, Qwen2GgufIsNotPermuted) {
  testing::ScratchDir dir;
  const ModelConfig c = tiny_config("qwen2");
  const auto w = tiny_weights(c, true);
  write_gguf(dir.file("q.gguf"), c, w);  // stores q/k in HF order, as the converter does for qwen2
  const Checkpoint ck = load_checkpoint(dir.file("q.gguf"));
  EXPECT_EQ(ck.config.architecture, "qwen2");
  EXPECT_TRUE(ck.config.attention_bias);
  for (const auto& [name, t] : w) expect_same_values(ck.tensor(name), t, name);
}

TEST(CheckpointBadInput, GgufMissingTensor) {
  testing::ScratchDir dir;
  const ModelConfig c = tiny_config();
  write_gguf(dir.file("m.gguf"), c, tiny_weights(c, false), skipping(names::layer(1, "mlp.down_proj.weight")));
  EXPECT_ERROR(load_checkpoint(dir.file("m.gguf")), "m.gguf", "missing tensor 'model.layers.1.mlp.down_proj.weight'",
               "[32, 48]");
}

TEST(CheckpointBadInput, GgufShapeMismatch) {
  testing::ScratchDir dir;
  const ModelConfig c = tiny_config();
  write_gguf(dir.file("s.gguf"), c, tiny_weights(c, false), reshaping(names::layer(0, "mlp.up_proj.weight")));
  EXPECT_ERROR(load_checkpoint(dir.file("s.gguf")), "s.gguf", "'blk.0.ffn_up.weight' has shape [1536]",
               "expected [48, 32]");
}

TEST(CheckpointBadInput, GgufUnknownOrExtraTensor) {
  testing::ScratchDir dir;
  const ModelConfig c = tiny_config();
  write_gguf(dir.file("x.gguf"), c, tiny_weights(c, false), extra_tensor("blk.0.attn_qkv.weight"));
  EXPECT_ERROR(load_checkpoint(dir.file("x.gguf")), "x.gguf", "'blk.0.attn_qkv.weight' is not one of a llama");
  write_gguf(dir.file("y.gguf"), c, tiny_weights(c, false), extra_tensor("blk.2.attn_norm.weight"));
  EXPECT_ERROR(load_checkpoint(dir.file("y.gguf")), "y.gguf", "'blk.2.attn_norm.weight' is not part of");
}

TEST(CheckpointBadInput, GgufBadConfig) {
  testing::ScratchDir dir;
  ModelConfig c = tiny_config();
  c.rms_norm_eps = 0;
  write_gguf(dir.file("c.gguf"), c, tiny_weights(c, false));
  EXPECT_ERROR(load_checkpoint(dir.file("c.gguf")), "c.gguf", "rms_norm_eps out of range");
}

// ---- Hugging Face folders ----------------------------------------------------------------------

std::string config_json(const ModelConfig& c) {
  nlohmann::json j = {{"model_type", c.architecture},
                      {"hidden_size", c.hidden_size},
                      {"intermediate_size", c.intermediate_size},
                      {"num_hidden_layers", c.num_layers},
                      {"num_attention_heads", c.num_heads},
                      {"num_key_value_heads", c.num_kv_heads},
                      {"vocab_size", c.vocab_size},
                      {"max_position_embeddings", c.max_position_embeddings},
                      {"rms_norm_eps", c.rms_norm_eps},
                      {"rope_theta", c.rope_theta},
                      {"tie_word_embeddings", c.tie_word_embeddings},
                      {"torch_dtype", "bfloat16"}};
  return j.dump(2);
}

// BF16 copies (truncated F32 bits) of the weights, which the folder stores.
std::map<std::string, Tensor> to_bf16(const std::map<std::string, Tensor>& w) {
  std::map<std::string, Tensor> out;
  for (const auto& [name, t] : w) {
    Tensor b = Tensor::empty(DType::BF16, t.shape());
    for (int64_t i = 0; i < t.numel(); ++i) {
      uint32_t bits;
      std::memcpy(&bits, t.data<float>() + i, 4);
      b.data_mut<uint16_t>()[i] = uint16_t(bits >> 16);
    }
    out[name] = b;
  }
  return out;
}

std::vector<st::TensorToWrite> to_write(const std::map<std::string, Tensor>& w, const std::string& skip = "") {
  std::vector<st::TensorToWrite> out;
  for (const auto& [name, t] : w)
    if (name != skip) out.push_back(st::TensorToWrite::from(name, t));
  return out;
}

TEST(Checkpoint, HfFolderSingleFile) {
  testing::ScratchDir dir;
  const ModelConfig c = tiny_config();
  auto w = to_bf16(tiny_weights(c, false));
  // A tied model that still stores lm_head, and an old-style RoPE buffer: both ignored.
  w[names::lm_head()] = w.at(names::embed());
  w["model.layers.0.self_attn.rotary_emb.inv_freq"] = Tensor::zeros(DType::F32, {4});
  testing::write_text(dir.file("config.json"), config_json(c));
  testing::write_text(dir.file("tokenizer_config.json"), R"({"chat_template": "{% for m in messages %}{% endfor %}"})");
  st::write_file(dir.file("model.safetensors"), to_write(w));

  const Checkpoint ck = load_checkpoint(dir.path());
  EXPECT_EQ(ck.format, CheckpointFormat::HFDirectory);
  EXPECT_EQ(ck.gguf, nullptr);
  EXPECT_EQ(ck.chat_template, "{% for m in messages %}{% endfor %}");
  EXPECT_EQ(ck.config.num_layers, 2);
  EXPECT_EQ(ck.tensors.size(), w.size() - 2);
  EXPECT_FALSE(ck.has(names::lm_head()));
  for (const auto& [name, t] : ck.tensors) {
    EXPECT_EQ(t.dtype(), DType::BF16) << name;  // kept in the file's dtype ...
    EXPECT_FALSE(t.owns_data()) << name;         // ... and memory-mapped
    EXPECT_EQ(0, std::memcmp(t.raw(), w.at(name).raw(), t.nbytes())) << name;
    EXPECT_EQ(ck.source_dtypes.at(name), "BF16");
  }
}

TEST(Checkpoint, HfFolderSharded) {
  testing::ScratchDir dir;
  const ModelConfig c = tiny_config();
  const auto w = to_bf16(tiny_weights(c, false));
  testing::write_text(dir.file("config.json"), config_json(c));
  // Layer 0 and the embedding in shard 1, the rest in shard 2.
  std::map<std::string, Tensor> first, second;
  nlohmann::json map;
  for (const auto& [name, t] : w) {
    const bool in_first = name.rfind("model.layers.0.", 0) == 0 || name == names::embed();
    (in_first ? first : second)[name] = t;
    map[name] = in_first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  st::write_file(dir.file("model-00001-of-00002.safetensors"), to_write(first));
  st::write_file(dir.file("model-00002-of-00002.safetensors"), to_write(second));
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", map}};
  testing::write_text(dir.file("model.safetensors.index.json"), index.dump());

  const Checkpoint ck = load_checkpoint(dir.path());
  EXPECT_EQ(ck.tensors.size(), w.size());
  for (const auto& [name, t] : w) EXPECT_EQ(0, std::memcmp(ck.tensor(name).raw(), t.raw(), t.nbytes())) << name;
  EXPECT_EQ(ck.chat_template, "");

  // The index points to a shard that is not there.
  nlohmann::json missing = index;
  missing["weight_map"][names::final_norm()] = "model-00003-of-00003.safetensors";
  testing::write_text(dir.file("model.safetensors.index.json"), missing.dump());
  EXPECT_ERROR(load_checkpoint(dir.path()), "model.safetensors.index.json",
               "shard \"model-00003-of-00003.safetensors\"", "missing");
  // The index puts a tensor in a shard that does not hold it.
  nlohmann::json wrong = index;
  wrong["weight_map"][names::final_norm()] = "model-00001-of-00002.safetensors";
  testing::write_text(dir.file("model.safetensors.index.json"), wrong.dump());
  EXPECT_ERROR(load_checkpoint(dir.path()), "'model.norm.weight' in model-00001-of-00002.safetensors",
               "no such tensor");
  // A shard outside the folder.
  nlohmann::json escape = index;
  escape["weight_map"][names::final_norm()] = "../model-00002-of-00002.safetensors";
  testing::write_text(dir.file("model.safetensors.index.json"), escape.dump());
  EXPECT_ERROR(load_checkpoint(dir.path()), "not a plain file name");
  // An index without the tensor: reported as missing, with its expected shape.
  nlohmann::json partial = index;
  partial["weight_map"].erase(names::final_norm());
  testing::write_text(dir.file("model.safetensors.index.json"), partial.dump());
  EXPECT_ERROR(load_checkpoint(dir.path()), "missing tensor 'model.norm.weight'", "[32]");
  testing::write_text(dir.file("model.safetensors.index.json"), R"({"metadata": {}})");
  EXPECT_ERROR(load_checkpoint(dir.path()), "model.safetensors.index.json", "no \"weight_map\"");
}

TEST(CheckpointBadInput, HfFolderMissingTensorOrWrongShapeOrDtype) {
  testing::ScratchDir dir;
  const ModelConfig c = tiny_config();
  auto w = to_bf16(tiny_weights(c, false));
  testing::write_text(dir.file("config.json"), config_json(c));
  st::write_file(dir.file("model.safetensors"), to_write(w, names::layer(1, "self_attn.o_proj.weight")));
  EXPECT_ERROR(load_checkpoint(dir.path()), dir.path(), "missing tensor 'model.layers.1.self_attn.o_proj.weight'",
               "[32, 32]");

  w[names::layer(1, "self_attn.v_proj.weight")] = Tensor::zeros(DType::BF16, {32, 32});
  st::write_file(dir.file("model.safetensors"), to_write(w));
  EXPECT_ERROR(load_checkpoint(dir.path()), "'model.layers.1.self_attn.v_proj.weight' has shape [32, 32]",
               "expected [16, 32]");

  w = to_bf16(tiny_weights(c, false));
  w[names::final_norm()] = Tensor::zeros(DType::I8, {32});
  st::write_file(dir.file("model.safetensors"), to_write(w));
  EXPECT_ERROR(load_checkpoint(dir.path()), "model.safetensors", "'model.norm.weight' has dtype I8",
               "F32, F16 or BF16");

  w = to_bf16(tiny_weights(c, false));
  w["model.layers.0.mlp.extra.weight"] = Tensor::zeros(DType::BF16, {2});
  st::write_file(dir.file("model.safetensors"), to_write(w));
  EXPECT_ERROR(load_checkpoint(dir.path()), "'model.layers.0.mlp.extra.weight' is not part of");
}

TEST(CheckpointBadInput, NotACheckpoint) {
  testing::ScratchDir dir;
  EXPECT_ERROR(load_checkpoint(dir.file("absent.gguf")), "absent.gguf", "no such file or folder");
  EXPECT_ERROR(load_checkpoint(dir.path()), dir.path(), "needs config.json");
  testing::write_text(dir.file("config.json"), config_json(tiny_config()));
  EXPECT_ERROR(load_checkpoint(dir.path()), "no model.safetensors or model.safetensors.index.json");
  testing::write_text(dir.file("pytorch_model.bin"), "x");
  EXPECT_ERROR(load_checkpoint(dir.path()), "PyTorch .bin checkpoints are not supported");
  testing::write_text(dir.file("notes.txt"), "GGU");
  EXPECT_ERROR(load_checkpoint(dir.file("notes.txt")), "notes.txt", "not a GGUF file");
  testing::write_text(dir.file("model.safetensors"), "12345678{}");
  EXPECT_ERROR(load_checkpoint(dir.file("model.safetensors")), "pass the folder holding config.json");
  testing::write_text(dir.file("config.json"), "{\"model_type\": \"llama\"");
  EXPECT_ERROR(load_checkpoint(dir.path()), "config.json", "invalid JSON");
}

}  // namespace
}  // namespace qf
