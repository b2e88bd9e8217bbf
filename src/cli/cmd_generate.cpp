// qforge generate [MODEL] -p PROMPT: continue a prompt (or answer it, with --chat), streaming
// the text as it is produced.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <random>

#include "cli/cmd_common.h"
#include "cli/commands.h"
#include "runtime/generation.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace qf::cli {
namespace {

struct GenerateArgs {
  std::string model, prompt, system;
  int64_t max_new_tokens = 256;
  double temperature = 0.0, top_p = 1.0;
  int64_t top_k = 0;
  int64_t seed = -1;
  bool chat = false, quiet = false;
  EngineFlags engine;
};

void run_generate(const GenerateArgs& a) {
  const Device requested = apply_engine_flags(a.engine);
  QF_CHECK(a.max_new_tokens >= 1, "-n must be at least 1, got ", a.max_new_tokens);
  QF_CHECK(a.system.empty() || a.chat, "--system needs --chat (a system message is part of a chat conversation)");
  const std::string path = resolve_model_path(a.model);
  const Model model = load_model(path);
  const Device device = settle_device(a.engine, requested, model);
  const Tokenizer& tok = model.tokenizer;

  std::string text = a.prompt;
  if (a.chat) {
    if (!tok.chat_template().warning().empty())
      std::fprintf(stderr, "qforge: warning: %s\n", tok.chat_template().warning().c_str());
    std::vector<ChatMessage> messages;
    if (!a.system.empty()) messages.push_back({"system", a.system});
    messages.push_back({"user", a.prompt});
    text = tok.apply_chat_template(messages, /*add_generation_prompt=*/true);
  }
  // Special-token text (<|im_start|>, ...) in the prompt becomes the special token, so a raw
  // prompt can spell out a chat turn too.
  const std::vector<int32_t> prompt = tok.encode(text, tok.adds_bos(), /*parse_special=*/true);

  GenerationOptions g;
  g.max_new_tokens = a.max_new_tokens;
  g.sampling.temperature = a.temperature;
  g.sampling.top_k = a.top_k;
  g.sampling.top_p = a.top_p;
  g.sampling.seed = a.seed >= 0 ? uint64_t(a.seed) : std::random_device{}();
  EngineOptions eo;
  fill_engine_options(a.engine, device, eo);
  eo.slot_capacity = std::min<int64_t>(model.config().max_position_embeddings,
                                       int64_t(prompt.size()) + a.max_new_tokens);
  auto engine = create_engine(model, eo);

  if (!a.quiet && !a.chat) {  // echo the prompt so the continuation reads on
    std::fputs(a.prompt.c_str(), stdout);
    std::fflush(stdout);
  }
  const GenerationResult r = generate(*engine, tok, prompt, g, [](std::string_view piece) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  });
  std::fputc('\n', stdout);
  std::fflush(stdout);
  if (!a.quiet) {
    std::fprintf(stderr, "\n[%s; %ld prompt tokens at %.1f tok/s; %zu generated at %.1f tok/s%s; %s%s]\n",
                 engine->describe().c_str(), long(r.prompt_tokens), r.prefill_tokens_per_second(), r.tokens.size(),
                 r.decode_tokens_per_second(), r.stopped_at_end_of_generation ? ", stopped at end of turn" : "",
                 g.sampling.greedy() ? "greedy" : "sampled",
                 g.sampling.greedy() ? "" : str(", seed ", g.sampling.seed).c_str());
  }
}

void register_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Generate text from a prompt, streamed as it is produced");
  auto a = std::make_shared<GenerateArgs>();
  add_model_argument(cmd, a->model);
  cmd->add_option("-p,--prompt", a->prompt, "The prompt (with --chat: the user's message)")->required();
  cmd->add_option("-n,--max-tokens", a->max_new_tokens, "Most tokens to generate (stops earlier at end of turn)")
      ->capture_default_str();
  cmd->add_option("--temp", a->temperature, "Sampling temperature; 0 = greedy (the most likely token)")
      ->capture_default_str();
  cmd->add_option("--top-k", a->top_k, "Sample among the K most likely tokens only (0 = all)")->capture_default_str();
  cmd->add_option("--top-p", a->top_p, "Then keep the smallest set of tokens whose probability reaches P")
      ->capture_default_str();
  cmd->add_option("--seed", a->seed, "Random seed for sampling (default: random, printed at the end)");
  cmd->add_flag("--chat", a->chat, "Wrap the prompt in the model's chat template as a user message");
  cmd->add_option("--system", a->system, "System message for --chat");
  cmd->add_flag("--quiet", a->quiet, "Print only the generated text");
  add_engine_flags(cmd, a->engine);
  cmd->footer(
      "Sampling applies top-k, then top-p over the renormalised softmax(logits / temp), then draws (see "
      "src/runtime/sampling.h); a seed fixes the text.\n\n"
      "Examples:\n"
      "  qforge generate --chat -p \"What is the capital of France?\"\n"
      "  qforge generate -p \"Once upon a time\" -n 64 --temp 0.8 --top-p 0.95 --seed 1\n"
      "  qforge generate model.gguf --chat --system \"Answer in one word.\" -p \"Largest planet?\"");
  cmd->callback([a] { run_generate(*a); });
}

QF_REGISTER_COMMAND(register_generate);

}  // namespace
}  // namespace qf::cli
