#include "io/gguf_llama.h"

#include <cmath>
#include <cstring>

#include "core/error.h"

namespace qf::gguf_llama {

bool is_supported(const std::string& architecture) { return architecture == "llama" || architecture == "qwen2"; }
bool has_interleaved_qk(const std::string& architecture) { return architecture == "llama"; }

namespace {

// The layer tensors: GGUF leaf (after "blk.N.") -> canonical leaf (after "model.layers.N.").
struct LeafName {
  const char* gguf;
  const char* canonical;
};
constexpr LeafName kLayerLeaves[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"attn_q.bias", "self_attn.q_proj.bias"},
    {"attn_k.bias", "self_attn.k_proj.bias"},
    {"attn_v.bias", "self_attn.v_proj.bias"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
};

// "blk.<N>.<leaf>" -> (N, leaf); N plain decimal digits.
bool split_layer_name(const std::string& name, int64_t& layer, std::string& leaf) {
  constexpr std::string_view prefix = "blk.";
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  size_t pos = prefix.size();
  int64_t n = 0;
  size_t digits = 0;
  // 9 digits keep n far from overflow; no model has a billion layers.
  while (pos < name.size() && name[pos] >= '0' && name[pos] <= '9' && digits < 9) {
    n = n * 10 + (name[pos] - '0');
    ++pos;
    ++digits;
  }
  if (digits == 0 || pos >= name.size() || name[pos] != '.') return false;
  layer = n;
  leaf = name.substr(pos + 1);
  return true;
}

Tensor reorder_rows(const Tensor& in, int64_t n_heads, bool to_gguf) {
  QF_CHECK(in.ndim() >= 1 && n_heads > 0 && in.dim(0) % n_heads == 0, "Q/K row permutation: ", in.dim(0),
           " rows are not a whole number of ", n_heads, " heads");
  const int64_t rows = in.dim(0), head_dim = rows / n_heads, half = head_dim / 2;
  QF_CHECK(head_dim % 2 == 0, "Q/K row permutation: head_dim ", head_dim, " is odd");
  const size_t row_bytes = rows ? in.nbytes() / size_t(rows) : 0;
  Tensor out = Tensor::empty(in.dtype(), in.shape());
  const uint8_t* src = static_cast<const uint8_t*>(in.raw());
  uint8_t* dst = static_cast<uint8_t*>(out.raw_mut());
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t gguf_row = h * head_dim + 2 * i + j;
        const int64_t hf_row = h * head_dim + j * half + i;
        const int64_t from = to_gguf ? hf_row : gguf_row, to = to_gguf ? gguf_row : hf_row;
        std::memcpy(dst + size_t(to) * row_bytes, src + size_t(from) * row_bytes, row_bytes);
      }
  return out;
}

}  // namespace

std::optional<std::string> canonical_name(const std::string& gguf_name) {
  if (gguf_name == "token_embd.weight") return names::embed();
  if (gguf_name == "output_norm.weight") return names::final_norm();
  if (gguf_name == "output.weight") return names::lm_head();
  int64_t layer;
  std::string leaf;
  if (!split_layer_name(gguf_name, layer, leaf)) return std::nullopt;
  for (const LeafName& l : kLayerLeaves)
    if (leaf == l.gguf) return names::layer(layer, l.canonical);
  return std::nullopt;
}

Tensor permute_qk_rows(const Tensor& hf_order, int64_t n_heads) { return reorder_rows(hf_order, n_heads, true); }
Tensor unpermute_qk_rows(const Tensor& gguf_order, int64_t n_heads) { return reorder_rows(gguf_order, n_heads, false); }

ModelConfig config_from_gguf(const gguf::File& file) {
  const gguf::Metadata& md = file.metadata();
  const std::string& source = file.path();
  ModelConfig c;
  c.architecture = md.get_string("general.architecture");
  QF_CHECK(is_supported(c.architecture), source, ": general.architecture \"", c.architecture,
           "\" is not supported (supported: llama, qwen2)");
  const std::string a = c.architecture + ".";
  c.name = md.get_string("general.name", c.architecture);
  QF_CHECK(md.get_int(a + "expert_count", 0) == 0, source, ": mixture-of-experts models (", a,
           "expert_count) are not supported");

  c.num_layers = md.get_int(a + "block_count");
  c.hidden_size = md.get_int(a + "embedding_length");
  c.intermediate_size = md.get_int(a + "feed_forward_length");
  c.num_heads = md.get_int(a + "attention.head_count");
  c.num_kv_heads = md.get_int(a + "attention.head_count_kv", c.num_heads);
  c.max_position_embeddings = md.get_int(a + "context_length");
  c.rms_norm_eps = md.get_float(a + "attention.layer_norm_rms_epsilon");
  c.rope_theta = md.get_float(a + "rope.freq_base", 10000.0);
  QF_CHECK(c.num_heads > 0, source, ": ", a, "attention.head_count must be positive, got ", c.num_heads);
  c.head_dim = md.get_int(a + "attention.key_length", c.hidden_size / c.num_heads);
  const int64_t value_length = md.get_int(a + "attention.value_length", c.head_dim);
  QF_CHECK(value_length == c.head_dim, source, ": ", a, "attention.value_length (", value_length,
           ") differs from the key length (", c.head_dim, "); not supported");
  const int64_t rope_dims = md.get_int(a + "rope.dimension_count", c.head_dim);
  QF_CHECK(rope_dims == c.head_dim, source, ": ", a, "rope.dimension_count = ", rope_dims,
           " rotates part of a head of ", c.head_dim, " (partial rotary is not supported)");

  // Vocabulary size: the hyper-parameter, else the token list, else the embedding's rows.
  if (md.has(a + "vocab_size")) {
    c.vocab_size = md.get_int(a + "vocab_size");
  } else if (md.has("tokenizer.ggml.tokens")) {
    c.vocab_size = int64_t(md.get_string_array("tokenizer.ggml.tokens").size());
  } else if (const gguf::TensorInfo* e = file.find("token_embd.weight")) {
    c.vocab_size = e->ne.size() == 2 ? e->ne[1] : 0;
  }

  // RoPE scaling. Older files say rope.scale_linear = factor.
  const std::string scaling = md.get_string(a + "rope.scaling.type", md.has(a + "rope.scale_linear") ? "linear" : "none");
  if (scaling == "linear") {
    c.rope_scaling.type = RopeScalingType::Linear;
    c.rope_scaling.factor = md.has(a + "rope.scaling.factor") ? md.get_float(a + "rope.scaling.factor")
                                                              : md.get_float(a + "rope.scale_linear");
  } else if (scaling == "yarn") {
    c.rope_scaling.type = RopeScalingType::Yarn;
    c.rope_scaling.factor = md.get_float(a + "rope.scaling.factor");
    c.rope_scaling.original_max_position_embeddings =
        md.get_int(a + "rope.scaling.original_context_length", c.max_position_embeddings);
    // llama.cpp multiplies its attn_factor (default 1) into YaRN's 0.1 ln(s) + 1; HF's
    // attention_factor is that product.
    if (md.has(a + "rope.scaling.attn_factor") && c.rope_scaling.factor > 0)
      c.rope_scaling.attention_factor =
          md.get_float(a + "rope.scaling.attn_factor") * (0.1 * std::log(c.rope_scaling.factor) + 1.0);
  } else {
    QF_CHECK(scaling == "none", source, ": ", a, "rope.scaling.type \"", scaling,
             "\" is not supported (supported: none, linear, yarn)");
  }

  // Llama 3.x stores its frequency-dependent RoPE scaling as one divisor per frequency.
  if (const gguf::TensorInfo* f = file.find("rope_freqs.weight")) {
    QF_CHECK(f->numel() * 2 == c.head_dim, source, ": rope_freqs.weight has ", f->numel(),
             " values; head_dim / 2 = ", c.head_dim / 2, " expected");
    const Tensor t = file.to_f32(*f);
    const float* v = t.data<float>();
    c.rope_freq_factors.assign(v, v + t.numel());
  }
  c.tie_word_embeddings = file.find("output.weight") == nullptr;
  c.attention_bias = file.find("blk.0.attn_q.bias") != nullptr;
  return c;
}

}  // namespace qf::gguf_llama
