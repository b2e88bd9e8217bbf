// The inference engine interface the runtime drives (generate, perplexity, later serving),
// implemented by the CPU reference engine and the CUDA engine.
//
// A Batch is a flat list of tokens from one or more sequences, llama.cpp-batch style: every
// token names the KV-cache slot of its sequence and its position there, and says whether its
// logits are wanted. One forward() runs them all, so the GPU can do batched decode (one token
// of each of many sequences) and batched prefill/perplexity (several windows at once) in one
// pass; the CPU engine runs the linear layers over all tokens at once and attention per slot.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/model_config.h"

namespace qf {

struct Model;

struct Batch {
  std::vector<int32_t> tokens;
  std::vector<int32_t> positions;    // position of each token in its sequence
  std::vector<int32_t> slots;        // KV-cache slot (sequence) of each token
  std::vector<uint8_t> want_logits;  // 1: forward() returns this token's logits

  enum class Logits { All, Last, None };
  // Appends a run of consecutive tokens of one sequence at positions first_position, ...
  void add_sequence(int32_t slot, int32_t first_position, std::span<const int32_t> run, Logits logits);
  void add(int32_t token, int32_t position, int32_t slot, bool logits);
  int64_t size() const { return int64_t(tokens.size()); }
  int64_t num_logits() const;
  void clear();
};

class Engine {
 public:
  virtual ~Engine() = default;

  virtual const ModelConfig& config() const = 0;
  // "cpu (2 threads)", "cuda (NVIDIA H100 80GB HBM3)", ...
  virtual std::string describe() const = 0;
  // How many sequences (KV-cache slots) the engine holds, and how many tokens each can hold.
  virtual int num_slots() const = 0;
  virtual int64_t slot_capacity() const = 0;
  // Tokens currently cached in a slot (positions 0..length-1).
  virtual int64_t slot_length(int slot) const = 0;

  // Runs the batch. Rules (checked; a qf::Error names the offending token):
  //   * the tokens of one slot appear in order of position, and continue the slot's cache:
  //     the first is at position slot_length(slot), the next one after it, and so on;
  //   * a token attends to every earlier position of its own slot (cached or in this batch)
  //     and to nothing else.
  // Returns the logits [batch.num_logits(), vocab_size] F32, in batch order of the tokens
  // with want_logits set. Afterwards each slot's length has grown by its tokens in the batch.
  virtual Tensor forward(const Batch& batch) = 0;

  // Forgets a slot's tokens from position `length` on (0: empty the slot).
  virtual void truncate(int slot, int64_t length) = 0;
  void reset(int slot) { truncate(slot, 0); }
};

// Checks a batch against the Engine rules above, given each slot's current length, the slot
// capacity and the vocabulary size; throws a qf::Error naming the offending token.
void check_batch(const Batch& batch, std::span<const int64_t> slot_lengths, int64_t slot_capacity, int64_t vocab_size);

enum class Device { Cpu, Cuda };
// "cpu" or "cuda"; throws qf::Error listing the accepted names.
Device parse_device(const std::string& name);

// Throws a qf::Error saying why when the device cannot be used by this build/machine (called by
// create_engine; commands call it first to fail before loading a model).
void require_device(Device device);

// cuda when this build has CUDA and a usable GPU (Hopper) is present, else cpu: what the commands
// run on when --device is not given.
Device default_device();

struct EngineOptions {
  Device device = Device::Cpu;
  int num_slots = 1;
  // Tokens per slot; 0: the model's max_position_embeddings, capped at kDefaultSlotCapacity
  // (a 128k-context model would otherwise reserve its whole KV cache per slot).
  int64_t slot_capacity = 0;
  static constexpr int64_t kDefaultSlotCapacity = 8192;
  // Quantize the input of every linear layer to this activation format (formats/format.h
  // syntax, e.g. "int8:g32:scale=f16", "fp8_e4m3:token") and dequantize it, simulating a kernel
  // that consumes quantized activations. Empty: FP32 activations.
  std::string activation_format;
  // Simulate a KV cache stored in this format (e.g. "f16"); empty: FP32.
  std::string kv_cache_format;
  // Simulate queries rounded to this format after RoPE, per (token, head) row (e.g.
  // "fp8_e4m3:token"); empty: FP32.
  std::string query_format;
  // CUDA engine, quantized KV cache with FP8 queries (FireQ): prefill attention on FP8 tensor
  // cores (true) or in BF16 over a dequantized copy of the cache (false: slower, no FP8
  // probability rounding, so equal to the CPU simulation up to BF16 roundings).
  bool fp8_prefill_attention = true;
  // CUDA: run the FP32 simulation engine (simulation_engine.h: the CPU engine's numerics on the
  // GPU) even where the fast kernels could run the checkpoint. Without it, the simulation engine
  // runs what the kernels cannot: activation rounding, other KV-cache or query formats.
  bool simulate = false;
};

// The engine for options.device. CUDA: the CUDA engine's kernels where they run the checkpoint
// and the options, else (or with options.simulate) the FP32 simulation engine on the GPU; a clear
// error when qforge was built without CUDA or no GPU is present.
std::unique_ptr<Engine> create_engine(const Model& model, const EngineOptions& options);

// Whether the CUDA engine runs this model as its checkpoint says: unquantized, weight-only
// quantized (as BF16), or FireQ's w4a8 linears (INT4 lut weights x per-token FP8 activations),
// with a BF16, INT4 or FP8 KV cache and FP8 queries or none (cuda_engine.h cuda_linears_for,
// cuda_attention_for). False for other activation, KV-cache or query rounding, which only the
// CPU engine simulates.
bool cuda_runs_natively(const Model& model);

}  // namespace qf
