// The CPU reference engine: the Llama-family forward pass in FP32 on the ops of
// src/backends/cpu, with a KV cache per slot. It is the oracle the CUDA engine and every
// quantized format are compared against, so it is written to be read: one function per step
// of the block, in the order of the HF modeling code.
//
// A checkpoint with FireQ's post-RoPE key scales (io/quantized_checkpoint.h
// k_post_rope_scale_name) has them applied after RoPE: keys *= scale, queries /= scale.
//
// Numerics: FP32 activations and accumulation throughout; weights stay in their stored dtype
// (F32, BF16, F16) and are widened exactly inside the GEMM; RMSNorm sums squares in double;
// RoPE angles in double; the KV cache is FP32. Every op computes a token's row independently
// of the other rows (see backends/cpu/gemm.h and attention.h), so a token's logits are
// bit-identical whether its sequence is run in one call, in chunks, token by token from the
// cache, or batched with other sequences.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backends/cpu/linear_layer.h"
#include "formats/format.h"
#include "io/checkpoint.h"
#include "quant/recipe.h"
#include "runtime/engine.h"
#include "runtime/rope_frequencies.h"

namespace qf {

// Makes the layer that computes y = x W^T (+ b) for the weight named `name` (a canonical tensor
// name; bias undefined when the layer has none). The hook through which quantized or
// simulated-quantization layers replace the dense ones without changing the engine.
using LinearFactory = std::function<std::unique_ptr<cpu::LinearLayer>(const std::string& name, const Tensor& weight,
                                                                      const Tensor& bias)>;
// The default: cpu::DenseLinear over the checkpoint's tensor as stored.
std::unique_ptr<cpu::LinearLayer> make_dense_linear(const std::string& name, const Tensor& weight,
                                                   const Tensor& bias);

// Dense layers whose inputs are first quantized to `activation_format` (see
// cpu::ActivationQuantizedLinear).
LinearFactory activation_quantizing_factory(const Format& activation_format);

class CpuEngine final : public Engine {
 public:
  // Keeps references to the checkpoint's tensors (shared, not copied): the checkpoint's
  // storage lives as long as the engine. Slots' KV caches are allocated on first use.
  CpuEngine(const Checkpoint& checkpoint, int num_slots, int64_t slot_capacity,
            const LinearFactory& make_linear = make_dense_linear);

  // Simulates a KV cache stored in `format` (e.g. "f16", "fp8_e4m3:token"): every cached key
  // and value vector (one token, one KV head) is quantized to it and dequantized as it is
  // written. By default the cache is FP32.
  void set_kv_cache_format(const Format& format);
  // Simulates queries quantized for the attention (e.g. "fp8_e4m3:token", FireQ's FP8 prefill
  // attention): every query vector (one token, one query head, head_dim values) is quantized to
  // it and dequantized after RoPE and the post-RoPE scale. By default queries are FP32.
  void set_query_format(const Format& format);

  const ModelConfig& config() const override { return config_; }
  std::string describe() const override;
  int num_slots() const override { return int(slots_.size()); }
  int64_t slot_capacity() const override { return capacity_; }
  int64_t slot_length(int slot) const override;
  Tensor forward(const Batch& batch) override;
  void truncate(int slot, int64_t length) override;

 private:
  struct Layer {
    std::vector<float> attn_norm, mlp_norm;
    std::unique_ptr<cpu::LinearLayer> q, k, v, o, gate, up, down;  // kLayerLinears: in LinearKind order
    std::vector<float> k_post_rope_scale;  // [kv_heads * head_dim], empty: none
  };
  struct Slot {
    std::vector<float> k, v;  // [layer][kv_head][capacity][head_dim]
    int64_t length = 0;
  };

  static constexpr std::unique_ptr<cpu::LinearLayer> Layer::*kLayerLinears[] = {
      &Layer::q, &Layer::k, &Layer::v, &Layer::o, &Layer::gate, &Layer::up, &Layer::down};
  void check_batch(const Batch& batch) const;
  void attention_block(int64_t layer, const Batch& batch, float* q, const float* k, const float* v, float* out);
  float* cache_k(Slot& s, int64_t layer, int64_t kv_head);
  float* cache_v(Slot& s, int64_t layer, int64_t kv_head);

  ModelConfig config_;
  Tensor embed_;
  std::vector<float> final_norm_;
  std::unique_ptr<cpu::LinearLayer> lm_head_;
  std::vector<Layer> layers_;
  RopeFrequencies rope_;  // for every sequence length (unless dynamic NTK scaling)
  int64_t capacity_;
  std::vector<Slot> slots_;
  std::optional<Format> kv_format_;
  std::optional<Format> query_format_;
};

}  // namespace qf
