#include "runtime/cpu_engine.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "backends/cpu/activation_quantized_linear.h"
#include "backends/cpu/attention.h"
#include "backends/cpu/format_round_trip.h"
#include "backends/cpu/ops.h"
#include "backends/cpu/rope.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "formats/convert.h"
#include "io/quantized_checkpoint.h"
#include "quant/recipe.h"
#include "quant/rope_scale.h"

namespace qf {
namespace {

std::vector<float> widen(const Tensor& t) {
  const Tensor f = to_f32(t);
  return std::vector<float>(f.data<float>(), f.data<float>() + f.numel());
}

}  // namespace

std::unique_ptr<cpu::LinearLayer> make_dense_linear(const std::string& name, const Tensor& weight,
                                                   const Tensor& bias) {
  return std::make_unique<cpu::DenseLinear>(weight, bias.defined() ? to_f32(bias) : bias, name);
}

LinearFactory activation_quantizing_factory(const Format& activation_format) {
  return [activation_format](const std::string& name, const Tensor& weight, const Tensor& bias) {
    return std::unique_ptr<cpu::LinearLayer>(
        new cpu::ActivationQuantizedLinear(make_dense_linear(name, weight, bias), activation_format));
  };
}

CpuEngine::CpuEngine(const Checkpoint& ck, int num_slots, int64_t slot_capacity, const LinearFactory& make_linear)
    : config_(ck.config), capacity_(slot_capacity) {
  config_.validate(ck.path);
  QF_CHECK(num_slots >= 1, "the CPU engine needs at least one slot, got ", num_slots);
  QF_CHECK(slot_capacity >= 1, "slot capacity must be positive, got ", slot_capacity);
  const ModelConfig& c = config_;
  auto linear = [&](const std::string& name, const std::string& bias_name, int64_t out, int64_t in) {
    const Tensor& w = ck.tensor(name, {out, in});
    Tensor b = (!bias_name.empty() && ck.has(bias_name)) ? ck.tensor(bias_name) : Tensor();
    auto layer = make_linear(name, w, b);
    QF_CHECK(layer && layer->in_features() == in && layer->out_features() == out, "the linear layer made for ",
             name, " does not map ", in, " to ", out, " features");
    return layer;
  };
  auto norm = [&](const std::string& name) {
    const Tensor& t = ck.tensor(name);
    QF_CHECK(t.numel() == c.hidden_size, ck.path, ": ", name, " has ", t.numel(), " values, expected ",
             c.hidden_size);
    return widen(t);
  };

  embed_ = ck.tensor(names::embed(), {c.vocab_size, c.hidden_size});
  final_norm_ = norm(names::final_norm());
  const std::string head_name = c.tie_word_embeddings ? names::embed() : names::lm_head();
  lm_head_ = linear(head_name, "", c.vocab_size, c.hidden_size);

  for (int64_t i = 0; i < c.num_layers; ++i) {
    Layer layer;
    layer.attn_norm = norm(names::layer(i, "input_layernorm.weight"));
    layer.mlp_norm = norm(names::layer(i, "post_attention_layernorm.weight"));
    for (LinearKind kind : kAllLinearKinds) {
      const BlockLinear b = block_linear(c, i, kind);
      layer.*kLayerLinears[size_t(kind)] = linear(b.weight, b.bias, b.out, b.in);
    }
    layer.k_post_rope_scale = read_k_post_rope_scale(ck, i);
    layers_.push_back(std::move(layer));
  }
  rope_ = rope_frequencies(c, c.max_position_embeddings);
  slots_.resize(size_t(num_slots));
}

std::string CpuEngine::describe() const { return str("cpu (", num_threads(), " threads)"); }

void CpuEngine::set_kv_cache_format(const Format& format) {
  cpu::check_row_format(format, config_.head_dim, "KV cache");
  kv_format_ = format;
}

void CpuEngine::set_query_format(const Format& format) {
  cpu::check_row_format(format, config_.head_dim, "query");
  query_format_ = format;
}

int64_t CpuEngine::slot_length(int slot) const {
  QF_CHECK(slot >= 0 && slot < num_slots(), "slot ", slot, " does not exist (the engine has ", num_slots(), ")");
  return slots_[size_t(slot)].length;
}

void CpuEngine::truncate(int slot, int64_t length) {
  QF_CHECK(slot >= 0 && slot < num_slots(), "slot ", slot, " does not exist (the engine has ", num_slots(), ")");
  Slot& s = slots_[size_t(slot)];
  QF_CHECK(length >= 0 && length <= s.length, "cannot truncate slot ", slot, " of ", s.length, " tokens to ",
           length);
  s.length = length;  // positions >= length are overwritten by the next tokens
}

float* CpuEngine::cache_k(Slot& s, int64_t layer, int64_t kv_head) {
  return s.k.data() + ((layer * config_.num_kv_heads + kv_head) * capacity_) * config_.head_dim;
}
float* CpuEngine::cache_v(Slot& s, int64_t layer, int64_t kv_head) {
  return s.v.data() + ((layer * config_.num_kv_heads + kv_head) * capacity_) * config_.head_dim;
}

void CpuEngine::check_batch(const Batch& batch) const {
  const int64_t n = batch.size();
  QF_CHECK(int64_t(batch.positions.size()) == n && int64_t(batch.slots.size()) == n &&
               int64_t(batch.want_logits.size()) == n,
           "batch: tokens, positions, slots and want_logits must have one entry per token");
  std::vector<int64_t> next(slots_.size());
  for (size_t s = 0; s < slots_.size(); ++s) next[s] = slots_[s].length;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t slot = batch.slots[i];
    QF_CHECK(slot >= 0 && slot < num_slots(), "batch token ", i, ": slot ", slot, " does not exist (the engine has ",
             num_slots(), ")");
    QF_CHECK(batch.positions[i] == next[slot], "batch token ", i, ": position ", batch.positions[i], " in slot ", slot,
             ", expected ", next[slot], " (a slot's tokens must continue its cache in order)");
    QF_CHECK(next[slot] < capacity_, "batch token ", i, ": slot ", slot, " is full (", capacity_,
             " tokens); truncate or reset it, or create the engine with a larger capacity");
    ++next[slot];
  }
}

// Writes the batch's keys and values into the caches, then runs attention slot by slot: the
// queries of one slot are gathered, attend over that slot's cache, and are scattered back.
void CpuEngine::attention_block(int64_t layer, const Batch& batch, float* q, const float* k, const float* v,
                                float* out) {
  const ModelConfig& c = config_;
  const int64_t d = c.head_dim, q_row = c.num_heads * d, kv_row = c.num_kv_heads * d;
  std::map<int32_t, std::vector<int64_t>> tokens_of_slot;
  for (int64_t i = 0; i < batch.size(); ++i) tokens_of_slot[batch.slots[i]].push_back(i);

  for (const auto& [slot_id, idx] : tokens_of_slot) {
    Slot& s = slots_[size_t(slot_id)];
    for (int64_t i : idx)
      for (int64_t h = 0; h < c.num_kv_heads; ++h) {
        float* kc = cache_k(s, layer, h) + int64_t(batch.positions[i]) * d;
        float* vc = cache_v(s, layer, h) + int64_t(batch.positions[i]) * d;
        std::copy_n(k + i * kv_row + h * d, d, kc);
        std::copy_n(v + i * kv_row + h * d, d, vc);
        if (kv_format_) {
          cpu::round_trip_rows(kc, 1, d, *kv_format_, kc);
          cpu::round_trip_rows(vc, 1, d, *kv_format_, vc);
        }
      }
    std::vector<float> q_slot(idx.size() * size_t(q_row)), out_slot(q_slot.size());
    std::vector<int32_t> pos(idx.size());
    for (size_t j = 0; j < idx.size(); ++j) {
      std::copy_n(q + idx[j] * q_row, q_row, q_slot.data() + j * q_row);
      pos[j] = batch.positions[idx[j]];
    }
    const float scale = 1.0f / std::sqrt(float(d));
    cpu::attention(q_slot.data(), q_row, int64_t(idx.size()), pos.data(), cache_k(s, layer, 0), cache_v(s, layer, 0),
                   capacity_ * d, c.num_heads, c.num_kv_heads, d, scale, out_slot.data(), q_row);
    for (size_t j = 0; j < idx.size(); ++j) std::copy_n(out_slot.data() + j * q_row, q_row, out + idx[j] * q_row);
  }
}

Tensor CpuEngine::forward(const Batch& batch) {
  check_batch(batch);
  const ModelConfig& c = config_;
  const int64_t M = batch.size(), H = c.hidden_size, F = c.intermediate_size, d = c.head_dim;
  const int64_t q_dim = c.num_heads * d, kv_dim = c.num_kv_heads * d;
  const float eps = float(c.rms_norm_eps);
  Tensor logits = Tensor::empty(DType::F32, {batch.num_logits(), c.vocab_size});
  if (M == 0) return logits;

  for (int64_t i = 0; i < M; ++i) {
    Slot& s = slots_[size_t(batch.slots[i])];
    if (s.k.empty()) {  // first use of the slot: allocate its cache
      const size_t n = size_t(c.num_layers * c.num_kv_heads * capacity_ * d);
      s.k.assign(n, 0.0f);
      s.v.assign(n, 0.0f);
    }
  }
  std::vector<float> cos, sin;
  batch_rope_tables(config_, rope_, batch, cos, sin);

  // The residual stream x, the normalised input of the current sub-block, and scratch.
  std::vector<float> x(size_t(M * H)), normed(size_t(M * H)), q(size_t(M * q_dim)), k(size_t(M * kv_dim)),
      v(size_t(M * kv_dim)), attn(size_t(M * q_dim)), delta(size_t(M * H)), gate(size_t(M * F)), up(size_t(M * F));
  cpu::embedding(embed_.raw(), embed_.dtype(), c.vocab_size, H, batch.tokens.data(), M, x.data());

  for (int64_t l = 0; l < c.num_layers; ++l) {
    Layer& L = layers_[size_t(l)];
    // Attention sub-block: x += o_proj(attention(rope(q), rope(k), v)) of rmsnorm(x).
    if (l == 0) cpu::rmsnorm(x.data(), M, H, L.attn_norm.data(), eps, normed.data());
    else cpu::add_rmsnorm(x.data(), delta.data(), M, H, L.attn_norm.data(), eps, normed.data());
    L.q->forward(normed.data(), M, q.data());
    L.k->forward(normed.data(), M, k.data());
    L.v->forward(normed.data(), M, v.data());
    cpu::rope_apply(q.data(), M, c.num_heads, d, q_dim, cos.data(), sin.data());
    cpu::rope_apply(k.data(), M, c.num_kv_heads, d, kv_dim, cos.data(), sin.data());
    if (!L.k_post_rope_scale.empty())
      apply_post_rope_scale(q.data(), q_dim, k.data(), kv_dim, M, L.k_post_rope_scale.data(), c.num_heads,
                            c.num_kv_heads, d);
    if (query_format_) cpu::round_trip_rows(q.data(), M * c.num_heads, d, *query_format_, q.data());
    attention_block(l, batch, q.data(), k.data(), v.data(), attn.data());
    L.o->forward(attn.data(), M, delta.data());

    // MLP sub-block: x += down(silu(gate(h)) * up(h)), h = rmsnorm(x).
    cpu::add_rmsnorm(x.data(), delta.data(), M, H, L.mlp_norm.data(), eps, normed.data());
    L.gate->forward(normed.data(), M, gate.data());
    L.up->forward(normed.data(), M, up.data());
    cpu::silu_mul(gate.data(), up.data(), M * F, gate.data());
    L.down->forward(gate.data(), M, delta.data());
  }
  cpu::add_rmsnorm(x.data(), delta.data(), M, H, final_norm_.data(), eps, normed.data());

  // The LM head runs only on the rows whose logits are wanted.
  std::vector<float> out_rows;
  out_rows.reserve(size_t(batch.num_logits() * H));
  for (int64_t i = 0; i < M; ++i)
    if (batch.want_logits[i]) out_rows.insert(out_rows.end(), normed.begin() + i * H, normed.begin() + (i + 1) * H);
  if (batch.num_logits() > 0) lm_head_->forward(out_rows.data(), batch.num_logits(), logits.data_mut<float>());

  for (int64_t i = 0; i < M; ++i) ++slots_[size_t(batch.slots[i])].length;
  return logits;
}

}  // namespace qf
