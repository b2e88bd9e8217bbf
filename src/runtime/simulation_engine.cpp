#include "runtime/simulation_engine.h"

#include <algorithm>
#include <cmath>

#include "backends/cpu/format_round_trip.h"
#include "backends/cpu/ops.h"
#include "core/error.h"
#include "formats/convert.h"
#include "io/quantized_checkpoint.h"

namespace qf {
namespace {

std::vector<float> widen(const Tensor& t) {
  const Tensor f = to_f32(t);
  return std::vector<float>(f.data<float>(), f.data<float>() + f.numel());
}

// Scratch slots of the device (Fp32Device::scratch), one per per-forward buffer.
enum Scratch : int { kX = 100, kNormed, kQ, kK, kV, kAttn, kDelta, kGate, kUp, kRounded, kCos, kSin, kLogits };

}  // namespace

SimulationEngine::SimulationEngine(const Checkpoint& ck, int num_slots, int64_t slot_capacity,
                                   std::unique_ptr<Fp32Device> device, SimulatedFormats formats)
    : config_(ck.config), device_(std::move(device)), formats_(std::move(formats)), capacity_(slot_capacity) {
  config_.validate(ck.path);
  QF_CHECK(device_ != nullptr, "the simulation engine needs a device");
  QF_CHECK(num_slots >= 1, "the simulation engine needs at least one slot, got ", num_slots);
  QF_CHECK(slot_capacity >= 1, "slot capacity must be positive, got ", slot_capacity);
  const ModelConfig& c = config_;
  if (formats_.kv_cache) cpu::check_row_format(*formats_.kv_cache, c.head_dim, "KV cache");
  if (formats_.query) cpu::check_row_format(*formats_.query, c.head_dim, "query");
  auto linear = [&](const std::string& name, const std::string& bias_name, int64_t out, int64_t in) {
    const Tensor& w = ck.tensor(name, {out, in});
    Linear lin;
    lin.w = upload(widen(w), name);
    if (!bias_name.empty() && ck.has(bias_name)) lin.bias = upload(widen(ck.tensor(bias_name)), bias_name);
    lin.out = out, lin.in = in;
    if (formats_.every_linear) lin.activations = formats_.every_linear;
    else if (auto it = formats_.activations.find(name); it != formats_.activations.end()) lin.activations = it->second;
    return lin;
  };
  auto norm = [&](const std::string& name) {
    const Tensor& t = ck.tensor(name);
    QF_CHECK(t.numel() == c.hidden_size, ck.path, ": ", name, " has ", t.numel(), " values, expected ", c.hidden_size);
    return upload(widen(t), name);
  };
  embed_ = ck.tensor(names::embed(), {c.vocab_size, c.hidden_size});
  final_norm_ = norm(names::final_norm());
  lm_head_ = linear(c.tie_word_embeddings ? names::embed() : names::lm_head(), "", c.vocab_size, c.hidden_size);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    Layer layer;
    layer.attn_norm = norm(names::layer(i, "input_layernorm.weight"));
    layer.mlp_norm = norm(names::layer(i, "post_attention_layernorm.weight"));
    for (LinearKind kind : kAllLinearKinds) {
      const BlockLinear b = block_linear(c, i, kind);
      layer.*kLayerLinears[size_t(kind)] = linear(b.weight, b.bias, b.out, b.in);
    }
    if (const std::vector<float> post = read_k_post_rope_scale(ck, i); !post.empty())
      layer.k_post_rope_scale = upload(post, k_post_rope_scale_name(i));
    layers_.push_back(layer);
  }
  rope_ = rope_frequencies(c, c.max_position_embeddings);
  caches_.assign(size_t(num_slots), nullptr);
  lengths_.assign(size_t(num_slots), 0);
}

const float* SimulationEngine::upload(const std::vector<float>& host, const std::string& what) {
  float* d = device_->alloc(int64_t(host.size()), what);
  device_->upload(d, host.data(), int64_t(host.size()));
  return d;
}

std::string SimulationEngine::describe() const { return "FP32 simulation on " + device_->name(); }

int64_t SimulationEngine::slot_length(int slot) const {
  QF_CHECK(slot >= 0 && slot < num_slots(), "slot ", slot, " does not exist (the engine has ", num_slots(), ")");
  return lengths_[size_t(slot)];
}

void SimulationEngine::truncate(int slot, int64_t length) {
  QF_CHECK(slot >= 0 && slot < num_slots(), "slot ", slot, " does not exist (the engine has ", num_slots(), ")");
  QF_CHECK(length >= 0 && length <= lengths_[size_t(slot)], "cannot truncate slot ", slot, " of ",
           lengths_[size_t(slot)], " tokens to ", length);
  lengths_[size_t(slot)] = length;  // positions >= length are overwritten by the next tokens
}

float* SimulationEngine::cache_k(int slot, int64_t layer) {
  float*& cache = caches_[size_t(slot)];
  const int64_t rows = capacity_ * config_.num_kv_heads * config_.head_dim;
  if (!cache) cache = device_->alloc(config_.num_layers * 2 * rows, str("the KV cache of slot ", slot));
  return cache + layer * 2 * rows;
}
float* SimulationEngine::cache_v(int slot, int64_t layer) {
  return cache_k(slot, layer) + capacity_ * config_.num_kv_heads * config_.head_dim;
}

void SimulationEngine::run_linear(const Linear& lin, const float* x, int64_t m, float* y) {
  float* rounded = lin.activations ? device_->scratch(kRounded, m * lin.in, "rounded linear inputs") : nullptr;
  linear_as_runtime(*device_, x, m, lin.in, lin.w, lin.out, lin.bias, lin.activations, rounded, y);
}

Tensor SimulationEngine::forward(const Batch& batch) {
  check_batch(batch, lengths_, capacity_, config_.vocab_size);
  const ModelConfig& c = config_;
  Fp32Device& dev = *device_;
  const int64_t n = batch.size(), H = c.hidden_size, F = c.intermediate_size, d = c.head_dim, half = d / 2;
  const int64_t q_dim = c.num_heads * d, kv_dim = c.num_kv_heads * d, V = c.vocab_size;
  const float eps = float(c.rms_norm_eps), scale = 1.0f / std::sqrt(float(d));
  Tensor logits = Tensor::empty(DType::F32, {batch.num_logits(), V});
  if (n == 0) return logits;

  // Per-forward buffers (grown to the largest batch so far).
  float* x = dev.scratch(kX, n * H, "the residual stream");
  float* normed = dev.scratch(kNormed, n * H, "normalised rows");
  float* q = dev.scratch(kQ, n * q_dim, "queries");
  float* k = dev.scratch(kK, n * kv_dim, "keys");
  float* v = dev.scratch(kV, n * kv_dim, "values");
  float* attn = dev.scratch(kAttn, n * q_dim, "attention outputs");
  float* delta = dev.scratch(kDelta, n * H, "sub-block outputs");
  float* gate = dev.scratch(kGate, n * F, "MLP activations");
  float* up = dev.scratch(kUp, n * F, "MLP activations");
  {
    std::vector<float> rows(size_t(n * H));
    cpu::embedding(embed_.raw(), embed_.dtype(), V, H, batch.tokens.data(), n, rows.data());
    dev.upload(x, rows.data(), n * H);
  }
  // RoPE by row: a table row per token (the rope op's single window of n rows).
  float* cos = dev.scratch(kCos, n * half, "the RoPE table");
  float* sin = dev.scratch(kSin, n * half, "the RoPE table");
  {
    std::vector<float> cos_h, sin_h;
    batch_rope_tables(c, rope_, batch, cos_h, sin_h);
    dev.upload(cos, cos_h.data(), n * half);
    dev.upload(sin, sin_h.data(), n * half);
  }
  // Runs: maximal stretches of consecutive batch tokens of one slot (check_batch: in position order).
  struct Run {
    int slot;
    int64_t row, first_position, length;
  };
  std::vector<Run> runs;
  for (int64_t i = 0; i < n; ++i) {
    if (!runs.empty() && runs.back().slot == batch.slots[i] && runs.back().row + runs.back().length == i) {
      ++runs.back().length;
    } else {
      runs.push_back({batch.slots[i], i, batch.positions[i], 1});
    }
  }

  for (int64_t l = 0; l < c.num_layers; ++l) {
    const Layer& L = layers_[size_t(l)];
    // Attention sub-block: x += o_proj(attention(rope(q), rope(k), v)) of rmsnorm(x).
    if (l == 0) dev.rmsnorm(x, n, H, L.attn_norm, eps, normed);
    else dev.add_rmsnorm(x, delta, n, H, L.attn_norm, eps, normed);
    run_linear(L.q, normed, n, q);
    run_linear(L.k, normed, n, k);
    run_linear(L.v, normed, n, v);
    dev.rope(q, 1, n, c.num_heads, d, q_dim, cos, sin);
    dev.rope(k, 1, n, c.num_kv_heads, d, kv_dim, cos, sin);
    if (L.k_post_rope_scale) dev.post_rope_scale(q, q_dim, k, kv_dim, n, L.k_post_rope_scale, c.num_heads, c.num_kv_heads, d);
    if (formats_.query) dev.round_trip_rows(q, n * c.num_heads, d, *formats_.query);
    if (formats_.kv_cache) {  // as each (token, KV head) row is written to the cache
      dev.round_trip_rows(k, n * c.num_kv_heads, d, *formats_.kv_cache);
      dev.round_trip_rows(v, n * c.num_kv_heads, d, *formats_.kv_cache);
    }
    for (const Run& r : runs) {
      float* kc = cache_k(r.slot, l);
      float* vc = cache_v(r.slot, l);
      dev.copy(kc + r.first_position * kv_dim, k + r.row * kv_dim, r.length * kv_dim);
      dev.copy(vc + r.first_position * kv_dim, v + r.row * kv_dim, r.length * kv_dim);
      dev.attention(q + r.row * q_dim, kc, vc, 1, r.length, r.first_position, capacity_, c.num_heads, c.num_kv_heads,
                    d, scale, attn + r.row * q_dim);
    }
    run_linear(L.o, attn, n, delta);
    // MLP sub-block: x += down(silu(gate(h)) * up(h)), h = rmsnorm(x).
    dev.add_rmsnorm(x, delta, n, H, L.mlp_norm, eps, normed);
    run_linear(L.gate, normed, n, gate);
    run_linear(L.up, normed, n, up);
    dev.silu_mul(gate, up, n * F, gate);
    run_linear(L.down, gate, n, delta);
  }
  dev.add_rmsnorm(x, delta, n, H, final_norm_, eps, normed);

  // The LM head over every row, the wanted rows copied out in stretches.
  float* out = dev.scratch(kLogits, n * V, "logits");
  run_linear(lm_head_, normed, n, out);
  float* dst = logits.data_mut<float>();
  for (int64_t i = 0; i < n;) {
    if (!batch.want_logits[size_t(i)]) {
      ++i;
      continue;
    }
    int64_t j = i;
    while (j < n && batch.want_logits[size_t(j)]) ++j;
    dev.download(dst, out + i * V, (j - i) * V);
    dst += (j - i) * V;
    i = j;
  }
  for (const Run& r : runs) lengths_[size_t(r.slot)] += r.length;
  return logits;
}

}  // namespace qf
