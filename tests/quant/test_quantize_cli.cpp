// `qforge quantize`: help that teaches (recipes listed, examples), and errors that need no
// model, reported before the model is loaded.
#include <gtest/gtest.h>

#include <filesystem>

#include "runtime/cli_util.h"

namespace qf {
namespace {

using cli_test::run_qforge;

TEST(QuantizeCli, HelpListsRecipesAndExamples) {
  const auto help = run_qforge("quantize --help");
  EXPECT_EQ(help.status, 0) << help.output;
  for (const char* s : {"Examples:", "qforge quantize", "--recipe", "--calib", "--samples", "--seqlen", "--seed",
                        "--force", "--list-recipes", "gptq-w4g128", "rtn-w8", "w8a8-fp8"})
    EXPECT_NE(help.output.find(s), std::string::npos) << s;
  const auto list = run_qforge("quantize --list-recipes");
  EXPECT_EQ(list.status, 0) << list.output;
  for (const char* r : {"rtn-w8", "rtn-w4g128", "rtn-w3g128", "gptq-w4g128", "gptq-w3g128", "gptq-w4", "w8a8-fp8"})
    EXPECT_NE(list.output.find(r), std::string::npos) << r;
}

TEST(QuantizeCli, ClearErrorsBeforeLoadingTheModel) {
  const auto no_recipe = run_qforge("quantize /nonexistent -o /tmp/x");
  EXPECT_NE(no_recipe.status, 0);
  EXPECT_NE(no_recipe.output.find("--recipe is required"), std::string::npos) << no_recipe.output;
  const auto unknown = run_qforge("quantize /nonexistent --recipe gptq-w5 -o /tmp/x");
  EXPECT_NE(unknown.status, 0);
  EXPECT_NE(unknown.output.find("no built-in recipe named \"gptq-w5\""), std::string::npos) << unknown.output;
  EXPECT_NE(unknown.output.find("gptq-w4g128"), std::string::npos) << unknown.output;
  const auto no_out = run_qforge("quantize /nonexistent --recipe rtn-w8");
  EXPECT_NE(no_out.status, 0);
  EXPECT_NE(no_out.output.find("-o/--output is required"), std::string::npos) << no_out.output;
  const std::string existing = std::filesystem::temp_directory_path().string();
  const auto exists = run_qforge("quantize /nonexistent --recipe rtn-w8 -o " + existing);
  EXPECT_NE(exists.status, 0);
  EXPECT_NE(exists.output.find("already exists"), std::string::npos) << exists.output;
}

}  // namespace
}  // namespace qf
