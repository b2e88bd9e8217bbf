// libFuzzer target: the safetensors reader on arbitrary bytes. Any outcome but success or a
// qf::Error is a finding. Files that parse have every tensor viewed as a Tensor (borrowed or
// copied) and its last byte read.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::shared_ptr<const qf::safetensors::File> file;
  try {
    file = qf::safetensors::File::parse_bytes(data, size, "fuzz.safetensors");
  } catch (const qf::Error&) {
    return 0;
  }
  for (const auto& [k, v] : file->metadata()) (void)(k.size() + v.size());
  for (const qf::safetensors::TensorEntry& e : file->tensors()) {
    if (e.nbytes()) {
      volatile uint8_t last = e.data[e.nbytes() - 1];
      (void)last;
    }
    try {
      const qf::Tensor t = file->tensor(e);
      if (t.nbytes()) {
        volatile uint8_t last = static_cast<const uint8_t*>(t.raw())[t.nbytes() - 1];
        (void)last;
      }
    } catch (const qf::Error&) {
    }
  }
  return 0;
}
