#include "runtime/model.h"

#include <filesystem>

#include "io/gguf.h"

namespace qf {

const Tensor& Model::lm_head() const {
  if (config().tie_word_embeddings) return tensor(names::embed());
  return tensor(names::lm_head());
}

Model load_model(const std::string& path) {
  Model m;
  if (is_quantized_checkpoint(path)) {
    QuantizedModel q = read_quantized_checkpoint(path);
    m.checkpoint = dequantized_checkpoint(q, path);
    m.quantization = std::move(q.quantization);
    m.quantized_weights = std::move(q.weights);
  } else {
    m.checkpoint = load_checkpoint(path);
  }
  const std::filesystem::path tokenizer_gguf = std::filesystem::path(path) / kTokenizerGgufFile;
  if (m.quantization && std::filesystem::exists(tokenizer_gguf)) {
    // Quantized from a GGUF file: the checkpoint carries that file's tokenizer metadata.
    m.tokenizer = Tokenizer::from_gguf(gguf::File::open(tokenizer_gguf.string())->metadata(), tokenizer_gguf.string());
  } else if (m.checkpoint.format == CheckpointFormat::GGUF) {
    QF_CHECK(m.checkpoint.gguf != nullptr, path, ": GGUF checkpoint without its file handle");
    m.tokenizer = Tokenizer::from_gguf(m.checkpoint.gguf->metadata(), path);
  } else {
    m.tokenizer = Tokenizer::from_hf_dir(path);
  }
  if (!m.checkpoint.chat_template.empty()) m.tokenizer.set_chat_template(m.checkpoint.chat_template);
  return m;
}

}  // namespace qf
