#include "io/checkpoint.h"

#include <filesystem>
#include <fstream>
#include <set>

#include "core/error.h"
#include "io/gguf.h"
#include "io/gguf_llama.h"
#include "io/hf_config.h"
#include "io/json_text.h"
#include "io/safetensors.h"

namespace qf {

namespace fs = std::filesystem;

const Tensor& Checkpoint::tensor(const std::string& name) const {
  auto it = tensors.find(name);
  QF_CHECK(it != tensors.end(), path, ": the checkpoint has no tensor '", name, "'");
  return it->second;
}

const Tensor& Checkpoint::tensor(const std::string& name, const Shape& shape) const {
  const Tensor& t = tensor(name);
  QF_CHECK(t.shape() == shape, path, ": ", name, " has shape ", shape_str(t.shape()), ", expected ", shape_str(shape));
  return t;
}

std::vector<std::pair<std::string, Shape>> required_tensor_shapes(const ModelConfig& c) {
  const int64_t h = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  std::vector<std::pair<std::string, Shape>> out = {{names::embed(), {c.vocab_size, h}}, {names::final_norm(), {h}}};
  if (!c.tie_word_embeddings) out.push_back({names::lm_head(), {c.vocab_size, h}});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    auto add = [&](const char* leaf, Shape s) { out.push_back({names::layer(i, leaf), std::move(s)}); };
    add("input_layernorm.weight", {h});
    add("post_attention_layernorm.weight", {h});
    add("self_attn.q_proj.weight", {q, h});
    add("self_attn.k_proj.weight", {kv, h});
    add("self_attn.v_proj.weight", {kv, h});
    add("self_attn.o_proj.weight", {h, q});
    add("mlp.gate_proj.weight", {c.intermediate_size, h});
    add("mlp.up_proj.weight", {c.intermediate_size, h});
    add("mlp.down_proj.weight", {h, c.intermediate_size});
    if (c.attention_bias) {
      add("self_attn.q_proj.bias", {q});
      add("self_attn.k_proj.bias", {kv});
      add("self_attn.v_proj.bias", {kv});
    }
  }
  return out;
}

namespace {

// Config files are a few KB; anything near this is not one.
constexpr size_t kMaxConfigBytes = 16u << 20;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// What a source tensor must look like: its canonical name's required shape. Throws for a name
// the architecture does not have, or a wrong shape.
class ShapeCheck {
 public:
  explicit ShapeCheck(const ModelConfig& c, std::string source) : source_(std::move(source)) {
    for (auto& [name, shape] : required_tensor_shapes(c)) required_[name] = shape;
  }
  void check(const std::string& canonical, const std::string& source_name, const Shape& actual) const {
    auto it = required_.find(canonical);
    QF_CHECK(it != required_.end(), source_, ": tensor '", source_name, "' is not part of a ", arch_hint(),
             " model with these hyper-parameters");
    QF_CHECK(it->second == actual, source_, ": tensor '", source_name, "' has shape ", shape_str(actual),
             ", expected ", shape_str(it->second));
  }
  // Every required tensor was found.
  void check_complete(const std::map<std::string, Tensor>& tensors, const std::string& source_naming) const {
    for (const auto& [name, shape] : required_)
      QF_CHECK(tensors.count(name), source_, ": missing tensor '", name, "' ", source_naming, "(expected shape ",
               shape_str(shape), ")");
  }

 private:
  static const char* arch_hint() { return "Llama-family"; }
  std::string source_;
  std::map<std::string, Shape> required_;
};

// ---- GGUF ------------------------------------------------------------------------------------

Checkpoint load_gguf(const std::string& path) {
  Checkpoint ck;
  ck.format = CheckpointFormat::GGUF;
  ck.path = path;
  std::shared_ptr<const gguf::File> file = gguf::File::open(path);
  ck.gguf = file;
  ck.config = gguf_llama::config_from_gguf(*file);
  ck.config.validate(path);
  ck.chat_template = file->metadata().get_string("tokenizer.chat_template", "");

  const ShapeCheck shapes(ck.config, path);
  const bool interleaved = gguf_llama::has_interleaved_qk(ck.config.architecture);
  for (const gguf::TensorInfo& info : file->tensors()) {
    if (info.name == "rope_freqs.weight") continue;  // in config.rope_freq_factors
    const std::optional<std::string> canonical = gguf_llama::canonical_name(info.name);
    QF_CHECK(canonical, path, ": tensor '", info.name, "' is not one of a ", ck.config.architecture, " model's");
    shapes.check(*canonical, info.name, info.shape());
    Tensor t = file->to_f32(info);
    if (interleaved) {
      const bool is_q = canonical->find("self_attn.q_proj.") != std::string::npos;
      const bool is_k = canonical->find("self_attn.k_proj.") != std::string::npos;
      if (is_q) t = gguf_llama::unpermute_qk_rows(t, ck.config.num_heads);
      if (is_k) t = gguf_llama::unpermute_qk_rows(t, ck.config.num_kv_heads);
    }
    ck.tensors[*canonical] = std::move(t);
    ck.source_dtypes[*canonical] = gguf::ggml_type_name(info.type);
  }
  shapes.check_complete(ck.tensors, "(GGUF names: token_embd, output_norm, output, blk.N.*) ");
  return ck;
}

// ---- Hugging Face directory --------------------------------------------------------------------

// Tensors in HF checkpoints that carry nothing the model needs: old Llama checkpoints saved
// RoPE's inverse frequencies, which qforge derives from the config.
bool is_ignorable_hf_tensor(const std::string& name) { return ends_with(name, ".rotary_emb.inv_freq"); }

// Where each tensor lives: one file, or the shards an index maps names to.
struct TensorSource {
  std::shared_ptr<const safetensors::File> file;
  const safetensors::TensorEntry* entry;
};

std::map<std::string, TensorSource> open_safetensors(const fs::path& dir) {
  std::map<std::string, TensorSource> out;
  const fs::path single = dir / "model.safetensors";
  const fs::path index_path = dir / "model.safetensors.index.json";
  if (fs::exists(index_path)) {
    const std::string source = index_path.string();
    const nlohmann::json index = json_text::parse(json_text::read_file(source, kMaxConfigBytes), source);
    const nlohmann::json* map = json_text::find(index, "weight_map");
    QF_CHECK(map && map->is_object(), source, ": no \"weight_map\" object");
    std::map<std::string, std::shared_ptr<const safetensors::File>> shards;
    for (const auto& [name, shard_json] : map->items()) {
      QF_CHECK(shard_json.is_string(), source, ": weight_map[\"", name, "\"] is not a file name");
      const std::string shard = shard_json.get<std::string>();
      // A shard is a file beside the index, never a path elsewhere.
      QF_CHECK(!shard.empty() && shard.find('/') == std::string::npos && shard != "." && shard != "..", source,
               ": weight_map[\"", name, "\"] = \"", shard, "\" is not a plain file name");
      auto it = shards.find(shard);
      if (it == shards.end()) {
        const fs::path shard_path = dir / shard;
        QF_CHECK(fs::exists(shard_path), source, ": shard \"", shard, "\" (holding '", name, "') is missing from ",
                 dir.string());
        it = shards.emplace(shard, safetensors::File::open(shard_path.string())).first;
      }
      const safetensors::TensorEntry* e = it->second->find(name);
      QF_CHECK(e, source, ": weight_map puts '", name, "' in ", shard, ", which has no such tensor");
      out[name] = {it->second, e};
    }
    QF_CHECK(!out.empty(), source, ": weight_map is empty");
  } else if (fs::exists(single)) {
    auto file = safetensors::File::open(single.string());
    for (const safetensors::TensorEntry& e : file->tensors()) out[e.name] = {file, &e};
  } else {
    const bool has_bin = fs::exists(dir / "pytorch_model.bin") || fs::exists(dir / "pytorch_model.bin.index.json");
    fail(dir.string(), ": no model.safetensors or model.safetensors.index.json",
         has_bin ? " (PyTorch .bin checkpoints are not supported; convert them to safetensors)" : "");
  }
  return out;
}

Checkpoint load_hf_directory(const std::string& path) {
  Checkpoint ck;
  ck.format = CheckpointFormat::HFDirectory;
  ck.path = path;
  const fs::path dir(path);
  const fs::path config_path = dir / "config.json";
  QF_CHECK(fs::exists(config_path), path, ": a Hugging Face checkpoint folder needs config.json, which is missing");
  ck.config = parse_hf_config(json_text::read_file(config_path.string(), kMaxConfigBytes), config_path.string());
  ck.config.validate(config_path.string());
  const fs::path tokenizer_config = dir / "tokenizer_config.json";
  if (fs::exists(tokenizer_config))
    ck.chat_template = parse_hf_chat_template(json_text::read_file(tokenizer_config.string(), kMaxConfigBytes),
                                              tokenizer_config.string());

  const ShapeCheck shapes(ck.config, path);
  for (const auto& [name, src] : open_safetensors(dir)) {
    if (is_ignorable_hf_tensor(name)) continue;
    // With tied embeddings transformers ignores a stored lm_head (it is the embedding).
    if (name == names::lm_head() && ck.config.tie_word_embeddings) continue;
    const safetensors::TensorEntry& e = *src.entry;
    shapes.check(name, name, e.shape);
    QF_CHECK(e.dtype == safetensors::Dtype::F32 || e.dtype == safetensors::Dtype::F16 ||
                 e.dtype == safetensors::Dtype::BF16,
             src.file->path(), ": tensor '", name, "' has dtype ", safetensors::dtype_name(e.dtype),
             "; weights must be F32, F16 or BF16");
    ck.tensors[name] = src.file->tensor(e);
    ck.source_dtypes[name] = safetensors::dtype_name(e.dtype);
  }
  shapes.check_complete(ck.tensors, "");
  return ck;
}

}  // namespace

Checkpoint load_checkpoint(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  QF_CHECK(!ec && fs::exists(st), path, ": no such file or folder");
  if (fs::is_directory(st)) return load_hf_directory(path);
  QF_CHECK(fs::is_regular_file(st), path, ": not a file or folder");
  // Decide by content, not by name: the first four bytes of a GGUF file are "GGUF".
  char magic[4] = {};
  {
    std::ifstream in(path, std::ios::binary);
    in.read(magic, 4);
  }
  if (std::string_view(magic, 4) == "GGUF") return load_gguf(path);
  fail(path, ": not a GGUF file (no 'GGUF' magic) nor a Hugging Face checkpoint folder",
       ends_with(path, ".safetensors") ? "; pass the folder holding config.json, not the .safetensors file" : "");
}

}  // namespace qf
