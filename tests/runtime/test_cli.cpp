// The qforge binary's info / ppl / generate commands: help that teaches, and clear errors that
// need no model (they are checked before the model is loaded).
#include <gtest/gtest.h>

#include <string>

#include "runtime/cli_util.h"

namespace {

using Result = qf::cli_test::CliResult;
Result run(const std::string& args) { return qf::cli_test::run_qforge(args); }

TEST(Cli, HelpOfEachCommandHasExamples) {
  for (const char* cmd : {"info", "ppl", "generate"}) {
    const Result r = run(std::string(cmd) + " --help");
    EXPECT_EQ(r.status, 0) << cmd << ": " << r.output;
    EXPECT_NE(r.output.find("Examples:"), std::string::npos) << cmd << ": " << r.output;
    EXPECT_NE(r.output.find(std::string("qforge ") + cmd), std::string::npos) << cmd;
  }
  const Result ppl = run("ppl --help");
  for (const char* opt : {"--data", "--ctx", "--chunks", "--json", "--threads", "--device", "--llama-cpp-scoring"})
    EXPECT_NE(ppl.output.find(opt), std::string::npos) << opt;
  const Result gen = run("generate --help");
  for (const char* opt : {"--prompt", "--temp", "--top-k", "--top-p", "--seed", "--chat", "--system"})
    EXPECT_NE(gen.output.find(opt), std::string::npos) << opt;
}

TEST(Cli, ClearErrors) {
#ifndef QF_HAVE_CUDA
  const Result cuda = run("generate -p hi --device cuda");
  EXPECT_NE(cuda.status, 0);
  EXPECT_NE(cuda.output.find("built without CUDA"), std::string::npos) << cuda.output;
#endif
  const Result missing = run("info /nonexistent/model.gguf");
  EXPECT_NE(missing.status, 0);
  EXPECT_NE(missing.output.find("/nonexistent/model.gguf"), std::string::npos) << missing.output;
  const Result bad_format = run("ppl --activations int9:g32");
  EXPECT_NE(bad_format.status, 0);
  EXPECT_NE(bad_format.output.find("int9"), std::string::npos) << bad_format.output;
  const Result no_prompt = run("generate");
  EXPECT_NE(no_prompt.status, 0);
  EXPECT_NE(no_prompt.output.find("prompt"), std::string::npos) << no_prompt.output;
}

}  // namespace
