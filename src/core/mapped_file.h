// Read-only memory mapping of a whole file. Checkpoints are mapped, never read into the heap,
// so loading a sharded 70B model costs page-cache pages, not a copy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace qf {

class MappedFile {
 public:
  // Throws qf::Error naming the path if it cannot be opened or mapped.
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace qf
