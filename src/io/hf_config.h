// Hugging Face config.json -> ModelConfig, for the Llama family (model_type llama, mistral,
// qwen2). Keys that save_pretrained always writes are required; the others take the defaults
// of the transformers config class (noted beside each in hf_config.cpp). Settings qforge
// cannot run (another activation, partial rotary, MLP or o_proj biases, unknown RoPE scaling)
// are rejected by name rather than ignored.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "io/model_config.h"

namespace qf {

// Parses the text of a config.json; `source` names it in errors. Does not call validate().
ModelConfig parse_hf_config(std::string_view json, const std::string& source);

// The inverse of parse_hf_config: a config.json object with every field parse_hf_config reads
// (model_type, sizes, rope_theta, rope_scaling, tie_word_embeddings, ...), so that
// parse_hf_config(hf_config_json(c).dump()) == c for any config qforge can run, except
// rope_freq_factors (GGUF's per-frequency table), which HF config.json cannot express: callers
// that need it store it beside (io/quantized_checkpoint.h stores it as a tensor).
nlohmann::json hf_config_json(const ModelConfig& config);

// The chat template of an HF tokenizer_config.json text ("chat_template": a string, or a list
// of {"name", "template"} where the one named "default" wins, else the first); "" if none.
std::string parse_hf_chat_template(std::string_view json, const std::string& source);

}  // namespace qf
