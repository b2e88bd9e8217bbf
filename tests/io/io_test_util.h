// Helpers shared by the io tests: a scratch folder, file bytes, and an expectation that a call
// throws a qf::Error whose message contains given fragments (the file name, the field at fault).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "core/error.h"

namespace qf::testing {

// A fresh folder under the system temp dir, removed with its contents on destruction.
class ScratchDir {
 public:
  ScratchDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "qf-io-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
    EXPECT_FALSE(path_.empty());
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

inline void write_text(const std::string& path, const std::string& text) {
  write_bytes(path, std::vector<uint8_t>(text.begin(), text.end()));
}

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The qf::Error message `fn` throws; fails the test if it throws nothing or something else.
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-qf exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "did not throw";
  return "";
}

}  // namespace qf::testing

// EXPECT_ERROR(call, "fragment", ...): `call` throws a qf::Error mentioning every fragment.
#define EXPECT_ERROR(call, ...)                                                      \
  do {                                                                               \
    const std::string qf_msg_ = ::qf::testing::error_of([&] { (void)(call); });     \
    for (const std::string& qf_frag_ : std::initializer_list<std::string>{__VA_ARGS__})     \
      EXPECT_NE(qf_msg_.find(qf_frag_), std::string::npos)                          \
          << "error message lacks \"" << qf_frag_ << "\": " << qf_msg_;            \
  } while (0)
