// A host tensor: dtype, shape (row-major, last dimension contiguous) and bytes that are either
// owned or borrowed from something kept alive with it (a memory-mapped checkpoint). Weights of a
// 70B checkpoint stay in the page cache this way instead of being copied into the heap.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace qf {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

template <typename T>
constexpr bool dtype_matches(DType t) {
  if constexpr (std::is_same_v<T, float>) return t == DType::F32;
  else if constexpr (std::is_same_v<T, double>) return t == DType::F64;
  else if constexpr (std::is_same_v<T, int8_t>) return t == DType::I8;
  else if constexpr (std::is_same_v<T, uint8_t>) return t == DType::U8;
  else if constexpr (std::is_same_v<T, int16_t>) return t == DType::I16;
  else if constexpr (std::is_same_v<T, int32_t>) return t == DType::I32;
  else if constexpr (std::is_same_v<T, int64_t>) return t == DType::I64;
  else if constexpr (std::is_same_v<T, uint32_t>) return t == DType::U32;
  // uint16_t holds the bits of F16 or BF16.
  else if constexpr (std::is_same_v<T, uint16_t>) return t == DType::F16 || t == DType::BF16;
  else return false;
}

class Tensor {
 public:
  Tensor() = default;

  // Owned, uninitialised storage (aligned to 64 bytes for vector loads).
  static Tensor empty(DType dtype, Shape shape);
  // Owned, zero-filled storage.
  static Tensor zeros(DType dtype, Shape shape);
  // Borrowed storage: `data` stays valid while `keepalive` lives.
  static Tensor borrow(DType dtype, Shape shape, const void* data, std::shared_ptr<const void> keepalive);

  bool defined() const { return data_ != nullptr || !shape_.empty(); }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_.at(i < 0 ? i + ndim() : i); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool owns_data() const { return owned_; }

  const void* raw() const { return data_; }
  // Writable access; borrowed (mapped, read-only) tensors refuse.
  void* raw_mut();

  template <typename T>
  const T* data() const {
    QF_CHECK(dtype_matches<T>(dtype_), "tensor of dtype ", dtype_name(dtype_), " read with the wrong element type");
    return static_cast<const T*>(data_);
  }
  template <typename T>
  T* data_mut() {
    QF_CHECK(dtype_matches<T>(dtype_), "tensor of dtype ", dtype_name(dtype_), " written with the wrong element type");
    return static_cast<T*>(raw_mut());
  }

  // Same bytes, another shape of equal element count.
  Tensor reshape(Shape shape) const;
  // A deep copy into owned memory.
  Tensor clone() const;

 private:
  DType dtype_ = DType::F32;
  Shape shape_;
  const void* data_ = nullptr;
  bool owned_ = false;
  std::shared_ptr<const void> storage_;
};

}  // namespace qf
