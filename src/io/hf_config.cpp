#include "io/hf_config.h"

#include "core/error.h"
#include "io/json_text.h"

namespace qf {

namespace {

using json_text::find;
using json_text::get_bool;
using json_text::get_float;
using json_text::get_int;
using json_text::get_string;

RopeScaling parse_rope_scaling(const nlohmann::json& rs, int64_t max_position_embeddings, const std::string& source) {
  const std::string where = source + " rope_scaling";
  QF_CHECK(rs.is_object(), where, " must be an object or null");
  RopeScaling out;
  // transformers >= 4.45 writes "rope_type"; older configs "type".
  std::string kind = get_string(rs, "rope_type", "", where);
  if (kind.empty()) kind = get_string(rs, "type", where);
  if (kind == "default") return out;
  if (kind == "linear") {
    out.type = RopeScalingType::Linear;
    out.factor = get_float(rs, "factor", where);
  } else if (kind == "dynamic") {
    out.type = RopeScalingType::Dynamic;
    out.factor = get_float(rs, "factor", where);
    out.original_max_position_embeddings = get_int(rs, "original_max_position_embeddings", max_position_embeddings, where);
  } else if (kind == "llama3") {
    out.type = RopeScalingType::Llama3;
    out.factor = get_float(rs, "factor", where);
    out.low_freq_factor = get_float(rs, "low_freq_factor", where);
    out.high_freq_factor = get_float(rs, "high_freq_factor", where);
    out.original_max_position_embeddings = get_int(rs, "original_max_position_embeddings", where);
    QF_CHECK(out.low_freq_factor > 0 && out.high_freq_factor > out.low_freq_factor, where,
             ": llama3 needs 0 < low_freq_factor < high_freq_factor, got ", out.low_freq_factor, " and ",
             out.high_freq_factor);
    QF_CHECK(out.original_max_position_embeddings > 0, where, ": original_max_position_embeddings must be positive");
  } else if (kind == "yarn") {
    out.type = RopeScalingType::Yarn;
    out.factor = get_float(rs, "factor", where);
    // transformers' _compute_yarn_parameters: these default to 32, 1 and the config's context.
    out.beta_fast = get_float(rs, "beta_fast", 32.0, where);
    out.beta_slow = get_float(rs, "beta_slow", 1.0, where);
    out.attention_factor = get_float(rs, "attention_factor", 0.0, where);
    out.original_max_position_embeddings = get_int(rs, "original_max_position_embeddings", max_position_embeddings, where);
  } else {
    fail(where, ": RoPE scaling type \"", kind, "\" is not supported (supported: linear, dynamic, llama3, yarn)");
  }
  QF_CHECK(out.factor > 0, where, ": factor must be positive, got ", out.factor);
  return out;
}

}  // namespace

ModelConfig parse_hf_config(std::string_view text, const std::string& source) {
  const nlohmann::json j = json_text::parse(text, source);
  QF_CHECK(j.is_object(), source, ": not a JSON object");
  ModelConfig c;
  c.architecture = get_string(j, "model_type", source);
  const bool qwen2 = c.architecture == "qwen2";
  QF_CHECK(c.architecture == "llama" || c.architecture == "mistral" || qwen2, source, ": model_type \"",
           c.architecture, "\" is not supported (supported: llama, mistral, qwen2)");
  c.name = get_string(j, "_name_or_path", "", source);
  if (c.name.empty()) c.name = c.architecture;

  c.hidden_size = get_int(j, "hidden_size", source);
  c.intermediate_size = get_int(j, "intermediate_size", source);
  c.num_layers = get_int(j, "num_hidden_layers", source);
  c.num_heads = get_int(j, "num_attention_heads", source);
  c.vocab_size = get_int(j, "vocab_size", source);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", source);
  c.rms_norm_eps = get_float(j, "rms_norm_eps", source);
  // Optional, with the transformers defaults: KV heads = heads (no GQA), head_dim = hidden /
  // heads, rope_theta 10000, untied embeddings.
  c.num_kv_heads = get_int(j, "num_key_value_heads", c.num_heads, source);
  QF_CHECK(c.num_heads > 0, source, ": num_attention_heads must be positive, got ", c.num_heads);
  c.head_dim = get_int(j, "head_dim", c.hidden_size / c.num_heads, source);
  c.rope_theta = get_float(j, "rope_theta", 10000.0, source);
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", false, source);
  // Qwen2 always biases q/k/v (and nothing else); Llama's attention_bias also biases o_proj,
  // which qforge's layer layout has no place for.
  if (qwen2) {
    c.attention_bias = true;
  } else {
    QF_CHECK(!get_bool(j, "attention_bias", false, source), source,
             ": attention_bias = true (biases on q/k/v/o projections) is not supported for ", c.architecture);
  }
  QF_CHECK(!get_bool(j, "mlp_bias", false, source), source, ": mlp_bias = true is not supported");
  const std::string act = get_string(j, "hidden_act", "silu", source);
  QF_CHECK(act == "silu", source, ": hidden_act \"", act, "\" is not supported (the Llama family uses silu)");
  const double partial_rotary = get_float(j, "partial_rotary_factor", 1.0, source);
  QF_CHECK(partial_rotary == 1.0, source, ": partial_rotary_factor ", partial_rotary, " is not supported");

  // Mistral applies its sliding window whenever it is set; Qwen2 only with use_sliding_window.
  if (c.architecture == "mistral" || (qwen2 && get_bool(j, "use_sliding_window", false, source))) {
    c.sliding_window = get_int(j, "sliding_window", 0, source);
    QF_CHECK(c.sliding_window >= 0, source, ": sliding_window must not be negative");
  }
  if (const nlohmann::json* rs = find(j, "rope_scaling"))
    c.rope_scaling = parse_rope_scaling(*rs, c.max_position_embeddings, source);
  return c;
}

nlohmann::json hf_config_json(const ModelConfig& c) {
  nlohmann::json j;
  // transformers' class names, so other tools recognise the architecture.
  const char* arch_class = c.architecture == "qwen2" ? "Qwen2ForCausalLM"
                           : c.architecture == "mistral" ? "MistralForCausalLM"
                                                         : "LlamaForCausalLM";
  j["architectures"] = {arch_class};
  j["model_type"] = c.architecture;
  j["_name_or_path"] = c.name;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab_size;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["hidden_act"] = "silu";
  // Qwen2 has q/k/v biases by definition and no attention_bias key; Llama's key would also
  // bias o_proj, which qforge never has.
  if (c.architecture != "qwen2") j["attention_bias"] = false;
  j["mlp_bias"] = false;
  if (c.architecture == "mistral") j["sliding_window"] = c.sliding_window > 0 ? nlohmann::json(c.sliding_window) : nlohmann::json(nullptr);
  if (c.architecture == "qwen2") {
    j["use_sliding_window"] = c.sliding_window > 0;
    if (c.sliding_window > 0) j["sliding_window"] = c.sliding_window;
  }
  const RopeScaling& r = c.rope_scaling;
  switch (r.type) {
    case RopeScalingType::None: j["rope_scaling"] = nullptr; break;
    case RopeScalingType::Linear: j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", r.factor}}; break;
    case RopeScalingType::Dynamic:
      j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", r.factor},
                           {"original_max_position_embeddings", r.original_max_position_embeddings}};
      break;
    case RopeScalingType::Llama3:
      j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", r.factor}, {"low_freq_factor", r.low_freq_factor},
                           {"high_freq_factor", r.high_freq_factor},
                           {"original_max_position_embeddings", r.original_max_position_embeddings}};
      break;
    case RopeScalingType::Yarn:
      j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", r.factor}, {"beta_fast", r.beta_fast},
                           {"beta_slow", r.beta_slow}, {"attention_factor", r.attention_factor},
                           {"original_max_position_embeddings", r.original_max_position_embeddings}};
      break;
  }
  return j;
}

std::string parse_hf_chat_template(std::string_view text, const std::string& source) {
  const nlohmann::json j = json_text::parse(text, source);
  QF_CHECK(j.is_object(), source, ": not a JSON object");
  const nlohmann::json* t = find(j, "chat_template");
  if (!t) return "";
  if (t->is_string()) return t->get<std::string>();
  QF_CHECK(t->is_array(), source, ": chat_template must be a string or a list of {name, template}");
  std::string first;
  for (const nlohmann::json& entry : *t) {
    const std::string name = get_string(entry, "name", source + " chat_template entry");
    const std::string body = get_string(entry, "template", source + " chat_template entry");
    if (name == "default") return body;
    if (first.empty()) first = body;
  }
  return first;
}

}  // namespace qf
