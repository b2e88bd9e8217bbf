// A checkpoint on disk, opened: its config, its tensors under canonical names (see
// model_config.h) and where the tokenizer lives. Formats: a GGUF file (v2/v3), or a Hugging
// Face directory with config.json and model.safetensors or a sharded
// model.safetensors.index.json. Tensors are F32, F16 or BF16; F16/BF16 safetensors stay
// memory-mapped (borrowed), GGUF block-quantized tensors are dequantized to F32 on load.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "io/model_config.h"

namespace qf {

namespace gguf { class File; }

enum class CheckpointFormat { GGUF, HFDirectory };

struct Checkpoint {
  CheckpointFormat format = CheckpointFormat::HFDirectory;
  std::string path;  // the GGUF file or the HF directory
  ModelConfig config;
  std::map<std::string, Tensor> tensors;
  // Where each tensor came from, for `qforge info`: source dtype name per canonical name
  // ("Q4_1", "BF16", ...).
  std::map<std::string, std::string> source_dtypes;
  // The opened GGUF file (its metadata holds the tokenizer); null for HF directories.
  std::shared_ptr<const gguf::File> gguf;
  std::string chat_template;  // Jinja text from the checkpoint, if any

  const Tensor& tensor(const std::string& name) const;  // throws naming the checkpoint
  // The same, checked to have `shape`: the error names the checkpoint, the tensor and both shapes.
  const Tensor& tensor(const std::string& name, const Shape& shape) const;
  bool has(const std::string& name) const { return tensors.count(name) != 0; }
};

// Every tensor a model of this config needs, with its shape: embedding, final norm, lm_head
// (unless tied), and per layer the two norms, q/k/v/o, gate/up/down and, with attention_bias,
// the q/k/v biases.
std::vector<std::pair<std::string, Shape>> required_tensor_shapes(const ModelConfig& config);

// Opens `path` (a .gguf file or an HF directory), validates the config and that every tensor
// the architecture needs is present with the right shape. Throws qf::Error naming the file and
// what is wrong.
Checkpoint load_checkpoint(const std::string& path);

}  // namespace qf
