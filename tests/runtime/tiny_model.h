// A tiny random Llama-family checkpoint built in memory (few layers, small dims), and a
// straightforward double-precision forward pass written from the model's definition — the
// reference the CPU engine is checked against.
#pragma once

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "io/checkpoint.h"

namespace qf::test {

struct TinyOptions {
  int64_t vocab = 61, hidden = 48, ffn = 80, layers = 2, heads = 6, kv_heads = 2, max_pos = 256;
  bool bias = false, tied = false, bf16 = false;
  RopeScaling rope;
  uint32_t seed = 1;
};

inline Tensor random_tensor(Shape shape, std::mt19937& rng, float scale, float offset, bool bf16) {
  std::normal_distribution<float> nd(0.0f, scale);
  if (!bf16) {
    Tensor t = Tensor::empty(DType::F32, shape);
    float* p = t.data_mut<float>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = offset + nd(rng);
    return t;
  }
  Tensor t = Tensor::empty(DType::BF16, shape);
  uint16_t* p = t.data_mut<uint16_t>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float f = offset + nd(rng);
    uint32_t u;
    std::memcpy(&u, &f, 4);
    p[i] = uint16_t(u >> 16);
  }
  return t;
}

inline Checkpoint tiny_checkpoint(const TinyOptions& o) {
  Checkpoint ck;
  ck.path = "tiny in-memory model";
  ModelConfig& c = ck.config;
  c.architecture = "llama";
  c.vocab_size = o.vocab;
  c.hidden_size = o.hidden;
  c.intermediate_size = o.ffn;
  c.num_layers = o.layers;
  c.num_heads = o.heads;
  c.num_kv_heads = o.kv_heads;
  c.head_dim = o.hidden / o.heads;
  c.max_position_embeddings = o.max_pos;
  c.rope_theta = 10000.0;
  c.rope_scaling = o.rope;
  c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = o.tied;
  c.attention_bias = o.bias;
  std::mt19937 rng(o.seed);
  const float ws = 1.0f / std::sqrt(float(o.hidden));
  const int64_t d = c.head_dim;
  auto put = [&](const std::string& n, Shape s, float scale, float offset = 0.0f, bool allow_bf16 = true) {
    ck.tensors[n] = random_tensor(s, rng, scale, offset, o.bf16 && allow_bf16);
  };
  put(names::embed(), {o.vocab, o.hidden}, 1.0f);
  put(names::final_norm(), {o.hidden}, 0.1f, 1.0f, false);
  if (!o.tied) put(names::lm_head(), {o.vocab, o.hidden}, ws);
  for (int64_t l = 0; l < o.layers; ++l) {
    auto L = [&](const std::string& leaf) { return names::layer(l, leaf); };
    put(L("input_layernorm.weight"), {o.hidden}, 0.1f, 1.0f, false);
    put(L("post_attention_layernorm.weight"), {o.hidden}, 0.1f, 1.0f, false);
    put(L("self_attn.q_proj.weight"), {o.heads * d, o.hidden}, ws);
    put(L("self_attn.k_proj.weight"), {o.kv_heads * d, o.hidden}, ws);
    put(L("self_attn.v_proj.weight"), {o.kv_heads * d, o.hidden}, ws);
    put(L("self_attn.o_proj.weight"), {o.hidden, o.heads * d}, ws);
    put(L("mlp.gate_proj.weight"), {o.ffn, o.hidden}, ws);
    put(L("mlp.up_proj.weight"), {o.ffn, o.hidden}, ws);
    put(L("mlp.down_proj.weight"), {o.hidden, o.ffn}, 1.0f / std::sqrt(float(o.ffn)));
    if (o.bias) {
      put(L("self_attn.q_proj.bias"), {o.heads * d}, 0.1f, 0.0f, false);
      put(L("self_attn.k_proj.bias"), {o.kv_heads * d}, 0.1f, 0.0f, false);
      put(L("self_attn.v_proj.bias"), {o.kv_heads * d}, 0.1f, 0.0f, false);
    }
  }
  return ck;
}

// ---- the reference forward, in double ---------------------------------------------------

using Mat = std::vector<std::vector<double>>;  // [rows][cols]

inline double value_at(const Tensor& t, int64_t i) {
  if (t.dtype() == DType::F32) return t.data<float>()[i];
  const uint32_t u = uint32_t(t.data<uint16_t>()[i]) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// y = x W^T (+ b), W [out, in].
inline Mat ref_linear(const Mat& x, const Tensor& w, const Tensor* b) {
  const int64_t out = w.dim(0), in = w.dim(1);
  Mat y(x.size(), std::vector<double>(out));
  for (size_t r = 0; r < x.size(); ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = b ? value_at(*b, o) : 0.0;
      for (int64_t i = 0; i < in; ++i) s += x[r][i] * value_at(w, o * in + i);
      y[r][o] = s;
    }
  return y;
}

inline Mat ref_rmsnorm(const Mat& x, const Tensor& w, double eps) {
  Mat y = x;
  for (auto& row : y) {
    double ss = 0;
    for (double v : row) ss += v * v;
    const double inv = 1.0 / std::sqrt(ss / row.size() + eps);
    for (size_t i = 0; i < row.size(); ++i) row[i] = row[i] * inv * value_at(w, i);
  }
  return y;
}

// Logits [n, vocab] of every position of ONE sequence `tokens` starting at position 0,
// standard RoPE (no scaling), rotate_half pairing, causal GQA softmax attention, SwiGLU.
inline Mat reference_forward(const Checkpoint& ck, const std::vector<int32_t>& tokens) {
  const ModelConfig& c = ck.config;
  const int64_t n = tokens.size(), H = c.hidden_size, d = c.head_dim, half = d / 2;
  const int64_t group = c.num_heads / c.num_kv_heads;
  Mat x(n, std::vector<double>(H));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < H; ++j) x[i][j] = value_at(ck.tensor(names::embed()), tokens[i] * H + j);
  auto rope = [&](Mat& m, int64_t heads) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t j = 0; j < half; ++j) {
          const double a = double(i) * std::pow(c.rope_theta, -2.0 * j / d);
          double& lo = m[i][h * d + j];
          double& hi = m[i][h * d + j + half];
          const double l0 = lo, h0 = hi;
          lo = l0 * std::cos(a) - h0 * std::sin(a);
          hi = h0 * std::cos(a) + l0 * std::sin(a);
        }
  };
  for (int64_t l = 0; l < c.num_layers; ++l) {
    auto T = [&](const std::string& leaf) -> const Tensor& { return ck.tensor(names::layer(l, leaf)); };
    auto bias = [&](const std::string& leaf) -> const Tensor* {
      return c.attention_bias ? &ck.tensor(names::layer(l, leaf)) : nullptr;
    };
    Mat h = ref_rmsnorm(x, T("input_layernorm.weight"), c.rms_norm_eps);
    Mat q = ref_linear(h, T("self_attn.q_proj.weight"), bias("self_attn.q_proj.bias"));
    Mat k = ref_linear(h, T("self_attn.k_proj.weight"), bias("self_attn.k_proj.bias"));
    Mat v = ref_linear(h, T("self_attn.v_proj.weight"), bias("self_attn.v_proj.bias"));
    rope(q, c.num_heads);
    rope(k, c.num_kv_heads);
    Mat att(n, std::vector<double>(c.num_heads * d));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t hq = 0; hq < c.num_heads; ++hq) {
        const int64_t hk = hq / group;
        std::vector<double> p(i + 1);
        double mx = -1e300, z = 0;
        for (int64_t t = 0; t <= i; ++t) {
          double s = 0;
          for (int64_t j = 0; j < d; ++j) s += q[i][hq * d + j] * k[t][hk * d + j];
          p[t] = s / std::sqrt(double(d));
          mx = std::max(mx, p[t]);
        }
        for (auto& e : p) z += (e = std::exp(e - mx));
        for (int64_t j = 0; j < d; ++j) {
          double o = 0;
          for (int64_t t = 0; t <= i; ++t) o += p[t] / z * v[t][hk * d + j];
          att[i][hq * d + j] = o;
        }
      }
    Mat o = ref_linear(att, T("self_attn.o_proj.weight"), nullptr);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < H; ++j) x[i][j] += o[i][j];
    h = ref_rmsnorm(x, T("post_attention_layernorm.weight"), c.rms_norm_eps);
    Mat g = ref_linear(h, T("mlp.gate_proj.weight"), nullptr), u = ref_linear(h, T("mlp.up_proj.weight"), nullptr);
    for (int64_t i = 0; i < n; ++i)
      for (size_t j = 0; j < g[i].size(); ++j) g[i][j] = g[i][j] / (1.0 + std::exp(-g[i][j])) * u[i][j];
    Mat dn = ref_linear(g, T("mlp.down_proj.weight"), nullptr);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < H; ++j) x[i][j] += dn[i][j];
  }
  Mat h = ref_rmsnorm(x, ck.tensor(names::final_norm()), c.rms_norm_eps);
  return ref_linear(h, ck.tensor(c.tie_word_embeddings ? names::embed() : names::lm_head()), nullptr);
}

}  // namespace qf::test
