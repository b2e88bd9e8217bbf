// qforge's quantized checkpoint: a directory in Hugging Face form (config.json, safetensors,
// tokenizer files) whose config.json carries a "quantization_config" and whose quantized
// linear layers are stored as packed codes, scales and zero points. docs/checkpoint.md is the
// full specification; in short, for a quantized weight named P.weight:
//
//   P.weight          8-bit elements, unpacked: I8 (symmetric int8), U8 (asymmetric int8),
//                     F8_E4M3 / F8_E5M2 (FP8) or U8 (FPx codes of 8 bits)   [rows, cols]
//   P.weight_packed   narrower elements: U8 [rows, packed_bytes(cols, B)], each row its own
//                     canonical bit stream (formats/packing.h), so rows start on byte boundaries
//   P.weight_scale    [scale_rows, scale_cols] in the scale type (F32, BF16, F16, F8_E4M3,
//                     F8_E5M2); per channel [rows, 1], per group [rows, ceil(cols / G)], per
//                     tensor [1, 1]
//   P.weight_zero_point  asymmetric only: U8 [scale_rows, scale_cols], one zero point per scale
//   P.weight_tensor_scale  tensor_scale only: F32 [1]
//
// Everything else (norms, the kept embedding / LM head) is stored as an ordinary tensor under its
// canonical name. Optional per layer: model.layers.{i}.self_attn.k_post_rope_scale, F32
// [num_kv_heads * head_dim], FireQ's post-RoPE key scale (k_post_rope_scale_name below). The config's "quantization_config" names the recipe, its settings, the
// calibration and, per quantized layer, the weight and activation formats; loading checks every
// tensor against it (dtype, shape, packed size, scale count, zero-point range, finiteness) and
// fails with a message naming the tensor.
//
// Writing is atomic: everything goes into a fresh temporary directory beside the target, each
// file written and fsync'ed, the directory fsync'ed, then renamed into place (and the parent
// fsync'ed). A crash, an exception or Ctrl-C at any point leaves either no checkpoint at the
// path or the previous one, never a partial one (a stale ".tmp-" directory may remain after a
// kill; it is not at the path and does not load as the checkpoint).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "formats/quantize.h"
#include "io/checkpoint.h"
#include "io/gguf.h"
#include "io/model_config.h"

namespace qf {

// The value of config.json's quantization_config["quant_method"].
inline constexpr const char* kQuantMethod = "qforge";
inline constexpr int kQuantizedCheckpointVersion = 1;

// How one linear layer was quantized, as quantization_config records it.
struct LinearQuantization {
  Format weights;
  std::optional<Format> activations;  // the layer's input is rounded to this at run time
  std::string algorithm;              // "rtn", "gptq", ... (informational)
  // tr(E H E^T) / tr(W H W^T) on the calibration inputs (E = W - Q), or the relative squared
  // Frobenius error ||E||^2 / ||W||^2 without calibration; NaN when unknown.
  double relative_error = std::numeric_limits<double>::quiet_NaN();
  bool error_from_hessian = false;
};

// FireQ's post-RoPE key scale of layer `layer` (recipe transform "rope_scale", quant/rope_scale.h):
// "model.layers.{layer}.self_attn.k_post_rope_scale", a dense F32 tensor [num_kv_heads * head_dim]
// of finite values > 0, present only when the transform ran. After RoPE, key channel (h, d) is
// multiplied by scale[h * head_dim + d] and query channel (qh, d) divided by
// scale[(qh / (num_heads / num_kv_heads)) * head_dim + d]; then the query is rounded to
// QuantizationConfig::query and the keys and values are written to the cache in kv_cache. Every
// engine applies it when the tensor exists (the function is then unchanged up to rounding).
std::string k_post_rope_scale_name(int64_t layer);
// That tensor of `layer` in F32 (empty when the checkpoint has none), checked: num_kv_heads *
// head_dim values, each finite and > 0; a qf::Error names the tensor otherwise.
std::vector<float> read_k_post_rope_scale(const Checkpoint& checkpoint, int64_t layer);

struct QuantizationConfig {
  std::string recipe_name;
  nlohmann::json recipe;       // the recipe as applied (quant/recipe.h to_json), for reproduction
  nlohmann::json calibration;  // {"text", "samples", "seqlen", "seed", "tokens"} or null
  std::optional<Format> kv_cache;
  // Each (token, query head) row of head_dim values is rounded to this after RoPE and the
  // post-RoPE scale (FireQ: "fp8_e4m3:token"); none: unrounded.
  std::optional<Format> query;
  std::map<std::string, LinearQuantization> linears;  // by canonical weight name

  nlohmann::json to_json() const;
  // Throws qf::Error naming `source` and the field on a malformed object.
  static QuantizationConfig from_json(const nlohmann::json& j, const std::string& source);
};

struct QuantizedModel {
  ModelConfig config;
  QuantizationConfig quantization;
  // The quantized weights, one per quantization.linears entry (same names).
  std::map<std::string, QuantizedMatrix> weights;
  // Every other tensor the model needs, as stored (F32, BF16 or F16), and the optional
  // k_post_rope_scale tensors (F32).
  std::map<std::string, Tensor> dense;
};

// A file the checkpoint carries besides config.json and the tensors (tokenizer.json,
// tokenizer_config.json, tokenizer.gguf, ...): a plain name and its bytes (text or binary).
struct CheckpointFile {
  std::string name;
  std::string content;
};

// A model quantized from a GGUF file has no tokenizer.json to copy: its tokenizer and chat
// template live in the GGUF's metadata. The checkpoint carries them in this file, a GGUF v3
// file with no tensors (gguf::serialize_metadata), so it does not depend on the source file.
inline constexpr const char* kTokenizerGgufFile = "tokenizer.gguf";

// tokenizer.gguf for a model read from a GGUF file whose metadata is `source`: every
// tokenizer.* key (vocabulary, merges or scores, token types, special ids, flags, pre-tokenizer,
// chat template) and the general.* keys the tokenizer and the model family are read by
// (general.architecture, general.name: Tokenizer::from_gguf applies Phi-3's rules by name).
// Throws qf::Error when `source` has no tokenizer.ggml.model.
CheckpointFile tokenizer_gguf_file(const gguf::Metadata& source);

struct QuantizedWriteOptions {
  bool overwrite = false;  // replace an existing checkpoint at the path (else an error)
  // Called after each file is complete in the temporary directory (name); throwing from it
  // aborts the write like an I/O error does. For tests of the atomic write.
  std::function<void(const std::string& file)> on_file_written;
};

// Writes `model` (checked first: every linear of the config quantized or dense, shapes right)
// and `files` to the directory `dir`, atomically (see above).
void write_quantized_checkpoint(const std::string& dir, const QuantizedModel& model,
                                const std::vector<CheckpointFile>& files, const QuantizedWriteOptions& options = {});

// Whether `path` is a directory whose config.json has a quantization_config (it is not
// otherwise validated here).
bool is_quantized_checkpoint(const std::string& path);

// Reads and validates a quantized checkpoint. Throws qf::Error naming the file, the tensor and
// what is wrong.
QuantizedModel read_quantized_checkpoint(const std::string& dir);

// The model as the simulated runtime runs it: every quantized weight dequantized to F32
// (exactly code value x scale, formats/quantize.h), the dense tensors as stored. source_dtypes
// name each quantized weight's format. The chat template comes from tokenizer_config.json or
// tokenizer.gguf, whichever the folder has.
Checkpoint dequantized_checkpoint(const QuantizedModel& model, const std::string& path);

// Bytes of the regular files in a directory (not recursive): a checkpoint's size on disk.
uint64_t directory_size_bytes(const std::string& dir);

}  // namespace qf
