// A model ready to run: the checkpoint (config, tensors under canonical names, where they came
// from, chat template) and its tokenizer.
#pragma once

#include <string>

#include "io/checkpoint.h"
#include "tokenizer/tokenizer.h"

namespace qf {

struct Model {
  Checkpoint checkpoint;
  Tokenizer tokenizer;

  const ModelConfig& config() const { return checkpoint.config; }
  const Tensor& tensor(const std::string& name) const { return checkpoint.tensor(name); }
  // The LM head's weight: lm_head.weight, or the embedding when the embeddings are tied.
  const Tensor& lm_head() const;
};

// Opens a .gguf file or a Hugging Face directory (io::load_checkpoint) and its tokenizer (from
// the GGUF metadata, or the directory's tokenizer.json); the checkpoint's chat template, if
// any, is handed to the tokenizer. Throws qf::Error naming the file and what is wrong.
Model load_model(const std::string& path);

}  // namespace qf
