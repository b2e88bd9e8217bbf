// The bytes a file parser reads: a memory-mapped file, or a private copy of bytes given in
// memory (the fuzzers, the tests). `keepalive` owns them; tensors borrowing the bytes hold it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/mapped_file.h"

namespace qf {

struct ByteSource {
  std::string name;  // the path, or the name given with the bytes; named in errors
  std::shared_ptr<const void> keepalive;
  const uint8_t* data = nullptr;
  size_t size = 0;

  static ByteSource mapped(std::shared_ptr<const MappedFile> file) {
    ByteSource s;
    s.name = file->path();
    s.data = file->data();
    s.size = file->size();
    s.keepalive = std::move(file);
    return s;
  }
  static ByteSource copied(const uint8_t* bytes, size_t size, std::string name) {
    auto copy = std::make_shared<std::vector<uint8_t>>(bytes, bytes + size);
    ByteSource s;
    s.name = std::move(name);
    s.data = copy->data();
    s.size = copy->size();
    s.keepalive = std::move(copy);
    return s;
  }
};

}  // namespace qf
