#include "runtime/engine.h"

#include <algorithm>

#include "core/error.h"
#include "backends/cpu/activation_quantized_linear.h"
#include "formats/format.h"
#include "runtime/cpu_engine.h"
#include "runtime/model.h"

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

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::Cpu;
  if (name == "cuda") return Device::Cuda;
  fail("unknown device \"", name, "\" (expected cpu or cuda)");
}

void require_device(Device device) {
  if (device == Device::Cpu) return;
#ifdef QF_HAVE_CUDA
  fail("--device cuda: the CUDA engine is not implemented yet (issue 3); use --device cpu");
#else
  fail("--device cuda: this qforge was built without CUDA (configure with -DQF_CUDA=ON on a machine with the "
       "CUDA toolkit); use --device cpu");
#endif
}

std::unique_ptr<Engine> create_engine(const Model& model, const EngineOptions& options) {
  const ModelConfig& c = model.config();
  int64_t capacity = options.slot_capacity;
  if (capacity <= 0) capacity = std::min<int64_t>(c.max_position_embeddings, EngineOptions::kDefaultSlotCapacity);
  switch (options.device) {
    case Device::Cpu: {
      auto engine = options.activation_format.empty()
                        ? std::make_unique<CpuEngine>(model.checkpoint, options.num_slots, capacity)
                        : std::make_unique<CpuEngine>(model.checkpoint, options.num_slots, capacity,
                                                      activation_quantizing_factory(
                                                          Format::parse(options.activation_format)));
      if (!options.kv_cache_format.empty()) engine->set_kv_cache_format(Format::parse(options.kv_cache_format));
      return engine;
    }
    case Device::Cuda:
      require_device(Device::Cuda);
  }
  fail("unknown device");
}

}  // namespace qf
