#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <limits>

namespace qf {

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    QF_CHECK(d >= 0, "negative dimension in shape ", shape_str(s));
    QF_CHECK(d == 0 || n <= std::numeric_limits<int64_t>::max() / d, "shape ", shape_str(s), " overflows");
    n *= d;
  }
  return n;
}

Tensor Tensor::empty(DType dtype, Shape shape) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  size_t bytes = t.nbytes();
  size_t padded = (bytes + 63) / 64 * 64;
  void* p = padded ? std::aligned_alloc(64, padded) : nullptr;
  QF_CHECK(padded == 0 || p, "out of memory allocating ", bytes, " bytes for a tensor of shape ", shape_str(t.shape_));
  t.storage_ = std::shared_ptr<const void>(p, [](const void* q) { std::free(const_cast<void*>(q)); });
  t.data_ = p;
  t.owned_ = true;
  return t;
}

Tensor Tensor::zeros(DType dtype, Shape shape) {
  Tensor t = empty(dtype, std::move(shape));
  if (t.nbytes()) std::memset(const_cast<void*>(t.data_), 0, t.nbytes());
  return t;
}

Tensor Tensor::borrow(DType dtype, Shape shape, const void* data, std::shared_ptr<const void> keepalive) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.data_ = data;
  t.owned_ = false;
  t.storage_ = std::move(keepalive);
  return t;
}

void* Tensor::raw_mut() {
  QF_CHECK(owned_, "tensor is read-only (borrowed from a mapped file); clone() it first");
  return const_cast<void*>(data_);
}

Tensor Tensor::reshape(Shape shape) const {
  QF_CHECK(shape_numel(shape) == numel(), "cannot reshape ", shape_str(shape_), " to ", shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(dtype_, shape_);
  if (nbytes()) std::memcpy(const_cast<void*>(t.data_), data_, nbytes());
  return t;
}

}  // namespace qf
