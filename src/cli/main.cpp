// qforge: one binary, subcommands registered from cmd_*.cpp (see commands.h).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{
      "qforge: quantize Llama-family language models after training and run them fast on NVIDIA "
      "Hopper GPUs.\nMODEL is a .gguf file or a Hugging Face directory (config.json + safetensors); "
      "omitted, it is the default model (SmolLM2-135M-Instruct, fetched by scripts/setup.sh)."};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  for (const auto& reg : qf::cli::registry()) reg(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const qf::Error& e) {
    std::fprintf(stderr, "qforge: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qforge: unexpected error: %s\n", e.what());
    return 2;
  }
  return 0;
}
