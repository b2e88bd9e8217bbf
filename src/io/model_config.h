// What a Llama-family checkpoint is, independent of the file it came from. The loaders fill it
// from HF config.json or GGUF metadata; the runtime, the quantizer and `qforge info` read it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qf {

enum class RopeScalingType { None, Linear, Dynamic, Llama3, Yarn };

struct RopeScaling {
  RopeScalingType type = RopeScalingType::None;
  double factor = 1.0;
  // Llama-3 ("llama3") frequency-dependent scaling.
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;
  // YaRN.
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double attention_factor = 0.0;  // 0: the YaRN default, 0.1 * ln(factor) + 1
};

struct ModelConfig {
  std::string architecture;  // "llama", "mistral", "qwen2"
  std::string name;          // free text, for display
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;  // hidden_size / num_heads unless the config says otherwise
  int64_t max_position_embeddings = 0;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  double rms_norm_eps = 1e-5;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v projections carry a bias (Qwen2)
  int64_t sliding_window = 0;   // 0: none
  // Per-frequency divisors of the RoPE inverse frequencies (head_dim / 2 values), as GGUF
  // stores Llama-3.x scaling in the tensor rope_freqs.weight. Empty: derive from rope_scaling.
  std::vector<float> rope_freq_factors;

  static constexpr int64_t kMaxLayers = 4096;

  // Parameters of the model as the runtime holds it (tied embeddings counted once).
  int64_t parameter_count() const;
  // Throws qf::Error naming `source` if a value is missing, non-positive or inconsistent.
  void validate(const std::string& source) const;
};

// Canonical tensor names: the Hugging Face Llama names, weights stored [out_features,
// in_features] row-major, q/k rows in the HF order (RoPE rotates the two halves of each head,
// "rotate_half"). Loaders of other layouts (GGUF) convert to this on load.
namespace names {
std::string embed();                                   // model.embed_tokens.weight
std::string final_norm();                              // model.norm.weight
std::string lm_head();                                 // lm_head.weight
std::string layer(int64_t i, const std::string& leaf);  // model.layers.{i}.{leaf}
// leaves: self_attn.{q,k,v,o}_proj.weight, self_attn.{q,k,v}_proj.bias,
//         mlp.{gate,up,down}_proj.weight, input_layernorm.weight, post_attention_layernorm.weight
}  // namespace names

}  // namespace qf
