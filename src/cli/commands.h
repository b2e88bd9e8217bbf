// Subcommand registry: each cmd_*.cpp defines one subcommand and registers it with a static
// QF_REGISTER_COMMAND(fn), where fn(CLI::App&) adds the subcommand, its options and its callback.
// Callbacks report user errors by throwing qf::Error; main() prints them.
#pragma once

#include <functional>
#include <vector>

namespace CLI { class App; }

namespace qf::cli {

using Register = std::function<void(CLI::App&)>;
std::vector<Register>& registry();

struct Registrar {
  explicit Registrar(Register r) { registry().push_back(std::move(r)); }
};

}  // namespace qf::cli

#define QF_CONCAT_(a, b) a##b
#define QF_CONCAT(a, b) QF_CONCAT_(a, b)
#define QF_REGISTER_COMMAND(fn) static ::qf::cli::Registrar QF_CONCAT(qf_registrar_, __LINE__)(fn)
