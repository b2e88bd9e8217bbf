// libFuzzer target: Hugging Face config.json (and tokenizer_config.json's chat template) on
// arbitrary text. Any outcome but success or a qf::Error is a finding. Configs that parse are
// validated and, if valid, their parameter count and required tensor list computed.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/hf_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    (void)qf::parse_hf_chat_template(text, "fuzz/tokenizer_config.json");
  } catch (const qf::Error&) {
  }
  try {
    const qf::ModelConfig c = qf::parse_hf_config(text, "fuzz/config.json");
    c.validate("fuzz/config.json");
    (void)c.parameter_count();
    (void)qf::required_tensor_shapes(c).size();
  } catch (const qf::Error&) {
  }
  return 0;
}
