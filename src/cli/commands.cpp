#include "cli/commands.h"

namespace qf::cli {
std::vector<Register>& registry() {
  static std::vector<Register> r;
  return r;
}
}  // namespace qf::cli
