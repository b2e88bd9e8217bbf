// qforge quantize MODEL --recipe NAME -o OUT: post-training quantization of a model by a recipe
// (quant/recipe.h), written as a quantized checkpoint (io/quantized_checkpoint.h).
#include <CLI/CLI.hpp>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "cli/cmd_common.h"
#include "cli/commands.h"
#include "core/progress.h"
#include "io/quantized_checkpoint.h"
#include "quant/calibration.h"
#include "quant/quantize_model.h"
#include "quant/recipe.h"
#include "runtime/rope_frequencies.h"

namespace qf::cli {
namespace {

struct QuantizeArgs {
  std::string model, recipe, out, calib, device;
  int64_t samples = 128, seqlen = 2048;
  uint64_t seed = 0;
  int threads = 0;
  bool force = false, list = false, quiet = false;
};

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  QF_CHECK(f, "cannot open the calibration text ", path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;  // Linux: kilobytes
}

void list_recipes() {
  std::printf("Built-in recipes (recipes/*.json; --recipe FILE.json takes your own):\n");
  for (const std::string& n : builtin_recipe_names()) {
    const Recipe r = load_recipe(n);
    std::printf("  %-14s %s\n", n.c_str(), r.description.c_str());
  }
}

// The "smooth" transform's choices (quantization_config.calibration.smoothing), per input kind:
// how many blocks were smoothed, the alphas chosen, and the loss left relative to no smoothing.
void print_smoothing_summary(const QuantizedModel& q) {
  const nlohmann::json& cal = q.quantization.calibration;
  if (!cal.is_object() || !cal.contains("smoothing")) return;
  for (const char* input : {"attention_in", "mlp_in"}) {
    std::string alphas;
    int64_t stages = 0, smoothed = 0;
    double loss = 0, unsmoothed = 0;
    for (const auto& e : cal["smoothing"]) {
      if (e.at("input") != input) continue;
      ++stages;
      loss += e.at("loss").get<double>();
      unsmoothed += e.at("loss_unsmoothed").get<double>();
      if (e.at("alpha").is_null()) {
        alphas += " -";
      } else {
        ++smoothed;
        char a[16];
        std::snprintf(a, sizeof a, " %.2f", e.at("alpha").get<double>());
        alphas += a;
      }
    }
    std::printf("smoothing %-12s %ld of %ld blocks smoothed, calibration loss %.3f x unsmoothed; alpha per block "
                "(- = none):%s\n",
                input, long(smoothed), long(stages), unsmoothed > 0 ? loss / unsmoothed : 1.0, alphas.c_str());
  }
}

// The end-of-run table: per layer kind, the mean and worst relative error over the blocks,
// and the worst layers overall.
void print_error_summary(const QuantizedModel& m) {
  struct Acc {
    double sum = 0, worst = 0;
    int64_t n = 0, worst_layer = -1;
  };
  std::map<int, Acc> by_kind;
  std::vector<std::pair<double, std::string>> all;
  bool hessian = false;
  for (int64_t l = 0; l < m.config.num_layers; ++l)
    for (LinearKind k : kAllLinearKinds) {
      const std::string name = names::layer(l, linear_kind_leaf(k));
      auto it = m.quantization.linears.find(name);
      if (it == m.quantization.linears.end()) continue;
      const double e = it->second.relative_error;
      hessian = it->second.error_from_hessian;
      Acc& a = by_kind[int(k)];
      a.sum += e;
      ++a.n;
      if (e > a.worst) a.worst = e, a.worst_layer = l;
      all.emplace_back(e, name);
    }
  std::printf("\nreconstruction error per layer kind (%s):\n",
              hessian ? "relative output error tr(E H E^T) / tr(W H W^T) on the calibration inputs"
                      : "relative weight error ||W - Q||^2 / ||W||^2");
  std::printf("  %-10s %6s %12s %12s %8s\n", "kind", "layers", "mean", "worst", "in layer");
  for (const auto& [k, a] : by_kind)
    std::printf("  %-10s %6ld %12.3e %12.3e %8ld\n", linear_kind_name(LinearKind(k)), long(a.n), a.sum / double(a.n),
                a.worst, long(a.worst_layer));
  std::sort(all.begin(), all.end(), std::greater<>());
  std::printf("worst layers:");
  for (size_t i = 0; i < std::min<size_t>(3, all.size()); ++i)
    std::printf(" %s %.3e;", all[i].second.c_str(), all[i].first);
  std::printf("\n");
}

void run_quantize(const QuantizeArgs& a) {
  if (a.list) {
    list_recipes();
    return;
  }
  QF_CHECK(!a.recipe.empty(), "--recipe is required (qforge quantize --list-recipes lists the built-in ones)");
  QF_CHECK(!a.out.empty(), "-o/--output is required: the folder to write the quantized checkpoint to");
  QF_CHECK(a.samples >= 1 && a.seqlen >= 2, "--samples must be >= 1 and --seqlen >= 2");
  if (a.threads > 0) set_num_threads(a.threads);
  if (a.quiet) Progress::set_quiet(true);
  const auto t0 = std::chrono::steady_clock::now();
  const Recipe recipe = load_recipe(a.recipe);  // before the slow load: a bad recipe fails at once
  QF_CHECK(!std::filesystem::exists(a.out) || a.force, a.out, " already exists (pass --force to replace it)");
  const std::string path = resolve_model_path(a.model);
  QF_CHECK(!is_quantized_checkpoint(path), path, " is already quantized; quantize the original model");
  const Model model = load_model(path);
  const ModelConfig& c = model.config();
  std::fprintf(stderr, "qforge: quantizing %s by recipe %s: %s\n", path.c_str(), recipe.name.c_str(),
               recipe.description.c_str());

  QuantizeModelOptions o;
  std::unique_ptr<Fp32Device> device;
  if (recipe.needs_calibration()) {
    // The calibration pass on the GPU when one is present (or asked for), else on the CPU.
    const Device d = a.device.empty() ? default_device() : parse_device(a.device);
    require_device(d);
    device = d == Device::Cuda ? make_cuda_fp32_device() : make_cpu_fp32_device();
    o.device = device.get();
    const std::string calib = a.calib.empty() ? shared_data_file("wikitext-2-valid-tokens.txt") : a.calib;
    QF_CHECK(a.seqlen <= c.max_position_embeddings, "--seqlen ", a.seqlen, " exceeds the model's context of ",
             c.max_position_embeddings);
    const std::vector<int32_t> tokens = model.tokenizer.encode(read_text(calib), false, false);
    o.windows = draw_calibration_windows(tokens, a.samples, a.seqlen, a.seed);
    const RopeFrequencies rope = rope_frequencies(c, a.seqlen);
    o.rope_inv_freq = rope.inv_freq;
    o.rope_attention_factor = rope.attention_factor;
    o.calibration_info = {{"text", std::filesystem::path(calib).filename().string()},
                          {"text_tokens", tokens.size()},
                          {"samples", a.samples},
                          {"seqlen", a.seqlen},
                          {"seed", a.seed}};
    std::fprintf(stderr, "qforge: calibration: %ld windows of %ld tokens from %s (%zu tokens), seed %llu, on %s\n",
                 long(a.samples), long(a.seqlen), calib.c_str(), tokens.size(), (unsigned long long)a.seed,
                 device->name().c_str());
  }
  Progress bar("quantize", c.num_layers, "blocks");
  int64_t reported = 0;
  o.on_block_done = [&](int64_t done, int64_t) {
    char note[64];
    std::snprintf(note, sizeof note, "peak %.0f MB", peak_rss_mb());
    bar.set_note(note);
    bar.advance(done - reported);
    reported = done;
  };
  double algorithm_seconds = 0;
  o.algorithm_seconds = &algorithm_seconds;
  QuantizedModel q = quantize_model(model.checkpoint, recipe, o);
  bar.finish();
  const double quantize_seconds = bar.elapsed_seconds();

  // The tokenizer travels with the checkpoint, which must not depend on the source staying
  // where it is: the tokenizer files copied from an HF folder, the GGUF's tokenizer metadata
  // written as tokenizer.gguf.
  std::vector<CheckpointFile> files;
  if (model.checkpoint.format == CheckpointFormat::GGUF) {
    QF_CHECK(model.checkpoint.gguf != nullptr, path, ": GGUF checkpoint without its file handle");
    files.push_back(tokenizer_gguf_file(model.checkpoint.gguf->metadata()));
  } else {
    for (const char* f :
         {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"}) {
      const std::filesystem::path p = std::filesystem::path(path) / f;
      if (std::filesystem::exists(p)) files.push_back({f, read_text(p.string())});
    }
  }
  QuantizedWriteOptions wo;
  wo.overwrite = a.force;
  write_quantized_checkpoint(a.out, q, files, wo);
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  print_error_summary(q);
  print_smoothing_summary(q);
  std::printf("\nwrote %s (%.1f MB) in %s: quantization %s (weight algorithms %s, %s), peak memory %.0f MB "
              "(getrusage maxrss), %d threads\n",
              a.out.c_str(), double(directory_size_bytes(a.out)) / 1e6, format_duration(total).c_str(),
              format_duration(quantize_seconds).c_str(), format_duration(algorithm_seconds).c_str(),
              recipe.needs_calibration()
                  ? str("calibration forward and statistics ", format_duration(quantize_seconds - algorithm_seconds))
                        .c_str()
                  : "no calibration",
              peak_rss_mb(), num_threads());
  std::printf("evaluate it:  qforge ppl %s --ctx 512 --chunks 16\n", a.out.c_str());
}

void register_quantize(CLI::App& app) {
  auto* cmd = app.add_subcommand("quantize", "Quantize a model by a recipe and write a quantized checkpoint");
  auto a = std::make_shared<QuantizeArgs>();
  add_model_argument(cmd, a->model);
  std::string names;
  for (const std::string& n : builtin_recipe_names()) names += (names.empty() ? "" : ", ") + n;
  cmd->add_option("--recipe", a->recipe, "A built-in recipe (" + names + ") or a recipe file NAME.json");
  cmd->add_option("-o,--output", a->out, "The folder to write the quantized checkpoint to");
  cmd->add_option("--calib", a->calib,
                  "Calibration text for recipes that calibrate (GPTQ) (default: WikiText-2 validation, "
                  "shared/data/wikitext-2-valid-tokens.txt; never the test text you evaluate on)");
  cmd->add_option("--samples", a->samples, "Calibration windows (default 128, as in the GPTQ paper)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--seqlen", a->seqlen, "Tokens per calibration window (default 2048)")->check(CLI::PositiveNumber);
  cmd->add_option("--seed", a->seed, "Seed of the window sampling (default 0): same seed, same windows");
  cmd->add_option("--device", a->device,
                  "Where the calibration forward pass and its statistics run: cuda (the default when a Hopper GPU "
                  "is present: FP32 kernels and cuBLAS, seconds for a small model) or cpu (the CPU engine's kernels: "
                  "activations bit-identical to `qforge ppl --device cpu`'s). GPTQ's batch updates run there too; "
                  "its rounding onto the grid and RTN stay on the CPU")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--threads", a->threads, "CPU threads (default: $QF_THREADS or all cores)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--force", a->force, "Replace an existing quantized checkpoint at the output path");
  cmd->add_flag("--list-recipes", a->list, "List the built-in recipes and exit");
  cmd->add_flag("--quiet", a->quiet, "No progress bar");
  cmd->footer(
      "GPTQ recipes run the calibration text through the model block by block (each block sees the outputs of "
      "the blocks already quantized) and quantize each linear from its inputs' Hessian X^T X; RTN recipes need "
      "no calibration. The result is a self-contained folder (config.json with quantization_config, "
      "model.safetensors with packed weights, the tokenizer; docs/checkpoint.md) that ppl, generate, info and "
      "bench run: on the CPU in simulation (weights dequantized exactly, activations and KV cache rounded as the "
      "recipe says), on the GPU through the kernels made for it (fireq-w4a8: INT4 x FP8; fp6, fp6-e2m3, fp5: FPx x "
      "BF16; weight-only recipes as BF16; `qforge info` says which). Recipes with the \"smooth\" "
      "transform (fireq-w4a8) calibrate too, even with RTN: FireQ's channel-wise smoothing chooses its scales "
      "per block from the activations (docs/checkpoint.md). The \"rope_scale\" transform (fireq-w4a8; "
      "\"rope_scale:pre\" / \"rope_scale:post\" for one half) is FireQ's RoPE-aware scaling of queries and keys: "
      "a per-pair pre-RoPE scale merged into q_proj/k_proj, and a post-RoPE scale of the top key channels that "
      "the checkpoint stores per layer as model.layers.N.self_attn.k_post_rope_scale (F32 [kv_heads x head_dim]; "
      "keys *= it, queries /= it after RoPE). A recipe's \"kv_cache\" and \"query\" formats (fireq-w4a8: "
      "int4:token:scale=f16 and fp8_e4m3:token) are recorded in quantization_config and applied by the engine: "
      "each cached (token, KV head) vector and each (token, head) query after RoPE is rounded to them. "
      "fireq-w4a8-linear is issue 6's linear-only recipe.\n\n"
      "Examples:\n"
      "  qforge quantize --list-recipes\n"
      "  qforge quantize --recipe rtn-w4g128 -o out/rtn-w4g128           # default model, seconds\n"
      "  qforge quantize --recipe gptq-w4g128 -o out/gptq --samples 128 --seqlen 512\n"
      "  qforge quantize --recipe gptq-w4g128 -o out/gptq-cpu --device cpu   # calibrate on the CPU\n"
      "  qforge ppl out/gptq --ctx 512 --chunks 16\n"
      "  qforge quantize --recipe fireq-w4a8 -o out/fireq --samples 128 --seqlen 512   # FireQ W4A8, INT4 KV\n"
      "  qforge ppl out/fireq --device cuda   # through the INT4 x FP8 kernels on a Hopper GPU");
  cmd->callback([a] { run_quantize(*a); });
}

QF_REGISTER_COMMAND(register_quantize);

}  // namespace
}  // namespace qf::cli
