// Hugging Face config.json -> ModelConfig, for the Llama family (model_type llama, mistral,
// qwen2). Keys that save_pretrained always writes are required; the others take the defaults
// of the transformers config class (noted beside each in hf_config.cpp). Settings qforge
// cannot run (another activation, partial rotary, MLP or o_proj biases, unknown RoPE scaling)
// are rejected by name rather than ignored.
#pragma once

#include <string>
#include <string_view>

#include "io/model_config.h"

namespace qf {

// Parses the text of a config.json; `source` names it in errors. Does not call validate().
ModelConfig parse_hf_config(std::string_view json, const std::string& source);

// The chat template of an HF tokenizer_config.json text ("chat_template": a string, or a list
// of {"name", "template"} where the one named "default" wins, else the first); "" if none.
std::string parse_hf_chat_template(std::string_view json, const std::string& source);

}  // namespace qf
