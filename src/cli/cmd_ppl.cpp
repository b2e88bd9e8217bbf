// qforge ppl [MODEL]: perplexity on a text file (WikiText-2 test by default).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "cli/cmd_common.h"
#include "cli/commands.h"
#include "core/progress.h"
#include "runtime/paths.h"
#include "runtime/perplexity.h"
#include "tokenizer/tokenizer.h"

namespace qf::cli {
namespace {

struct PplArgs {
  std::string model, data;
  int64_t ctx = 0, chunks = 0, batch_windows = 1;
  bool json = false, llama_cpp = false, quiet = false;
  EngineFlags engine;
};

std::string read_text_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  QF_CHECK(f, "cannot open the data file ", path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void run_ppl(const PplArgs& a) {
  const Device requested = apply_engine_flags(a.engine);
  QF_CHECK(a.ctx == 0 || a.ctx >= 2, "--ctx must be at least 2 tokens, got ", a.ctx);
  QF_CHECK(a.batch_windows >= 1, "--batch must be at least 1, got ", a.batch_windows);
  if (a.quiet) Progress::set_quiet(true);
  const std::string data = a.data.empty() ? shared_data_file("wikitext-2-raw-test.txt") : a.data;
  const std::string text = read_text_file(data);
  const std::string path = resolve_model_path(a.model);
  const Model model = load_model(path);
  const Device device = settle_device(a.engine, requested, model);

  PerplexityOptions o;
  o.ctx = a.ctx > 0 ? a.ctx : std::min<int64_t>(2048, model.config().max_position_embeddings);
  QF_CHECK(o.ctx <= model.config().max_position_embeddings, "--ctx ", o.ctx, " exceeds the model's context of ",
           model.config().max_position_embeddings, " tokens");
  o.max_windows = a.chunks;
  o.scoring = a.llama_cpp ? PerplexityScoring::LlamaCpp : PerplexityScoring::Standard;
  EngineOptions eo;
  fill_engine_options(a.engine, device, eo);
  eo.num_slots = int(a.batch_windows);
  eo.slot_capacity = o.ctx;
  auto engine = create_engine(model, eo);

  std::unique_ptr<Progress> bar;
  int64_t reported = 0;
  auto on_window = [&](int64_t done, int64_t total, const PerplexityResult& r) {
    if (!bar) bar = std::make_unique<Progress>("perplexity", total, "windows");
    char note[64];
    std::snprintf(note, sizeof note, "ppl %.4f", r.ppl);
    bar->set_note(note);
    bar->advance(done - reported);
    reported = done;
  };
  const PerplexityResult r = perplexity_of_text(*engine, model.tokenizer, text, o, on_window);
  if (bar) bar->finish();

  const char* scoring = a.llama_cpp ? "llama.cpp (BOS as in llama-perplexity, second half of each window)"
                                    : "standard (every token after the first of each window, no BOS)";
  if (a.json) {
    nlohmann::json j = {{"ppl", r.ppl},
                        {"ppl_stderr", r.ppl_stderr},
                        {"mean_nll", r.mean_nll},
                        {"mean_nll_stderr", r.mean_nll_stderr},
                        {"tokens", r.tokens_scored},
                        {"tokens_evaluated", r.tokens_evaluated},
                        {"ctx", r.ctx},
                        {"chunks", r.windows},
                        {"seconds", r.seconds},
                        {"tokens_per_second", r.tokens_per_second()},
                        {"scoring", a.llama_cpp ? "llama-cpp" : "standard"},
                        {"model", path},
                        {"data", data},
                        {"device", engine->describe()},
                        {"activations", activations_text(a.engine, model)},
                        {"kv_cache", kv_cache_text(a.engine, model)},
                        {"query", query_text(a.engine, model)},
                        {"running_ppl", r.running_ppl}};
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("model: %s\ndata: %s\nscoring: %s\nengine: %s%s\n", path.c_str(), data.c_str(), scoring,
              engine->describe().c_str(),
              str(activations_text(a.engine, model) == "f32" ? "" : ", activations " + activations_text(a.engine, model),
                  kv_cache_text(a.engine, model) == "f32" ? "" : ", KV cache " + kv_cache_text(a.engine, model),
                  query_text(a.engine, model) == "f32" ? "" : ", queries " + query_text(a.engine, model))
                  .c_str());
  std::printf("perplexity: %.4f ± %.4f over %ld tokens (%ld windows of %ld), %.1f tok/s\n", r.ppl, r.ppl_stderr,
              long(r.tokens_scored), long(r.windows), long(r.ctx), r.tokens_per_second());
}

void register_ppl(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "ppl",
      "Perplexity of a model on a text: exp(mean negative log-likelihood) over non-overlapping windows");
  auto a = std::make_shared<PplArgs>();
  add_model_argument(cmd, a->model);
  cmd->add_option("--data", a->data,
                  "Text file to score (default: WikiText-2 test, shared/data/wikitext-2-raw-test.txt)");
  cmd->add_option("--ctx", a->ctx, "Window length in tokens (default: 2048, or the model's context if smaller)");
  cmd->add_option("--chunks", a->chunks, "Score only the first K windows (default: all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--llama-cpp-scoring", a->llama_cpp,
                "Score as llama.cpp's llama-perplexity does (BOS per window when the model adds one, only the "
                "second half of each window), to compare with its numbers");
  cmd->add_option("--batch", a->batch_windows, "Windows run side by side in one forward call (default 1)");
  cmd->add_flag("--json", a->json, "Print one JSON object (ppl, ppl_stderr, tokens, ctx, chunks, seconds, ...)");
  cmd->add_flag("--quiet", a->quiet, "No progress bar");
  add_engine_flags(cmd, a->engine);
  cmd->footer(
      "Scoring: each window of N tokens predicts its tokens 2..N from the ones before (N-1 scored per window, no "
      "BOS), the convention of GPTQ/QUIK-style papers. ± is the standard error: ppl x stderr of the mean NLL.\n\n"
      "Examples:\n"
      "  qforge ppl                                   # default model, WikiText-2 test, windows of 2048\n"
      "  qforge ppl --ctx 512 --chunks 8              # a quick estimate on 8 windows\n"
      "  qforge ppl model.gguf --ctx 512 --llama-cpp-scoring   # the number llama-perplexity -c 512 prints\n"
      "  qforge ppl --data my.txt --json              # machine-readable result");
  cmd->callback([a] { run_ppl(*a); });
}

QF_REGISTER_COMMAND(register_ppl);

}  // namespace
}  // namespace qf::cli
