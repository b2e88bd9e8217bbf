// A model ready to run: the checkpoint (config, tensors under canonical names, where they came
// from, chat template) and its tokenizer.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "io/checkpoint.h"
#include "io/quantized_checkpoint.h"
#include "tokenizer/tokenizer.h"

namespace qf {

struct Model {
  Checkpoint checkpoint;
  Tokenizer tokenizer;
  // Set for a qforge quantized checkpoint (io/quantized_checkpoint.h): how each linear layer
  // was quantized. `checkpoint` then holds the weights dequantized exactly (the simulated
  // model), and create_engine rounds each layer's input to its recorded activation format and
  // the KV cache to the recorded kv_cache format.
  std::optional<QuantizationConfig> quantization;
  // The quantized matrices as stored (codes and scales), by canonical weight name, for engines
  // that run them as they are (the CUDA engine's w4a8 linears); empty for other models.
  std::map<std::string, QuantizedMatrix> quantized_weights;

  const ModelConfig& config() const { return checkpoint.config; }
  const Tensor& tensor(const std::string& name) const { return checkpoint.tensor(name); }
  // The LM head's weight: lm_head.weight, or the embedding when the embeddings are tied.
  const Tensor& lm_head() const;
};

// Opens a .gguf file, a Hugging Face directory (io::load_checkpoint) or a qforge quantized
// checkpoint directory (read, validated and dequantized), and its tokenizer (from the GGUF
// metadata, or the directory's tokenizer.json); the checkpoint's chat template, if
// any, is handed to the tokenizer. Throws qf::Error naming the file and what is wrong.
Model load_model(const std::string& path);

}  // namespace qf
