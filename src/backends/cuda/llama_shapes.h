// The benchmarked Llama models' hyper-parameters (their Hugging Face config.json files) and the
// four linear layers of one decoder block, by the shape of the weight [N, K]: what `qforge bench
// gemm` times, and what the kernel peers' harnesses (bench/peers) time, so that scripts/device.sh
// can join the two on (model, layer, M). Header-only, plain C++17 and free of qforge's libraries,
// so the peers' harnesses, built outside CMake, include it too.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace qf::cuda {

struct LlamaDims {
  const char* name;
  int64_t hidden, heads, kv_heads, head_dim, ffn;
};
inline constexpr LlamaDims kLlamaModels[] = {
    {"llama2-7b", 4096, 32, 32, 128, 11008},
    {"llama3-8b", 4096, 32, 8, 128, 14336},
    {"llama2-70b", 8192, 64, 8, 128, 28672},
};

// One linear layer of a model, by the shape of its weight [N, K].
struct GemmLayerShape {
  std::string model;  // "llama2-7b"
  std::string layer;  // "qkv" (q, k and v fused), "o", "gate_up" (fused), "down"
  int64_t n = 0, k = 0;
};

// The four linear layers of one decoder block of `model`; empty for a name not in kLlamaModels.
inline std::vector<GemmLayerShape> find_llama_layer_shapes(std::string_view model) {
  for (const LlamaDims& d : kLlamaModels) {
    if (model != d.name) continue;
    const std::string m(model);
    return {
        {m, "qkv", (d.heads + 2 * d.kv_heads) * d.head_dim, d.hidden},
        {m, "o", d.hidden, d.heads * d.head_dim},
        {m, "gate_up", 2 * d.ffn, d.hidden},
        {m, "down", d.hidden, d.ffn},
    };
  }
  return {};
}

}  // namespace qf::cuda
