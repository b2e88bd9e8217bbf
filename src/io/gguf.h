// GGUF v2/v3 reader (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), and a writer
// of metadata-only GGUF v3 files (serialize_metadata, below).
// Every offset, count and size read from the file is checked against the file's size before
// it is used: a truncated or hostile file yields a qf::Error naming the file and the field,
// never a read past the mapping (fuzzed by fuzz/fuzz_gguf.cpp).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "core/mapped_file.h"
#include "core/tensor.h"
#include "io/byte_source.h"

namespace qf::gguf {

enum class ValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};

// ggml tensor types (ggml.h numbering).
enum class GGMLType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, BF16 = 30,
};
const char* ggml_type_name(GGMLType t);
const char* value_type_name(ValueType t);

// One metadata value. Arrays hold scalars of one type or strings (nested arrays are rejected).
// Storage by type (what the reader produces and serialize_metadata expects): UINT* as uint64_t,
// INT* as int64_t, FLOAT* as double, BOOL as bool, STRING as std::string; ARRAY as
// vector<int64_t> (any integer element type), vector<double> (float elements),
// vector<uint8_t> (bool elements, 0 or 1) or vector<std::string>.
struct Value {
  ValueType type = ValueType::UINT8;
  ValueType array_type = ValueType::UINT8;  // for ARRAY
  std::variant<uint64_t, int64_t, double, bool, std::string,
               std::vector<int64_t>, std::vector<double>, std::vector<std::string>, std::vector<uint8_t>>
      data;
};

class Metadata {
 public:
  bool has(const std::string& key) const { return kv_.count(key) != 0; }
  const Value* find(const std::string& key) const;
  // Typed getters: throw qf::Error naming the key if it is missing or of another type.
  // Integer getters accept any integer type; float getters accept floats and integers.
  std::string get_string(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;
  std::vector<double> get_float_array(const std::string& key) const;
  // With a default when absent (still throws on a wrong type).
  std::string get_string(const std::string& key, const std::string& def) const;
  int64_t get_int(const std::string& key, int64_t def) const;
  double get_float(const std::string& key, double def) const;
  bool get_bool(const std::string& key, bool def) const;

  std::vector<std::string> keys() const;
  void set(const std::string& key, Value v) { kv_[key] = std::move(v); }
  // Named in error messages (the file the metadata came from).
  void set_source(std::string source) { source_ = std::move(source); }
  const std::string& source() const { return source_; }

 private:
  const Value& require(const std::string& key) const;
  std::map<std::string, Value> kv_;
  std::string source_ = "GGUF metadata";
};

struct TensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // ggml order: ne[0] is the contiguous (innermost) dimension
  GGMLType type = GGMLType::F32;
  uint64_t offset = 0;      // from the start of the data section
  size_t nbytes = 0;
  const uint8_t* data = nullptr;
  // Row-major shape (outermost first), i.e. ne reversed: [rows, cols] for a matrix.
  Shape shape() const;
  int64_t numel() const;
};

class File {
 public:
  // Opens and validates a GGUF file: header, metadata, tensor infos, alignment, that every
  // tensor lies inside the file and that no two tensors overlap.
  static std::shared_ptr<const File> open(const std::string& path);
  // Same, over bytes already in memory (for the fuzzer and the tests); `name` is used in errors.
  static std::shared_ptr<const File> parse(std::shared_ptr<const MappedFile> file);
  static std::shared_ptr<const File> parse_bytes(const uint8_t* data, size_t size, const std::string& name);

  uint32_t version() const { return version_; }
  const std::string& path() const { return bytes_.name; }
  const Metadata& metadata() const { return metadata_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;
  size_t alignment() const { return alignment_; }
  // Byte offset of the data section (tensor offsets count from here).
  uint64_t data_offset() const { return data_offset_; }

  // The tensor as F32 (dequantized for block types, in parallel over rows), row-major
  // shape(). F32 tensors are borrowed (the file stays mapped while the tensor lives) when
  // 4-byte aligned; others are converted into owned memory.
  Tensor to_f32(const TensorInfo& t) const;

 private:
  explicit File(ByteSource bytes) : bytes_(std::move(bytes)) {}
  void parse_all();
  ByteSource bytes_;
  uint32_t version_ = 0;
  size_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  Metadata metadata_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
};

// The bytes of a GGUF v3 file holding `md` and no tensors: header (tensor count 0), the
// key/value pairs in key order, each value in its declared type, little-endian, then zero
// padding to the alignment (general.alignment when `md` has it, else 32), which is where the
// spec puts the (here empty) data section. Used to carry a GGUF model's tokenizer metadata in a
// quantized checkpoint (docs/checkpoint.md); File::parse reads it back. Throws qf::Error naming
// the key when a value does not fit its declared type (an integer out of range, storage of
// another kind, an array of arrays, a bool array element other than 0/1).
std::string serialize_metadata(const Metadata& md);

}  // namespace qf::gguf
