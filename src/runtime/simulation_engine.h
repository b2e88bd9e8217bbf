// The simulation engine: the CPU engine's FP32 forward pass (cpu_engine.h) computed on an
// Fp32Device (quant/fp32_device.h) — on the GPU, the way to evaluate any recipe exactly as it is
// simulated (weights at their exact dequantized values in F32, activations, KV cache and queries
// rounded as the recipe says) at GPU speed, before or without a fast kernel for it.
//
// Same semantics as CpuEngine, op for op: per-layer activation formats (the checkpoint's, or one
// format for every layer), a KV-cache format applied as each (token, KV head) row is written, a
// query format after RoPE and the post-RoPE scale, FireQ's k_post_rope_scale. The GPU computes
// the same FP32 ops in other summation orders (cuBLAS, a tiled online softmax), so its logits
// equal the CPU engine's up to FP32 rounding, and a value at a rounding boundary of a simulated
// format may take the neighbouring code (tests/cuda/test_simulation_engine.cpp states the bounds).
//
// Memory (the device's): every weight in F32 (a 7B model: 27 GB) and per slot a KV cache of
// layers x capacity x kv_heads x head_dim F32 keys and values. Formats the GPU does not round
// itself go through the host (quant/fp32_device.h), so a recipe with activation rounding moves
// each linear input across PCIe twice.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "formats/format.h"
#include "io/checkpoint.h"
#include "quant/fp32_device.h"
#include "quant/recipe.h"
#include "runtime/engine.h"
#include "runtime/rope_frequencies.h"

namespace qf {

struct SimulatedFormats {
  // Linear inputs rounded to these, by canonical weight name (missing: unrounded), or, when
  // every_linear is set, every linear's input to it (the LM head's included, as the CPU engine's
  // activation_quantizing_factory does).
  std::map<std::string, Format> activations;
  std::optional<Format> every_linear;
  std::optional<Format> kv_cache, query;
};

class SimulationEngine final : public Engine {
 public:
  // Uploads the checkpoint's weights (any float dtype, widened to F32) to `device`.
  SimulationEngine(const Checkpoint& checkpoint, int num_slots, int64_t slot_capacity,
                   std::unique_ptr<Fp32Device> device, SimulatedFormats formats);

  const ModelConfig& config() const override { return config_; }
  std::string describe() const override;
  int num_slots() const override { return int(lengths_.size()); }
  int64_t slot_capacity() const override { return capacity_; }
  int64_t slot_length(int slot) const override;
  Tensor forward(const Batch& batch) override;
  void truncate(int slot, int64_t length) override;

 private:
  struct Linear {
    const float* w = nullptr;
    const float* bias = nullptr;  // null: none
    int64_t out = 0, in = 0;
    std::optional<Format> activations;
  };
  struct Layer {
    const float *attn_norm = nullptr, *mlp_norm = nullptr;
    Linear q, k, v, o, gate, up, down;  // kLayerLinears: in LinearKind order
    const float* k_post_rope_scale = nullptr;  // null: none
  };
  static constexpr Linear Layer::*kLayerLinears[] = {&Layer::q, &Layer::k,    &Layer::v,   &Layer::o,
                                                     &Layer::gate, &Layer::up, &Layer::down};
  // The device copy of a host F32 vector.
  const float* upload(const std::vector<float>& host, const std::string& what);
  // Slot s's cache of layer l: [capacity, kv_heads * head_dim] rows, keys then values.
  float* cache_k(int slot, int64_t layer);
  float* cache_v(int slot, int64_t layer);
  void run_linear(const Linear& lin, const float* x, int64_t m, float* y);

  ModelConfig config_;
  std::unique_ptr<Fp32Device> device_;
  SimulatedFormats formats_;
  int64_t capacity_;
  RopeFrequencies rope_;
  Tensor embed_;  // the embedding table as stored (rows gathered on the host)
  const float* final_norm_ = nullptr;
  Linear lm_head_;
  std::vector<Layer> layers_;
  std::vector<float*> caches_;  // per slot: layers x 2 x capacity x kv_dim floats, made on first use
  std::vector<int64_t> lengths_;
};

}  // namespace qf
