// Errors: every failure a user can cause (bad file, bad flag, model too large) is reported as a
// qf::Error whose message names the thing at fault and what is wrong with it. Internal
// invariants use QF_ASSERT, which is also an Error (never abort()), so a long job can save work.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace qf {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Concatenate anything streamable: str("tensor ", name, " has ", n, " elements").
template <typename... Args>
std::string str(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

template <typename... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(str(std::forward<Args>(args)...));
}

}  // namespace qf

// QF_CHECK(cond, "what", value, ...): a user-facing check; the message is built only on failure.
#define QF_CHECK(cond, ...)                  \
  do {                                       \
    if (!(cond)) ::qf::fail(__VA_ARGS__);    \
  } while (0)

// QF_ASSERT(cond): an internal invariant; reports the source location.
#define QF_ASSERT(cond)                                                                  \
  do {                                                                                   \
    if (!(cond)) ::qf::fail("internal error: ", #cond, " failed at ", __FILE__, ":", __LINE__); \
  } while (0)
