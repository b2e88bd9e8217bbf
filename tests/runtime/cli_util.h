// Runs the qforge binary (QF_BINARY, set by the test target) and captures its output: the CLI tests.
#pragma once

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <string>

namespace qf::cli_test {

struct CliResult {
  int status;
  std::string output;  // stdout and stderr
};

inline CliResult run_qforge(const std::string& args) {
  const std::string cmd = std::string(QF_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  EXPECT_NE(p, nullptr) << cmd;
  CliResult r{-1, ""};
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  r.status = pclose(p);
  return r;
}

}  // namespace qf::cli_test
