#include "formats/convert.h"

#include "core/error.h"
#include "core/thread_pool.h"
#include "formats/bf16.h"
#include "formats/fp16.h"

namespace qf {
namespace {

// Below this many elements a conversion is not worth waking the pool; above it, chunks of this
// size keep each thread streaming through memory.
constexpr int64_t kParallelGrain = int64_t(1) << 18;

// The element-wise loop, written plainly so that the codec call inlines and vectorises.
template <typename Src, typename Dst, typename Fn>
void convert_loop(const Src* src, Dst* dst, int64_t n, Fn fn) {
  parallel_for(n, kParallelGrain, [&](int64_t begin, int64_t end) {
    const Src* __restrict s = src;
    Dst* __restrict d = dst;
    for (int64_t i = begin; i < end; ++i) d[i] = fn(s[i]);
  });
}

}  // namespace

void bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
  convert_loop(src, dst, n, [](uint16_t h) { return bf16_decode(h); });
}
void f16_to_f32(const uint16_t* src, float* dst, int64_t n) {
  convert_loop(src, dst, n, [](uint16_t h) { return f16_decode(h); });
}
void f32_to_bf16(const float* src, uint16_t* dst, int64_t n) {
  convert_loop(src, dst, n, [](float x) { return bf16_encode(x); });
}
void f32_to_f16(const float* src, uint16_t* dst, int64_t n) {
  convert_loop(src, dst, n, [](float x) { return f16_encode(x); });
}

Tensor convert(const Tensor& t, DType dtype) {
  const auto plain = [](DType d) { return d == DType::F32 || d == DType::F16 || d == DType::BF16; };
  QF_CHECK(plain(t.dtype()), "convert: source tensor has dtype ", dtype_name(t.dtype()), "; expected F32, F16 or BF16");
  QF_CHECK(plain(dtype), "convert: target dtype ", dtype_name(dtype), " is not F32, F16 or BF16");
  if (t.dtype() == dtype) return t;
  Tensor out = Tensor::empty(dtype, t.shape());
  const int64_t n = t.numel();
  if (n == 0) return out;
  if (dtype == DType::F32) {
    const auto* src = static_cast<const uint16_t*>(t.raw());
    if (t.dtype() == DType::BF16) bf16_to_f32(src, out.data_mut<float>(), n);
    else f16_to_f32(src, out.data_mut<float>(), n);
    return out;
  }
  // To F16 / BF16: from F32 directly; between F16 and BF16 through F32, which is exact on the way
  // in, so the result is the single rounding of the source value.
  Tensor f32 = t.dtype() == DType::F32 ? t : convert(t, DType::F32);
  const float* src = f32.data<float>();
  uint16_t* dst = static_cast<uint16_t*>(out.raw_mut());
  if (dtype == DType::BF16) f32_to_bf16(src, dst, n);
  else f32_to_f16(src, dst, n);
  return out;
}

}  // namespace qf
