#include "runtime/model.h"

#include "io/gguf.h"

namespace qf {

const Tensor& Model::lm_head() const {
  if (config().tie_word_embeddings) return tensor(names::embed());
  return tensor(names::lm_head());
}

Model load_model(const std::string& path) {
  Model m;
  m.checkpoint = load_checkpoint(path);
  if (m.checkpoint.format == CheckpointFormat::GGUF) {
    QF_CHECK(m.checkpoint.gguf != nullptr, path, ": GGUF checkpoint without its file handle");
    m.tokenizer = Tokenizer::from_gguf(m.checkpoint.gguf->metadata(), path);
  } else {
    m.tokenizer = Tokenizer::from_hf_dir(path);
  }
  if (!m.checkpoint.chat_template.empty()) m.tokenizer.set_chat_template(m.checkpoint.chat_template);
  return m;
}

}  // namespace qf
