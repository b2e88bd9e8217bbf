// FPx eXmY: small floats in which every code is a finite number (no inf, no NaN), the family of
// FP6-LLM's FP6 e3m2 / FP5 e2m2 and of OCP MX's FP6 e2m3 and FP4 e2m1.
//
//   bit  e+m    e+m-1 ... m    m-1 ... 0
//        sign   exponent (e)   mantissa (m)       bias = 2^(e-1) - 1,  1 <= e,  e + m <= 7
//
//   exponent 1 .. 2^e-1: (1 + f/2^m) * 2^(E - bias)   (the all-ones exponent is an ordinary binade)
//   exponent 0:          f/2^m * 2^(1 - bias)         (subnormal)
//   max = (2 - 2^-m) * 2^(2^e - 1 - bias), min normal = 2^(1 - bias), min subnormal = 2^(1-bias-m)
//
//   name       bits  bias  max    min normal  min subnormal
//   fp6_e3m2    6     3    28     0.25        0.0625
//   fp6_e2m3    6     1    7.5    1           0.125
//   fp5_e2m2    5     1    7      1           0.25
//   fp4_e2m1    4     1    6      1           0.5
//
// Encode: round to nearest, ties to even (minifloat.h); any magnitude past max, +-inf included,
// saturates to +-max; underflow keeps the sign (-0); NaN becomes +max. These are the rules of
// CUDA's cvt.rn.satfinite.{e3m2x2,e2m3x2,e2m1x2}.f32 and of the host code in cuda_fp6.hpp /
// cuda_fp4.hpp, which tests/formats/test_cuda_agreement.cpp checks code by code.
// Only the low 1+e+m bits of a code are read by decode; encode sets no other bit.
#pragma once

#include <cstdint>

#include "formats/host_device.h"
#include "formats/minifloat.h"

namespace qf {

struct FpxType {
  int exp_bits = 3;
  int man_bits = 2;

  QF_HOST_DEVICE static constexpr bool valid(int e, int m) { return e >= 1 && m >= 0 && e + m <= 7; }
  QF_HOST_DEVICE constexpr int bits() const { return 1 + exp_bits + man_bits; }
  QF_HOST_DEVICE constexpr int bias() const { return (1 << (exp_bits - 1)) - 1; }
  QF_HOST_DEVICE constexpr uint32_t sign_mask() const { return 1u << (exp_bits + man_bits); }
  QF_HOST_DEVICE constexpr uint32_t max_magnitude_code() const { return sign_mask() - 1u; }
  QF_HOST_DEVICE constexpr float max_value() const {
    return minifloat_magnitude(max_magnitude_code(), man_bits, bias());
  }
  friend constexpr bool operator==(const FpxType&, const FpxType&) = default;
};

inline constexpr FpxType kFp6E3M2{3, 2};
inline constexpr FpxType kFp6E2M3{2, 3};
inline constexpr FpxType kFp5E2M2{2, 2};
inline constexpr FpxType kFp4E2M1{2, 1};

QF_HOST_DEVICE constexpr float fpx_decode(uint8_t code, FpxType type) {
  const uint32_t magnitude = code & type.max_magnitude_code();
  return with_sign(minifloat_magnitude(magnitude, type.man_bits, type.bias()), (code & type.sign_mask()) != 0);
}

QF_HOST_DEVICE constexpr uint8_t fpx_encode(float x, FpxType type) {
  const uint32_t bits = f32_bits(x);
  if (f32_is_nan(bits)) return uint8_t(type.max_magnitude_code());
  uint32_t magnitude = round_to_minifloat(bits & 0x7FFFFFFFu, type.man_bits, type.bias());
  if (magnitude > type.max_magnitude_code()) magnitude = type.max_magnitude_code();
  return uint8_t(((bits >> 31) != 0 ? type.sign_mask() : 0u) | magnitude);
}

}  // namespace qf
