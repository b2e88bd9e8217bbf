// qforge info [MODEL]: what a checkpoint is — architecture, hyper-parameters, parameter
// count, tensor dtypes, memory needed, tokenizer and chat template.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <map>

#include "cli/cmd_common.h"
#include "cli/commands.h"
#include "runtime/cuda_engine.h"
#include "tokenizer/chat_template.h"

namespace qf::cli {
namespace {

std::string rope_scaling_text(const ModelConfig& c) {
  const RopeScaling& s = c.rope_scaling;
  std::string t;
  switch (s.type) {
    case RopeScalingType::None: t = "none"; break;
    case RopeScalingType::Linear: t = str("linear x", s.factor); break;
    case RopeScalingType::Dynamic: t = str("dynamic NTK x", s.factor); break;
    case RopeScalingType::Llama3:
      t = str("llama3 x", s.factor, " (low ", s.low_freq_factor, ", high ", s.high_freq_factor, ", original context ",
              s.original_max_position_embeddings, ")");
      break;
    case RopeScalingType::Yarn:
      t = str("yarn x", s.factor, " (original context ", s.original_max_position_embeddings, ")");
      break;
  }
  if (!c.rope_freq_factors.empty()) t += str(", ", c.rope_freq_factors.size(), " per-frequency factors");
  return t;
}

std::string bytes_text(double b) {
  char buf[32];
  if (b >= 1e9) std::snprintf(buf, sizeof buf, "%.2f GB", b / 1e9);
  else std::snprintf(buf, sizeof buf, "%.1f MB", b / 1e6);
  return buf;
}

std::string count_text(double n) {
  char buf[32];
  if (n >= 1e9) std::snprintf(buf, sizeof buf, "%.2fB", n / 1e9);
  else std::snprintf(buf, sizeof buf, "%.1fM", n / 1e6);
  return buf;
}

void run_info(const std::string& model_arg) {
  const std::string path = resolve_model_path(model_arg);
  const Model m = load_model(path);
  const ModelConfig& c = m.config();
  const Checkpoint& ck = m.checkpoint;

  // "Q4_1 x210, F32 x61, Q8_0 x1": most frequent first.
  std::map<std::string, int> by_type;
  for (const auto& [name, t] : ck.tensors) {
    auto it = ck.source_dtypes.find(name);
    ++by_type[it != ck.source_dtypes.end() ? it->second : std::string(dtype_name(t.dtype()))];
  }
  std::vector<std::pair<std::string, int>> types(by_type.begin(), by_type.end());
  std::stable_sort(types.begin(), types.end(), [](auto& a, auto& b) { return a.second > b.second; });
  std::string types_text;
  for (const auto& [t, n] : types) types_text += str(types_text.empty() ? "" : ", ", t, " x", n);

  const int64_t params = c.parameter_count();
  // KV cache per token: K and V, every layer, every KV head: 2 * layers * kv_heads * head_dim.
  const double kv_per_token = 2.0 * double(c.num_layers * c.num_kv_heads * c.head_dim);
  const ChatTemplate& chat = m.tokenizer.chat_template();

  std::printf("model          %s (%s)\n", path.c_str(),
              ck.format == CheckpointFormat::GGUF ? "GGUF"
              : m.quantization                     ? "qforge quantized checkpoint"
                                                   : "HF directory");
  if (!c.name.empty()) std::printf("name           %s\n", c.name.c_str());
  std::printf("architecture   %s\n", c.architecture.c_str());
  std::printf("layers         %ld, hidden %ld, intermediate (ffn) %ld\n", long(c.num_layers), long(c.hidden_size),
              long(c.intermediate_size));
  std::printf("attention      %ld heads, %ld KV heads (GQA group %ld), head_dim %ld%s%s\n", long(c.num_heads),
              long(c.num_kv_heads), long(c.num_heads / c.num_kv_heads), long(c.head_dim),
              c.attention_bias ? ", q/k/v bias" : "",
              c.sliding_window > 0 ? str(", sliding window ", c.sliding_window).c_str() : "");
  std::printf("context        %ld tokens; RoPE theta %g, scaling %s\n", long(c.max_position_embeddings), c.rope_theta,
              rope_scaling_text(c).c_str());
  std::printf("norm           RMSNorm eps %g\n", c.rms_norm_eps);
  std::printf("vocabulary     %ld tokens, embeddings %s\n", long(c.vocab_size),
              c.tie_word_embeddings ? "tied to the LM head" : "separate from the LM head");
  std::printf("parameters     %s (%ld)\n", count_text(double(params)).c_str(), long(params));
  std::printf("tensors        %zu: %s\n", ck.tensors.size(), types_text.c_str());
  std::printf("weights need   %s in FP32, %s in BF16\n", bytes_text(4.0 * params).c_str(),
              bytes_text(2.0 * params).c_str());
  std::printf("KV cache       %s per 1024 tokens in FP32 (%s in BF16)\n",
              bytes_text(4.0 * kv_per_token * 1024).c_str(), bytes_text(2.0 * kv_per_token * 1024).c_str());
  if (m.quantization) {
    // A qforge quantized checkpoint: the recipe, the formats in use and the size on disk.
    const QuantizationConfig& q = *m.quantization;
    std::map<std::string, int> formats;
    for (const auto& [name, lq] : q.linears)
      ++formats[str(lq.weights.str(), " x ", lq.activations ? lq.activations->str() : std::string("f32"))];
    std::string ftext;
    for (const auto& [f, n] : formats) ftext += str(ftext.empty() ? "" : ", ", f, " (", n, ")");
    int post_rope = 0;
    for (int64_t l = 0; l < m.config().num_layers; ++l) post_rope += m.checkpoint.has(k_post_rope_scale_name(l));
    std::printf("quantized      recipe %s; weights x activations: %s; KV cache %s; queries %s%s\n",
                q.recipe_name.c_str(), ftext.c_str(), q.kv_cache ? q.kv_cache->str().c_str() : "f32",
                q.query ? q.query->str().c_str() : "f32",
                post_rope ? str("; post-RoPE key scales in ", post_rope, " layers").c_str() : "");
    std::printf("on disk        %s\n", bytes_text(double(directory_size_bytes(path))).c_str());
    // Where it runs as stored: the CPU simulates every format exactly; the CUDA engine runs the
    // ones it has kernels for (runtime/cuda_engine.h cuda_linears_for).
    const std::optional<CudaLinearMode> cuda = cuda_linears_for(q);
    const std::optional<CudaAttentionMode> att = cuda_attention_for(q.kv_cache, q.query);
    std::string gpu = "in the FP32 simulation engine (its kernels do not run this activation / KV-cache rounding)";
    if (cuda && att) {
      if (cuda->kind == CudaLinears::w4a8) gpu = "FireQ INT4 x FP8 kernels (w4a8)";
      else if (cuda->kind == CudaLinears::fpx) gpu = cuda_linears_name(*cuda) + " x BF16 kernels (FP6-LLM)";
      else gpu = "as BF16 (weights dequantized)";
      if (*att != CudaAttentionMode{})
        gpu += str("; attention: ", cuda_attention_name(*att),
                   att->kv != cuda::KvElement::bf16 && att->q_fp8 ? " (FP8 prefill attention)" : "");
    }
    std::printf("runs           CPU: simulated exactly (weights dequantized, activations rounded); CUDA: %s; "
                "CUDA --simulate: the same simulation as the CPU's, in FP32 on the GPU\n",
                gpu.c_str());
  }
  std::printf("tokenizer      %s, %ld tokens, BOS %d%s, EOS %d\n", m.tokenizer.kind().c_str(),
              long(m.tokenizer.vocab_size()), m.tokenizer.bos_id(), m.tokenizer.adds_bos() ? " (added)" : " (not added)",
              m.tokenizer.eos_id());
  std::printf("chat template  %s%s\n", chat.name(),
              ck.chat_template.empty() ? " (no template in the checkpoint: default)" : "");
  if (!chat.warning().empty()) std::fprintf(stderr, "qforge: warning: %s\n", chat.warning().c_str());
}

void register_info(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Describe a model: architecture, sizes, tensor types, tokenizer");
  auto model = std::make_shared<std::string>();
  add_model_argument(cmd, *model);
  cmd->footer(
      "Examples:\n"
      "  qforge info                                   # the default model\n"
      "  qforge info models/SmolLM2-135M-Instruct.Q4_1.gguf\n"
      "  qforge info ~/hf/Llama-3.1-8B-Instruct        # a Hugging Face directory");
  cmd->callback([model] { run_info(*model); });
}

QF_REGISTER_COMMAND(register_info);

}  // namespace
}  // namespace qf::cli
