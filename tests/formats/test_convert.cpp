// convert.h: Tensor conversions equal the scalar codecs element by element (the parallel,
// vectorised path included), same-dtype conversion shares storage, bad dtypes are refused.
// Also reports the conversion throughput (no threshold: the number is for the report).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <random>

#include "core/error.h"
#include "core/thread_pool.h"
#include "float_reference.h"
#include "formats/bf16.h"
#include "formats/convert.h"
#include "formats/fp16.h"

namespace qf {
namespace {

// Every 16-bit pattern, then the same again (so the tensor is large enough to be split over the
// thread pool: 2^20 elements > the parallel grain).
Tensor all_16bit_codes(DType dtype) {
  Tensor t = Tensor::empty(dtype, {16, 65536});
  uint16_t* p = static_cast<uint16_t*>(t.raw_mut());
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = uint16_t(i);
  return t;
}

TEST(Convert, WidenEqualsDecode) {
  for (DType dt : {DType::BF16, DType::F16}) {
    const Tensor src = all_16bit_codes(dt);
    const Tensor f = to_f32(src);
    ASSERT_EQ(f.dtype(), DType::F32);
    ASSERT_EQ(f.shape(), src.shape());
    const uint16_t* s = static_cast<const uint16_t*>(src.raw());
    for (int64_t i = 0; i < f.numel(); ++i) {
      const float want = dt == DType::BF16 ? bf16_decode(s[i]) : f16_decode(s[i]);
      ASSERT_EQ(test::bits_of(f.data<float>()[i]), test::bits_of(want)) << dtype_name(dt) << " code " << s[i];
    }
  }
}

TEST(Convert, NarrowEqualsEncode) {
  const std::vector<float> inputs = test::sweep_inputs(997);
  Tensor src = Tensor::empty(DType::F32, {int64_t(inputs.size())});
  std::copy(inputs.begin(), inputs.end(), src.data_mut<float>());
  for (DType dt : {DType::BF16, DType::F16}) {
    const Tensor out = convert(src, dt);
    ASSERT_EQ(out.dtype(), dt);
    const uint16_t* o = static_cast<const uint16_t*>(out.raw());
    for (size_t i = 0; i < inputs.size(); ++i)
      ASSERT_EQ(o[i], dt == DType::BF16 ? bf16_encode(inputs[i]) : f16_encode(inputs[i])) << inputs[i];
  }
}

TEST(Convert, BetweenHalvesRoundsOnce) {
  // F16 -> BF16 goes through F32 exactly, so it equals bf16_encode(f16_decode(h)).
  const Tensor src = all_16bit_codes(DType::F16);
  const Tensor out = convert(src, DType::BF16);
  const uint16_t* s = static_cast<const uint16_t*>(src.raw());
  const uint16_t* o = static_cast<const uint16_t*>(out.raw());
  for (int64_t i = 0; i < 65536; ++i) ASSERT_EQ(o[i], bf16_encode(f16_decode(s[i])));
}

TEST(Convert, SameDtypeSharesStorage) {
  Tensor t = Tensor::zeros(DType::F32, {3, 4});
  EXPECT_EQ(to_f32(t).raw(), t.raw());
  Tensor b = Tensor::zeros(DType::BF16, {2});
  EXPECT_EQ(convert(b, DType::BF16).raw(), b.raw());
  EXPECT_EQ(to_f32(Tensor::empty(DType::F16, {0, 5})).numel(), 0);
}

TEST(Convert, RefusesOtherDtypes) {
  EXPECT_THROW(to_f32(Tensor::zeros(DType::I8, {4})), Error);
  EXPECT_THROW(convert(Tensor::zeros(DType::F32, {4}), DType::I32), Error);
}

TEST(Convert, Throughput) {
  const int64_t n = int64_t(1) << 26;  // 64 Mi elements: 256 MiB of F32
  std::vector<float> f(static_cast<size_t>(n));
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  for (int64_t i = 0; i < n; i += 1024) f[size_t(i)] = normal(rng);
  std::vector<uint16_t> h(static_cast<size_t>(n));
  const auto time = [&](const char* what, auto fn) {
    fn();  // touch the pages first
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[ convert  ] %-12s %6.2f Gelem/s (%d threads)\n", what, double(n) / s / 1e9, num_threads());
  };
  time("f32->bf16", [&] { f32_to_bf16(f.data(), h.data(), n); });
  time("f32->f16", [&] { f32_to_f16(f.data(), h.data(), n); });
  time("bf16->f32", [&] { bf16_to_f32(h.data(), f.data(), n); });
  time("f16->f32", [&] { f16_to_f32(h.data(), f.data(), n); });
}

}  // namespace
}  // namespace qf
