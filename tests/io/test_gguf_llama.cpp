// The llama architecture of GGUF files: hyper-parameters, tensor names, and the Q/K row order
// (llama.cpp's converter interleaves RoPE pairs; canonical weights use HF's rotate_half).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "gguf_builder.h"
#include "io/gguf_llama.h"
#include "io_test_util.h"

namespace qf {
namespace {

Tensor random_matrix(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist;
  Tensor t = Tensor::empty(DType::F32, {rows, cols});
  for (int64_t i = 0; i < t.numel(); ++i) t.data_mut<float>()[i] = dist(gen);
  return t;
}

TEST(GgufLlama, PermuteIsTheConvertersReshapeSwapaxes) {
  // convert_hf_to_gguf.py: w.reshape(n_head, 2, head_dim // 2, cols).swapaxes(1, 2).reshape(w.shape)
  // i.e. out viewed as [n_head][head_dim/2][2][cols] equals in viewed as [n_head][2][head_dim/2][cols]
  // with the middle axes swapped.
  const int64_t n_head = 3, head_dim = 8, cols = 5;
  const Tensor w = random_matrix(n_head * head_dim, cols, 1);
  const Tensor p = gguf_llama::permute_qk_rows(w, n_head);
  const float* in = w.data<float>();
  const float* out = p.data<float>();
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t a = 0; a < head_dim / 2; ++a)
      for (int64_t b = 0; b < 2; ++b)
        for (int64_t c = 0; c < cols; ++c) {
          const float swapped = in[((h * 2 + b) * (head_dim / 2) + a) * cols + c];
          EXPECT_EQ(out[((h * (head_dim / 2) + a) * 2 + b) * cols + c], swapped);
        }
}

TEST(GgufLlama, UnpermuteUndoesPermute) {
  for (int64_t n_head : {1, 3, 4}) {
    for (int64_t head_dim : {2, 8, 64}) {
      const Tensor w = random_matrix(n_head * head_dim, 7, uint32_t(n_head * 100 + head_dim));
      const Tensor p = gguf_llama::permute_qk_rows(w, n_head);
      const Tensor back = gguf_llama::unpermute_qk_rows(p, n_head);
      EXPECT_EQ(0, std::memcmp(back.raw(), w.raw(), w.nbytes()));
      if (head_dim > 4) {
        EXPECT_NE(0, std::memcmp(p.raw(), w.raw(), w.nbytes()));  // it does reorder
      }
    }
  }
  // Biases (1-D) and other dtypes reorder the same way.
  Tensor bias = Tensor::empty(DType::BF16, {16});
  for (int i = 0; i < 16; ++i) bias.data_mut<uint16_t>()[i] = uint16_t(i);
  const Tensor pb = gguf_llama::permute_qk_rows(bias, 2);
  // Head 0 of 8: HF (0..3 | 4..7) pairs (i, i+4) become adjacent: 0 4 1 5 2 6 3 7.
  const uint16_t expected[8] = {0, 4, 1, 5, 2, 6, 3, 7};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(pb.data<uint16_t>()[i], expected[i]);
  EXPECT_EQ(pb.data<uint16_t>()[8], 8);
  EXPECT_EQ(pb.data<uint16_t>()[9], 12);
  EXPECT_ERROR(gguf_llama::permute_qk_rows(bias, 3), "not a whole number of 3 heads");
}

// RoPE at position `pos` on one head's vector, pairing dimensions either as llama.cpp's "normal"
// mode does (adjacent: 2i, 2i+1) or as HF's rotate_half does (i, i + d/2); frequency i is
// base^(-2i/d) in both.
void rope(float* x, int64_t d, int64_t pos, bool interleaved) {
  for (int64_t i = 0; i < d / 2; ++i) {
    const double theta = pos * std::pow(10000.0, -2.0 * double(i) / double(d));
    const int64_t a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + d / 2;
    const double x0 = x[a], x1 = x[b];
    x[a] = float(x0 * std::cos(theta) - x1 * std::sin(theta));
    x[b] = float(x0 * std::sin(theta) + x1 * std::cos(theta));
  }
}

std::vector<float> matvec(const Tensor& w, const std::vector<float>& x) {
  const int64_t rows = w.dim(0), cols = w.dim(1);
  std::vector<float> y(rows, 0.0f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) y[r] += w.data<float>()[r * cols + c] * x[c];
  return y;
}

TEST(GgufLlama, InterleavedRopeOnGgufRowsEqualsRotateHalfOnUnpermutedRows) {
  const int64_t n_head = 3, n_kv_head = 1, head_dim = 16, hidden = 12;
  // Weights as a GGUF file stores them, and the canonical ones load_checkpoint makes of them.
  const Tensor wq_gguf = random_matrix(n_head * head_dim, hidden, 7);
  const Tensor wk_gguf = random_matrix(n_kv_head * head_dim, hidden, 8);
  const Tensor wq = gguf_llama::unpermute_qk_rows(wq_gguf, n_head);
  const Tensor wk = gguf_llama::unpermute_qk_rows(wk_gguf, n_kv_head);
  std::mt19937 gen(9);
  std::normal_distribution<float> dist;
  std::vector<float> xq(hidden), xk(hidden);
  for (auto& v : xq) v = dist(gen);
  for (auto& v : xk) v = dist(gen);

  const int64_t pos_q = 37, pos_k = 5;
  std::vector<float> q_gguf = matvec(wq_gguf, xq), k_gguf = matvec(wk_gguf, xk);
  std::vector<float> q_hf = matvec(wq, xq), k_hf = matvec(wk, xk);
  for (int64_t h = 0; h < n_head; ++h) {
    rope(q_gguf.data() + h * head_dim, head_dim, pos_q, true);
    rope(q_hf.data() + h * head_dim, head_dim, pos_q, false);
  }
  rope(k_gguf.data(), head_dim, pos_k, true);
  rope(k_hf.data(), head_dim, pos_k, false);

  // The rotated vectors are the same numbers in the two orders ...
  Tensor q_gguf_t = Tensor::empty(DType::F32, {n_head * head_dim});
  std::copy(q_gguf.begin(), q_gguf.end(), q_gguf_t.data_mut<float>());
  const Tensor q_back = gguf_llama::unpermute_qk_rows(q_gguf_t, n_head);
  for (int64_t i = 0; i < n_head * head_dim; ++i) EXPECT_NEAR(q_back.data<float>()[i], q_hf[i], 1e-4f) << i;
  // ... so every attention score agrees.
  for (int64_t h = 0; h < n_head; ++h) {
    double s_gguf = 0, s_hf = 0;
    for (int64_t i = 0; i < head_dim; ++i) {
      s_gguf += double(q_gguf[h * head_dim + i]) * k_gguf[i];
      s_hf += double(q_hf[h * head_dim + i]) * k_hf[i];
    }
    EXPECT_NEAR(s_gguf, s_hf, 1e-3) << "head " << h;
  }
  // The other direction would be wrong: permuting instead of unpermuting breaks the equality.
  const Tensor wrong = gguf_llama::permute_qk_rows(wq_gguf, n_head);
  std::vector<float> q_wrong = matvec(wrong, xq);
  rope(q_wrong.data(), head_dim, pos_q, false);
  double diff = 0;
  for (int64_t i = 0; i < head_dim; ++i) diff += std::fabs(q_wrong[i] - q_hf[i]);
  EXPECT_GT(diff, 1e-2);
}

TEST(GgufLlama, CanonicalNames) {
  using gguf_llama::canonical_name;
  EXPECT_EQ(canonical_name("token_embd.weight"), "model.embed_tokens.weight");
  EXPECT_EQ(canonical_name("output_norm.weight"), "model.norm.weight");
  EXPECT_EQ(canonical_name("output.weight"), "lm_head.weight");
  const std::pair<const char*, const char*> layer[] = {
      {"blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"},
      {"blk.1.attn_k.weight", "model.layers.1.self_attn.k_proj.weight"},
      {"blk.12.attn_v.weight", "model.layers.12.self_attn.v_proj.weight"},
      {"blk.3.attn_output.weight", "model.layers.3.self_attn.o_proj.weight"},
      {"blk.3.attn_q.bias", "model.layers.3.self_attn.q_proj.bias"},
      {"blk.3.attn_k.bias", "model.layers.3.self_attn.k_proj.bias"},
      {"blk.3.attn_v.bias", "model.layers.3.self_attn.v_proj.bias"},
      {"blk.4.ffn_gate.weight", "model.layers.4.mlp.gate_proj.weight"},
      {"blk.4.ffn_up.weight", "model.layers.4.mlp.up_proj.weight"},
      {"blk.4.ffn_down.weight", "model.layers.4.mlp.down_proj.weight"},
      {"blk.29.attn_norm.weight", "model.layers.29.input_layernorm.weight"},
      {"blk.29.ffn_norm.weight", "model.layers.29.post_attention_layernorm.weight"},
  };
  for (auto [g, c] : layer) EXPECT_EQ(canonical_name(g), c) << g;
  for (const char* other : {"rope_freqs.weight", "blk.x.attn_q.weight", "blk..attn_q.weight", "blk.0.attn_qkv.weight",
                            "blk.0", "blk.1234567890.attn_q.weight", "token_embd.bias", ""})
    EXPECT_EQ(canonical_name(other), std::nullopt) << other;
}

// A llama GGUF's metadata, without tensors.
testing::GgufBuilder llama_metadata() {
  testing::GgufBuilder b;
  b.add_string("general.architecture", "llama");
  b.add_string("general.name", "tiny");
  b.add_u32("llama.block_count", 2);
  b.add_u32("llama.context_length", 256);
  b.add_u32("llama.embedding_length", 32);
  b.add_u32("llama.feed_forward_length", 48);
  b.add_u32("llama.attention.head_count", 4);
  b.add_u32("llama.attention.head_count_kv", 2);
  b.add_f32("llama.rope.freq_base", 500000.0f);
  b.add_f32("llama.attention.layer_norm_rms_epsilon", 1e-6f);
  b.add_u32("llama.rope.dimension_count", 8);
  b.add_string_array("tokenizer.ggml.tokens", {"a", "b", "c", "d", "e"});
  return b;
}

ModelConfig config_of(testing::GgufBuilder& b) {
  const std::vector<uint8_t> bytes = b.build();
  auto f = gguf::File::parse_bytes(bytes.data(), bytes.size(), "cfg.gguf");
  return gguf_llama::config_from_gguf(*f);
}

TEST(GgufLlama, ConfigFromMetadata) {
  testing::GgufBuilder b = llama_metadata();
  const ModelConfig c = config_of(b);
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.name, "tiny");
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.max_position_embeddings, 256);
  EXPECT_EQ(c.hidden_size, 32);
  EXPECT_EQ(c.intermediate_size, 48);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rms_norm_eps, double(1e-6f));
  EXPECT_EQ(c.vocab_size, 5);  // no llama.vocab_size: the token list's length
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::None);
  EXPECT_TRUE(c.tie_word_embeddings);  // no output.weight
  EXPECT_FALSE(c.attention_bias);
  EXPECT_TRUE(c.rope_freq_factors.empty());
  EXPECT_NO_THROW(c.validate("cfg.gguf"));

  testing::GgufBuilder v = llama_metadata();
  v.add_u32("llama.vocab_size", 7);
  EXPECT_EQ(config_of(v).vocab_size, 7);
}

TEST(GgufLlama, RopeScalingAndFreqFactors) {
  testing::GgufBuilder lin = llama_metadata();
  lin.add_string("llama.rope.scaling.type", "linear");
  lin.add_f32("llama.rope.scaling.factor", 4.0f);
  ModelConfig c = config_of(lin);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::Linear);
  EXPECT_EQ(c.rope_scaling.factor, 4.0);

  testing::GgufBuilder old = llama_metadata();
  old.add_f32("llama.rope.scale_linear", 2.0f);
  c = config_of(old);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::Linear);
  EXPECT_EQ(c.rope_scaling.factor, 2.0);

  testing::GgufBuilder yarn = llama_metadata();
  yarn.add_string("llama.rope.scaling.type", "yarn");
  yarn.add_f32("llama.rope.scaling.factor", 8.0f);
  yarn.add_u32("llama.rope.scaling.original_context_length", 32);
  c = config_of(yarn);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::Yarn);
  EXPECT_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 32);
  EXPECT_EQ(c.rope_scaling.attention_factor, 0.0);  // the YaRN default

  testing::GgufBuilder bad = llama_metadata();
  bad.add_string("llama.rope.scaling.type", "longrope");
  EXPECT_ERROR(config_of(bad), "cfg.gguf", "longrope", "not supported");

  testing::GgufBuilder freqs = llama_metadata();
  freqs.add_f32_tensor("rope_freqs.weight", {4}, {1.0f, 2.0f, 4.0f, 8.0f});
  c = config_of(freqs);
  EXPECT_EQ(c.rope_freq_factors, (std::vector<float>{1.0f, 2.0f, 4.0f, 8.0f}));
  testing::GgufBuilder wrong = llama_metadata();
  wrong.add_f32_tensor("rope_freqs.weight", {3}, {1.0f, 2.0f, 4.0f});
  EXPECT_ERROR(config_of(wrong), "rope_freqs.weight has 3 values");
}

TEST(GgufLlama, ConfigErrorsNameTheKey) {
  testing::GgufBuilder no_arch;
  EXPECT_ERROR(config_of(no_arch), "cfg.gguf", "'general.architecture'", "missing");

  testing::GgufBuilder falcon;
  falcon.add_string("general.architecture", "falcon");
  EXPECT_ERROR(config_of(falcon), "cfg.gguf", "\"falcon\" is not supported");

  testing::GgufBuilder missing;
  missing.add_string("general.architecture", "llama");
  missing.add_u32("llama.context_length", 256);
  EXPECT_ERROR(config_of(missing), "cfg.gguf", "'llama.block_count'", "missing");

  testing::GgufBuilder wrong_type = llama_metadata();
  wrong_type.add_string("llama.attention.key_length", "8");
  EXPECT_ERROR(config_of(wrong_type), "cfg.gguf", "'llama.attention.key_length'", "STRING");

  testing::GgufBuilder partial = llama_metadata();
  partial.add_u32("llama.attention.key_length", 16);  // rope.dimension_count stays 8
  EXPECT_ERROR(config_of(partial), "rope.dimension_count = 8", "partial rotary");

  testing::GgufBuilder moe = llama_metadata();
  moe.add_u32("llama.expert_count", 8);
  EXPECT_ERROR(config_of(moe), "mixture-of-experts");
}

}  // namespace
}  // namespace qf
