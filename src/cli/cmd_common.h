// Options and steps the model-running subcommands (info, ppl, generate, ...) share, so each
// cmd_*.cpp states only what is its own.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdio>

#include <string>

#include "core/thread_pool.h"
#include "formats/format.h"
#include "runtime/engine.h"
#include "runtime/model.h"
#include "runtime/paths.h"

namespace qf::cli {

// MODEL: optional positional argument; empty means the default model.
inline void add_model_argument(CLI::App* cmd, std::string& model) {
  cmd->add_option("MODEL", model,
                  "A .gguf file, a Hugging Face directory (config.json + *.safetensors) or a quantized checkpoint "
                  "from qforge quantize. Default: the default model (SmolLM2-135M-Instruct, fetched by "
                  "scripts/setup.sh; $QF_MODEL overrides)");
}

struct EngineFlags {
  std::string device;  // empty: default_device() (cuda when a GPU is present)
  int threads = 0;
  std::string activations;  // EngineOptions::activation_format
  std::string kv_cache;     // EngineOptions::kv_cache_format
  std::string query;        // EngineOptions::query_format
  bool bf16_prefill_attention = false;  // !EngineOptions::fp8_prefill_attention
  bool simulate = false;                 // EngineOptions::simulate
};

inline void add_engine_flags(CLI::App* cmd, EngineFlags& f) {
  cmd->add_option("--device", f.device,
                  "Where to run: cpu (the FP32 reference engine) or cuda (the GPU: its BF16/FP8/INT4 kernels, or the FP32 "
                  "simulation engine for what they do not run, e.g. --activations, or with --simulate). Default: cuda "
                  "when this build has CUDA and a Hopper GPU is present, else cpu")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--threads", f.threads, "CPU threads (default: $QF_THREADS or all cores)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--activations", f.activations,
                  "Simulate quantized activations: quantize every linear layer's input to this format, e.g. "
                  "fp8_e4m3:token, int8:g32:scale=f16 (what llama.cpp's CPU Q4/Q8 dot products use)");
  cmd->add_option("--kv-cache", f.kv_cache,
                  "Simulate a KV cache stored in this format, e.g. f16 (llama.cpp's default), fp8_e4m3:token, "
                  "int4:token:scale=f16 (FireQ's: one F16 scale per token and KV head)");
  cmd->add_option("--query", f.query,
                  "Simulate quantized attention queries: round each (token, head) query vector after RoPE to this "
                  "format, e.g. fp8_e4m3:token (FireQ's FP8 attention)");
  cmd->add_flag("--simulate", f.simulate,
                "CUDA: run the FP32 simulation engine (the CPU engine's numerics on the GPU: weights at their exact "
                "dequantized values, activations, KV cache and queries rounded as the checkpoint says) even where "
                "the fast kernels could run the checkpoint; what a recipe costs in accuracy, at GPU speed");
  cmd->add_flag("--bf16-prefill-attention", f.bf16_prefill_attention,
                "CUDA, FireQ checkpoints (INT4/FP8 KV cache, FP8 queries): run prefill attention in BF16 over a "
                "dequantized copy of the cache instead of on FP8 tensor cores (slower; no FP8 rounding of the "
                "attention probabilities, so it matches the CPU simulation)");
}

// Sets the thread count and checks the device and formats before the (slow) model load.
inline Device apply_engine_flags(const EngineFlags& f) {
  if (!f.activations.empty()) (void)Format::parse(f.activations);
  if (!f.kv_cache.empty()) (void)Format::parse(f.kv_cache);
  if (!f.query.empty()) (void)Format::parse(f.query);
  if (f.threads > 0) set_num_threads(f.threads);
  const Device d = !f.device.empty() ? parse_device(f.device) : default_device();
  QF_CHECK(!f.simulate || d == Device::Cuda, "--simulate runs the FP32 simulation on the GPU (--device cuda); the CPU "
                                             "engine simulates already");
  require_device(d);
  return d;
}

// After loading: says when the GPU runs a quantized checkpoint in the FP32 simulation engine
// (activation, KV-cache or query rounding its kernels do not run; engine.h cuda_runs_natively).
inline Device settle_device(const EngineFlags& f, Device d, const Model& model) {
  if (d == Device::Cuda && !f.simulate && (!cuda_runs_natively(model) || !f.activations.empty()))
    std::fprintf(stderr, "qforge: the GPU kernels do not run this rounding: running the FP32 simulation engine on the "
                         "GPU (the CPU engine's numerics)\n");
  return d;
}

inline void fill_engine_options(const EngineFlags& f, Device device, EngineOptions& o) {
  o.device = device;
  o.activation_format = f.activations;
  o.kv_cache_format = f.kv_cache;
  o.query_format = f.query;
  o.fp8_prefill_attention = !f.bf16_prefill_attention;
  o.simulate = f.simulate;
}

// What the engine rounds linear inputs / the KV cache to, for reports: the flag if given, else
// a quantized checkpoint's own setting ("per checkpoint: ..."), else "f32".
inline std::string activations_text(const EngineFlags& f, const Model& m) {
  if (!f.activations.empty()) return f.activations;
  if (m.quantization) {
    std::string formats;
    for (const auto& [name, q] : m.quantization->linears)
      if (q.activations && formats.find(q.activations->str()) == std::string::npos)
        formats += (formats.empty() ? "" : ", ") + q.activations->str();
    if (!formats.empty()) return "checkpoint's: " + formats;
  }
  return "f32";
}
inline std::string query_text(const EngineFlags& f, const Model& m) {
  if (!f.query.empty()) return f.query;
  if (m.quantization && m.quantization->query) return "checkpoint's: " + m.quantization->query->str();
  return "f32";
}

inline std::string kv_cache_text(const EngineFlags& f, const Model& m) {
  if (!f.kv_cache.empty()) return f.kv_cache;
  if (m.quantization && m.quantization->kv_cache) return "checkpoint's: " + m.quantization->kv_cache->str();
  return "f32";
}

// The model path the user gave, or the default one (default_model_path() says how to get it).
inline std::string resolve_model_path(const std::string& given) {
  return given.empty() ? default_model_path() : given;
}

}  // namespace qf::cli
