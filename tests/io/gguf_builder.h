// A test-only GGUF writer: builds the bytes of a small GGUF file from metadata and tensors, with
// knobs to write what a valid writer never would (wrong counts, offsets, types, version), so
// the tests can check that the reader rejects each defect. Also used to generate the fuzzers'
// seed corpus. Layout written (gguf.md): magic, version, n_tensors, n_kv, the KV pairs, the
// tensor infos, padding to the alignment, then each tensor's bytes at its offset.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace qf::testing {

// GGUF value type numbers (gguf.md).
enum GgufType : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

class ByteWriter {
 public:
  template <typename T>
  void put(T v) {
    uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    bytes.insert(bytes.end(), b, b + sizeof(T));
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
  }
  void put_bytes(const std::vector<uint8_t>& b) { bytes.insert(bytes.end(), b.begin(), b.end()); }
  std::vector<uint8_t> bytes;
};

class GgufBuilder {
 public:
  uint32_t version = 3;
  std::optional<uint64_t> n_tensors_override, n_kv_override;
  uint64_t alignment = 32;  // the padding used; write general.alignment to tell the reader

  // Metadata: any value as (type, encoded bytes); helpers for the common kinds.
  void add_raw(const std::string& key, uint32_t type, std::vector<uint8_t> value) {
    kvs_.push_back({key, type, std::move(value)});
  }
  template <typename T>
  void add_scalar(const std::string& key, uint32_t type, T v) {
    ByteWriter w;
    w.put<T>(v);
    add_raw(key, type, w.bytes);
  }
  void add_u32(const std::string& key, uint32_t v) { add_scalar(key, kU32, v); }
  void add_f32(const std::string& key, float v) { add_scalar(key, kF32, v); }
  void add_bool(const std::string& key, bool v) { add_scalar<uint8_t>(key, kBool, v ? 1 : 0); }
  void add_string(const std::string& key, const std::string& v) {
    ByteWriter w;
    w.put_string(v);
    add_raw(key, kString, w.bytes);
  }
  void add_string_array(const std::string& key, const std::vector<std::string>& v) {
    ByteWriter w;
    w.put<uint32_t>(kString);
    w.put<uint64_t>(v.size());
    for (const auto& s : v) w.put_string(s);
    add_raw(key, kArray, w.bytes);
  }
  template <typename T>
  void add_array(const std::string& key, uint32_t elem_type, const std::vector<T>& v) {
    ByteWriter w;
    w.put<uint32_t>(elem_type);
    w.put<uint64_t>(v.size());
    for (T x : v) w.put<T>(x);
    add_raw(key, kArray, w.bytes);
  }

  struct Tensor {
    std::string name;
    std::vector<uint64_t> ne;  // ggml order, ne[0] innermost
    uint32_t type;
    std::vector<uint8_t> data;
    std::optional<uint64_t> offset_override;
  };
  void add_tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, std::vector<uint8_t> data) {
    tensors_.push_back({name, std::move(ne), type, std::move(data), std::nullopt});
  }
  void add_f32_tensor(const std::string& name, std::vector<uint64_t> ne, const std::vector<float>& values) {
    std::vector<uint8_t> data(values.size() * 4);
    std::memcpy(data.data(), values.data(), data.size());
    add_tensor(name, std::move(ne), 0, std::move(data));
  }
  Tensor& tensor(size_t i) { return tensors_.at(i); }

  // Byte positions of the last build(), for tests that cut or patch the file there.
  struct Layout {
    size_t kv_begin = 0, infos_begin = 0, infos_end = 0, data_begin = 0;
  };
  const Layout& layout() const { return layout_; }

  std::vector<uint8_t> build() {
    ByteWriter w;
    w.bytes = {'G', 'G', 'U', 'F'};
    w.put<uint32_t>(version);
    w.put<uint64_t>(n_tensors_override.value_or(tensors_.size()));
    w.put<uint64_t>(n_kv_override.value_or(kvs_.size()));
    layout_.kv_begin = w.bytes.size();
    for (const Kv& kv : kvs_) {
      w.put_string(kv.key);
      w.put<uint32_t>(kv.type);
      w.put_bytes(kv.value);
    }
    layout_.infos_begin = w.bytes.size();
    std::vector<uint64_t> offsets;
    uint64_t next = 0;
    for (const Tensor& t : tensors_) {
      offsets.push_back(t.offset_override.value_or(next));
      next = align(offsets.back() + t.data.size());
      w.put_string(t.name);
      w.put<uint32_t>(uint32_t(t.ne.size()));
      for (uint64_t d : t.ne) w.put<uint64_t>(d);
      w.put<uint32_t>(t.type);
      w.put<uint64_t>(offsets.back());
    }
    layout_.infos_end = w.bytes.size();
    if (tensors_.empty()) return w.bytes;
    w.bytes.resize(align(w.bytes.size()), 0);
    layout_.data_begin = w.bytes.size();
    // Each tensor's bytes at its offset; the file ends with the last byte of the last tensor.
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const size_t at = layout_.data_begin + offsets[i];
      const std::vector<uint8_t>& data = tensors_[i].data;
      if (data.empty()) continue;  // (tests of bad sizes declare tensors without bytes)
      if (w.bytes.size() < at + data.size()) w.bytes.resize(at + data.size(), 0);
      std::memcpy(w.bytes.data() + at, data.data(), data.size());
    }
    return w.bytes;
  }

 private:
  struct Kv {
    std::string key;
    uint32_t type;
    std::vector<uint8_t> value;
  };
  uint64_t align(uint64_t x) const { return (x + alignment - 1) / alignment * alignment; }
  std::vector<Kv> kvs_;
  std::vector<Tensor> tensors_;
  Layout layout_;
};

}  // namespace qf::testing
