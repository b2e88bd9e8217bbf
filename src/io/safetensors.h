// safetensors files (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
// "__metadata__": {string: string}}, then the data region the offsets count from.
//
// The reader checks everything before use (header length against the file and a cap, dtype,
// shape against the byte count, offsets inside the data region, no overlaps) and keeps tensors
// memory-mapped. The writer writes atomically: a temporary file in the same folder, fsync,
// rename over the final path, fsync of the folder; a failure at any point leaves no file (and
// an existing file at the path untouched).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/mapped_file.h"
#include "core/tensor.h"
#include "io/byte_source.h"

namespace qf::safetensors {

// Every dtype the format defines. Tensor (core/dtype.h) can hold the plain ones; the others
// (FP8, BOOL, U16, U64) are recognised so quantized checkpoints can carry them as raw bytes.
enum class Dtype : uint8_t { BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64 };

const char* dtype_name(Dtype t);
size_t dtype_size(Dtype t);
std::optional<Dtype> parse_dtype(const std::string& name);
std::optional<DType> to_tensor_dtype(Dtype t);  // none for FP8, BOOL, U16, U64
Dtype from_tensor_dtype(DType t);

struct TensorEntry {
  std::string name;
  Dtype dtype = Dtype::F32;
  Shape shape;
  uint64_t begin = 0, end = 0;  // data_offsets, relative to the data region
  const uint8_t* data = nullptr;
  size_t nbytes() const { return end - begin; }
};

// A header larger than this is not a checkpoint's: even a 100k-tensor file's header is a few MB.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

class File {
 public:
  static std::shared_ptr<const File> open(const std::string& path);
  static std::shared_ptr<const File> parse(std::shared_ptr<const MappedFile> file);
  // Over bytes in memory (copied), for the fuzzer and the tests; `name` is used in errors.
  static std::shared_ptr<const File> parse_bytes(const uint8_t* data, size_t size, const std::string& name);

  const std::string& path() const { return bytes_.name; }
  const std::vector<TensorEntry>& tensors() const { return tensors_; }  // sorted by name
  const TensorEntry* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // The tensor as a Tensor of its dtype, borrowing the mapped bytes (the file stays mapped
  // while the tensor lives), or an owned copy if the bytes are not aligned to the element size.
  // Throws naming the file and tensor for dtypes Tensor cannot hold, or an unknown name.
  Tensor tensor(const TensorEntry& t) const;
  Tensor tensor(const std::string& name) const;

 private:
  explicit File(ByteSource bytes) : bytes_(std::move(bytes)) {}
  void parse_all();
  ByteSource bytes_;
  std::vector<TensorEntry> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write: raw little-endian bytes of `shape` elements of `dtype`.
struct TensorToWrite {
  std::string name;
  Dtype dtype = Dtype::F32;
  Shape shape;
  const void* data = nullptr;
  static TensorToWrite from(std::string name, const Tensor& t);  // `t` must outlive the write
};

struct WriteOptions {
  // Called after each tensor's bytes are written (count written so far, total). An exception
  // thrown from it aborts the write like an I/O error does: no file appears at the path.
  std::function<void(size_t written, size_t total)> on_tensor_written;
};

// Writes `tensors` (names unique, not "__metadata__") and `metadata` to `path` atomically.
// Tensors are laid out by decreasing element size, so each one's bytes are aligned to its
// element size in the file (the header is padded to a multiple of 8).
void write_file(const std::string& path, const std::vector<TensorToWrite>& tensors,
                const std::map<std::string, std::string>& metadata = {}, const WriteOptions& options = {});

}  // namespace qf::safetensors
