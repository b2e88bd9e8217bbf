// Conversions between the plain float storage types F32, F16 and BF16, bit for bit those of
// bf16.h / fp16.h (round to nearest even, canonical NaN). Loaders call to_f32 on every F16/BF16
// checkpoint tensor, so the loops are written to auto-vectorise (AVX2 at -march=x86-64-v3) and
// are spread over the thread pool for large tensors.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace qf {

void bf16_to_f32(const uint16_t* src, float* dst, int64_t n);
void f16_to_f32(const uint16_t* src, float* dst, int64_t n);
void f32_to_bf16(const float* src, uint16_t* dst, int64_t n);
void f32_to_f16(const float* src, uint16_t* dst, int64_t n);

// A tensor of `dtype` (F32, F16 or BF16) holding t's values (t: F32, F16 or BF16). Converting
// to t's own dtype returns t itself (same storage, no copy); otherwise a new owned tensor.
Tensor convert(const Tensor& t, DType dtype);
inline Tensor to_f32(const Tensor& t) { return convert(t, DType::F32); }

}  // namespace qf
