#include "runtime/engine.h"

#include <algorithm>
#include <map>

#include "core/error.h"
#include "backends/cpu/activation_quantized_linear.h"
#include "formats/format.h"
#include "runtime/cpu_engine.h"
#include "runtime/cuda_engine.h"
#include "runtime/simulation_engine.h"
#include "runtime/model.h"

#ifdef QF_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace qf {

void Batch::add(int32_t token, int32_t position, int32_t slot, bool logits) {
  tokens.push_back(token);
  positions.push_back(position);
  slots.push_back(slot);
  want_logits.push_back(logits ? 1 : 0);
}

void Batch::add_sequence(int32_t slot, int32_t first_position, std::span<const int32_t> run, Logits logits) {
  for (size_t i = 0; i < run.size(); ++i) {
    const bool want = logits == Logits::All || (logits == Logits::Last && i + 1 == run.size());
    add(run[i], first_position + int32_t(i), slot, want);
  }
}

int64_t Batch::num_logits() const { return std::count(want_logits.begin(), want_logits.end(), uint8_t(1)); }

void Batch::clear() {
  tokens.clear();
  positions.clear();
  slots.clear();
  want_logits.clear();
}

void check_batch(const Batch& batch, std::span<const int64_t> slot_lengths, int64_t slot_capacity, int64_t vocab_size) {
  const int64_t n = batch.size();
  QF_CHECK(int64_t(batch.positions.size()) == n && int64_t(batch.slots.size()) == n &&
               int64_t(batch.want_logits.size()) == n,
           "batch: tokens, positions, slots and want_logits must have one entry per token");
  const int num_slots = int(slot_lengths.size());
  std::vector<int64_t> next(slot_lengths.begin(), slot_lengths.end());
  for (int64_t i = 0; i < n; ++i) {
    const int32_t slot = batch.slots[i];
    QF_CHECK(slot >= 0 && slot < num_slots, "batch token ", i, ": slot ", slot, " does not exist (the engine has ",
             num_slots, ")");
    QF_CHECK(batch.tokens[i] >= 0 && batch.tokens[i] < vocab_size, "batch token ", i, ": token id ", batch.tokens[i],
             " outside the vocabulary [0, ", vocab_size, ")");
    QF_CHECK(batch.positions[i] == next[slot], "batch token ", i, ": position ", batch.positions[i], " in slot ", slot,
             ", expected ", next[slot], " (a slot's tokens must continue its cache in order)");
    QF_CHECK(next[slot] < slot_capacity, "batch token ", i, ": slot ", slot, " is full (", slot_capacity,
             " tokens); truncate or reset it, or create the engine with a larger capacity");
    ++next[slot];
  }
}

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::Cpu;
  if (name == "cuda") return Device::Cuda;
  fail("unknown device \"", name, "\" (expected cpu or cuda)");
}

void require_device(Device device) {
  if (device == Device::Cpu) return;
#ifdef QF_HAVE_CUDA
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  QF_CHECK(e == cudaSuccess && n > 0, "--device cuda: no usable CUDA device (",
           e == cudaSuccess ? "none found" : cudaGetErrorString(e), "); use --device cpu");
  cudaDeviceProp p{};
  QF_CHECK(cudaGetDeviceProperties(&p, 0) == cudaSuccess, "--device cuda: cannot query CUDA device 0");
  QF_CHECK(p.major == 9, "--device cuda: device 0 is ", p.name, " (sm_", p.major * 10 + p.minor,
           "); qforge's kernels are built for sm_90a (Hopper: H100, H200). Use --device cpu");
#else
  fail("--device cuda: this qforge was built without CUDA (configure with -DQF_CUDA=ON on a machine with the "
       "CUDA toolkit); use --device cpu");
#endif
}

Device default_device() {
#ifdef QF_HAVE_CUDA
  try {
    require_device(Device::Cuda);
    return Device::Cuda;
  } catch (const Error&) {
    return Device::Cpu;
  }
#else
  return Device::Cpu;
#endif
}

bool cuda_runs_natively(const Model& model) {
  return !model.quantization || (cuda_linears_for(*model.quantization).has_value() &&
                                 cuda_attention_for(model.quantization->kv_cache, model.quantization->query).has_value());
}

std::unique_ptr<Engine> create_engine(const Model& model, const EngineOptions& options) {
  const ModelConfig& c = model.config();
  int64_t capacity = options.slot_capacity;
  if (capacity <= 0) capacity = std::min<int64_t>(c.max_position_embeddings, EngineOptions::kDefaultSlotCapacity);
  switch (options.device) {
    case Device::Cpu: {
      // A quantized checkpoint's own activation and KV formats (per layer) apply unless the
      // options name one explicitly, which then applies to every layer.
      LinearFactory factory = make_dense_linear;
      if (!options.activation_format.empty()) {
        factory = activation_quantizing_factory(Format::parse(options.activation_format));
      } else if (model.quantization) {
        std::map<std::string, Format> per_layer;
        for (const auto& [name, q] : model.quantization->linears)
          if (q.activations) per_layer.emplace(name, *q.activations);
        if (!per_layer.empty())
          factory = [per_layer](const std::string& name, const Tensor& weight, const Tensor& bias) {
            auto it = per_layer.find(name);
            return it == per_layer.end() ? make_dense_linear(name, weight, bias)
                                         : activation_quantizing_factory(it->second)(name, weight, bias);
          };
      }
      auto engine = std::make_unique<CpuEngine>(model.checkpoint, options.num_slots, capacity, factory);
      if (!options.kv_cache_format.empty()) engine->set_kv_cache_format(Format::parse(options.kv_cache_format));
      else if (model.quantization && model.quantization->kv_cache)
        engine->set_kv_cache_format(*model.quantization->kv_cache);
      if (!options.query_format.empty()) engine->set_query_format(Format::parse(options.query_format));
      else if (model.quantization && model.quantization->query)
        engine->set_query_format(*model.quantization->query);
      return engine;
    }
    case Device::Cuda: {
      require_device(Device::Cuda);
#ifdef QF_HAVE_CUDA
      // The run's KV-cache / query formats override the checkpoint's, as on the CPU engine.
      std::optional<Format> kv, query;
      if (model.quantization) kv = model.quantization->kv_cache, query = model.quantization->query;
      if (!options.kv_cache_format.empty()) kv = Format::parse(options.kv_cache_format);
      if (!options.query_format.empty()) query = Format::parse(options.query_format);
      const std::optional<CudaAttentionMode> att = cuda_attention_for(kv, query);
      if (options.simulate || !options.activation_format.empty() || !cuda_runs_natively(model) || !att) {
        // What the kernels do not run (or what was asked for exactly): the CPU engine's FP32
        // numerics on the GPU, every format rounded as the CPU engine rounds it.
        SimulatedFormats f;
        if (!options.activation_format.empty()) {
          f.every_linear = Format::parse(options.activation_format);
        } else if (model.quantization) {
          for (const auto& [name, q] : model.quantization->linears)
            if (q.activations) f.activations.emplace(name, *q.activations);
        }
        f.kv_cache = kv;
        f.query = query;
        return std::make_unique<SimulationEngine>(model.checkpoint, options.num_slots, capacity,
                                                  make_cuda_fp32_device(), std::move(f));
      }
      CudaEngineOptions o;
      o.num_slots = options.num_slots;
      o.slot_capacity = capacity;
      if (model.quantization) o.linears = *cuda_linears_for(*model.quantization);
      o.attention = *att;
      o.attention.fp8_prefill = options.fp8_prefill_attention;
      return std::make_unique<CudaEngine>(model.checkpoint, o, &model.quantized_weights);
#endif
    }
  }
  fail("unknown device");
}

}  // namespace qf
