// libFuzzer target: the GGUF reader on arbitrary bytes. Any outcome but success or a qf::Error
// (a crash, a sanitizer report, another exception, a huge allocation) is a finding. Files that
// parse go on through what a loader does next: every metadata getter, the llama config, and
// the dequantization of each (small) tensor.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "io/gguf.h"
#include "io/gguf_llama.h"

namespace {

// Dequantizing a huge tensor is slow, not wrong; keep executions fast.
constexpr int64_t kMaxDequantElements = int64_t(1) << 16;

template <typename F>
void ignore_errors(F&& f) {
  try {
    f();
  } catch (const qf::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::shared_ptr<const qf::gguf::File> file;
  try {
    file = qf::gguf::File::parse_bytes(data, size, "fuzz.gguf");
  } catch (const qf::Error&) {
    return 0;
  }
  const qf::gguf::Metadata& md = file->metadata();
  for (const std::string& key : md.keys()) {
    ignore_errors([&] { md.get_string(key); });
    ignore_errors([&] { md.get_int(key); });
    ignore_errors([&] { md.get_float(key); });
    ignore_errors([&] { md.get_bool(key); });
    ignore_errors([&] { md.get_string_array(key); });
    ignore_errors([&] { md.get_int_array(key); });
    ignore_errors([&] { md.get_float_array(key); });
  }
  ignore_errors([&] {
    qf::ModelConfig c = qf::gguf_llama::config_from_gguf(*file);
    c.validate("fuzz.gguf");
    (void)c.parameter_count();
  });
  for (const qf::gguf::TensorInfo& t : file->tensors()) {
    (void)qf::gguf_llama::canonical_name(t.name);
    if (t.numel() > kMaxDequantElements) continue;
    qf::Tensor f32 = file->to_f32(t);
    volatile float sink = f32.numel() ? f32.data<float>()[f32.numel() - 1] : 0.0f;
    (void)sink;
  }
  return 0;
}
