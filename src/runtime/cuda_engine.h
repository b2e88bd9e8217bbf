// The CUDA engine: the Llama-family forward pass on one GPU in BF16, behind the Engine
// interface (engine.h), built from the kernels of src/backends/cuda.
//
// Weights. Every tensor of the checkpoint is converted to BF16 on the host (a GGUF block format
// is dequantized on load first, so a Q4_1 file runs here as its BF16 dequantization) and copied
// into one device arena; q/k/v are fused into one [q+2kv, hidden] matrix and gate/up into one
// [2 x intermediate, hidden] matrix, so a block runs four GEMMs. Norm weights stay FP32. The
// residual stream is FP32 (add_rmsnorm's FP32 overload): only the matmul inputs/outputs, the
// attention and the KV cache are BF16, unless the options quantize them (CudaLinearMode,
// CudaAttentionMode). A quantized KV cache (INT4 or FP8 rows with F16 scales) is read directly by
// decode attention; a prefill pass first dequantizes the blocks of its sequences, layer by
// layer, into one layer's worth of BF16 scratch blocks that the BF16 prefill kernel reads.
//
// Memory is sized once, up front: weights + paged KV cache (num_slots x slot_capacity tokens) +
// the scratch of one prefill chunk + the logits of one head pass. When it does not fit, the
// error says how much each part needs and how much the GPU has free.
//
// forward(Batch): tokens of any mix of slots and positions (the Engine rules). Long batches run
// in chunks of at most max_chunk_tokens (the activations of a 128k-token prompt are never all
// alive); each chunk appends its K/V to the cache before attention, so a later chunk sees the
// earlier ones through the cache. Pure decode steps (one token per slot, every logit wanted)
// are captured as a CUDA graph per batch size on their second occurrence and replayed after
// that; positions, KV slot ids, block tables and sequence lengths live in a device buffer at
// fixed addresses that is refreshed by one async copy before each replay. The only host sync
// in forward is the final copy of the logits.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "backends/cuda/kv_element.h"
#include "formats/fpx.h"
#include "formats/quantize.h"
#include "io/checkpoint.h"
#include "io/quantized_checkpoint.h"
#include "runtime/engine.h"

namespace qf {

// How the CUDA engine runs a block's seven linear layers.
enum class CudaLinears : uint8_t {
  bf16,  // BF16 weights (a quantized checkpoint's weights dequantized), BF16 activations
  w4a8,  // FireQ: INT4 lut weights (int4:g128:scale=fp8_e4m3[:tensor_scale]:lut) x per-token
         // FP8 E4M3 activations, through w4a8_gemm.h's kernels; each linear's input is quantized
         // in FP8 straight from FP32 by the kernel that makes it (add_rmsnorm_fp8 before q/k/v and
         // gate/up, silu_mul_fp8 before down; the attention output by quantize_fp8_per_token)
  fpx,   // FP6-LLM: FPx weights with one scale per output channel (fp6_e3m2 / fp6_e2m3 /
         // fp5_e2m2:channel) x BF16 activations, through fpx_gemm.h's kernels
};
struct CudaLinearMode {
  CudaLinears kind = CudaLinears::bf16;
  FpxType fpx{};  // kind == fpx: the weights' element type
  bool operator==(const CudaLinearMode&) const = default;
};
std::string cuda_linears_name(const CudaLinearMode& m);  // "bf16", "w4a8", "fp6_e3m2", ...

// How the CUDA engine runs a quantized checkpoint's linears exactly as its quantization_config
// says, or nothing when it cannot (activation rounding other than FireQ's w4a8: those are CPU
// simulations; the KV cache and queries are cuda_attention_for's). FireQ's formats run as w4a8; one FPx channel format in every linear (FP6-LLM's
// recipes) as fpx; other weight-only formats as bf16 (their dequantized values; BF16 holds
// <= 8-bit grids with BF16-representable scales exactly, else rounds once).
std::optional<CudaLinearMode> cuda_linears_for(const QuantizationConfig& q);

// How the CUDA engine runs attention (FireQ part 2): the KV cache's row kind (kv_element.h:
// BF16, FireQ's INT4, or FP8 for comparison) and whether queries are rounded to FP8 E4M3 per
// (token, head) ("fp8_e4m3:token") after RoPE. A checkpoint's k_post_rope_scale tensors apply
// whatever the mode (rope_kv.h).
struct CudaAttentionMode {
  cuda::KvElement kv = cuda::KvElement::bf16;
  bool q_fp8 = false;
  // With a quantized cache and FP8 queries, prefill attention runs on FP8 tensor cores
  // (attention_fp8.h; its probabilities rounded to E4M3, ~2.5 % relative error in an output row);
  // false: the BF16 kernel over a BF16 copy of the cache (exact to the simulation, slower).
  bool fp8_prefill = true;
  bool operator==(const CudaAttentionMode&) const = default;
};
std::string cuda_attention_name(const CudaAttentionMode& m);  // "kv bf16", "kv int4:token:scale=f16, q fp8", ...
// The attention mode for a checkpoint's (or a run's) KV-cache and query formats (null: BF16 /
// unrounded), or nothing when the CUDA engine cannot store or round them exactly (the CPU engine
// simulates any format).
std::optional<CudaAttentionMode> cuda_attention_for(const std::optional<Format>& kv_cache,
                                                    const std::optional<Format>& query);

struct CudaEngineOptions {
  int num_slots = 1;
  CudaLinearMode linears;
  CudaAttentionMode attention;
  int64_t slot_capacity = 2048;    // tokens per slot (the KV cache holds num_slots x this)
  int64_t max_chunk_tokens = 2048; // tokens per prefill pass
  bool use_graphs = true;          // capture pure-decode steps as CUDA graphs
};

// The configs of the synthetic models `qforge bench model --synthetic NAME` runs: llama2-7b,
// llama3-8b, llama2-70b, smollm2-135m (real shapes, random weights). Throws naming the known ones.
ModelConfig synthetic_model_config(const std::string& name);
std::vector<std::string> synthetic_model_names();

class CudaEngine final : public Engine {
 public:
  // Uploads the checkpoint's weights as BF16, or, with options.linears w4a8 / fpx, the block
  // linears from `quantized` (the checkpoint's quantized matrices by canonical name, in that
  // mode's formats), pre-packed (weight_prepack.h). Throws qf::Error on an unsupported model
  // (attention bias, dynamic NTK RoPE, head dim other than 64/128), no GPU, or too little memory.
  CudaEngine(const Checkpoint& checkpoint, const CudaEngineOptions& options,
             const std::map<std::string, QuantizedMatrix>* quantized = nullptr);
  // Real-shape weights generated on the GPU (never zeros; linear weights ~ N(0, 1/in_features),
  // so activations keep unit scale through the layers; w4a8 / fpx: random codes and scales with
  // the same spread). `seed` fixes them.
  CudaEngine(const ModelConfig& config, const CudaEngineOptions& options, uint64_t seed);
  ~CudaEngine() override;

  const ModelConfig& config() const override;
  std::string describe() const override;
  int num_slots() const override;
  int64_t slot_capacity() const override;
  int64_t slot_length(int slot) const override;
  Tensor forward(const Batch& batch) override;
  void truncate(int slot, int64_t length) override;

  // For the benchmark and tests.
  size_t weight_bytes() const;        // every weight the model holds on the GPU
  size_t decode_read_bytes() const;   // the weights one decode step reads (all but the embedding)
  size_t arena_bytes() const;         // the whole up-front allocation
  int graphs_captured() const;        // decode graphs captured so far
  int graph_replays() const;          // forward() calls served by a graph replay
  void set_use_graphs(bool on);
  // Profiling: while on, forward() runs eagerly with a CUDA event after every op;
  // profile_ms() returns the GPU time per kind of op ("linear qkv", "attention (prefill)", ...)
  // summed over the forwards since profiling was turned on (or since the last call), in order of
  // first appearance. The events cost a little time themselves: for a breakdown, not a total.
  void set_profiling(bool on);
  std::vector<std::pair<std::string, double>> profile_ms();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace qf
