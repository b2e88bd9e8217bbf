#include "io/model_config.h"

#include "core/error.h"

namespace qf {

int64_t ModelConfig::parameter_count() const {
  const int64_t h = hidden_size, q = num_heads * head_dim, kv = num_kv_heads * head_dim;
  int64_t per_layer = h * q + 2 * h * kv + q * h  // q, k, v, o
                      + 3 * h * intermediate_size  // gate, up, down
                      + 2 * h;                     // two norms
  if (attention_bias) per_layer += q + 2 * kv;
  int64_t p = num_layers * per_layer + vocab_size * h + h;
  if (!tie_word_embeddings) p += vocab_size * h;
  return p;
}

void ModelConfig::validate(const std::string& source) const {
  auto positive = [&](int64_t v, const char* what) {
    QF_CHECK(v > 0, source, ": ", what, " must be positive, got ", v);
    // No Llama-family model comes near 2^31 in any of these; a larger value is a corrupt file,
    // and rejecting it keeps every later size computation far from overflow.
    QF_CHECK(v < (int64_t(1) << 31), source, ": ", what, " = ", v, " is absurdly large");
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_layers, "num_hidden_layers");
  // The deepest Llama-family models have ~130 layers; the bound keeps a corrupt count from
  // making the loader enumerate billions of tensor names before it finds them missing.
  QF_CHECK(num_layers <= kMaxLayers, source, ": num_hidden_layers = ", num_layers, " exceeds the limit of ", kMaxLayers);
  positive(num_heads, "num_attention_heads");
  positive(num_kv_heads, "num_key_value_heads");
  positive(head_dim, "head_dim");
  QF_CHECK(num_heads % num_kv_heads == 0, source, ": num_attention_heads (", num_heads,
           ") is not a multiple of num_key_value_heads (", num_kv_heads, ")");
  QF_CHECK(head_dim % 2 == 0, source, ": head_dim must be even for RoPE, got ", head_dim);
  // Each weight matrix at most 2^40 elements (2 TB in BF16, far beyond any real layer): with
  // at most kMaxLayers layers every size and parameter count below then fits in 64 bits.
  constexpr int64_t kMaxMatrixElements = int64_t(1) << 40;
  auto matrix = [&](int64_t rows, const char* what) {
    QF_CHECK(rows <= kMaxMatrixElements / hidden_size, source, ": ", what, " x hidden_size = ", rows, " x ",
             hidden_size, " is absurdly large");
  };
  matrix(vocab_size, "vocab_size");
  matrix(intermediate_size, "intermediate_size");
  matrix(num_heads * head_dim, "num_attention_heads * head_dim");  // both < 2^31: no overflow
  QF_CHECK(rope_theta > 0, source, ": rope_theta must be positive, got ", rope_theta);
  QF_CHECK(rms_norm_eps > 0 && rms_norm_eps < 1, source, ": rms_norm_eps out of range: ", rms_norm_eps);
  if (rope_scaling.type != RopeScalingType::None) {
    QF_CHECK(rope_scaling.factor > 0, source, ": rope_scaling.factor must be positive");
  }
}

namespace names {
std::string embed() { return "model.embed_tokens.weight"; }
std::string final_norm() { return "model.norm.weight"; }
std::string lm_head() { return "lm_head.weight"; }
std::string layer(int64_t i, const std::string& leaf) { return "model.layers." + std::to_string(i) + "." + leaf; }
}  // namespace names

}  // namespace qf
