// F16: IEEE 754 binary16.
//
//   bit  15   14 ... 10   9 ........ 0
//       sign  exponent(5)  mantissa (10)        bias 15
//
//   exponent 1..30: (1 + m/1024) * 2^(e-15)     largest 65504 = 0x7BFF, smallest normal 2^-14
//   exponent 0:     m/1024 * 2^-14 (subnormal)  smallest 2^-24 = 0x0001
//   exponent 31:    m == 0 ? inf : NaN
//
// Encode: round to nearest, ties to even (minifloat.h); an overflowing magnitude (|x| >= 65520,
// the midpoint between 65504 and the next binade's 65536, rounded to even) becomes +-inf.
// NaN: every NaN encodes to 0x7FFF (sign and payload dropped), as CUDA's __float2half_rn does on
// the host (cvt.rn.f16.f32's canonical NaN). Decode is exact; NaN codes keep sign and payload
// (shifted into the top of the F32 mantissa) and become quiet (F32 bit 22 set), which is what
// F16C's vcvtph2ps produces for every code (checked exhaustively in the tests).
#pragma once

#include <cstdint>

#include "formats/host_device.h"
#include "formats/minifloat.h"

namespace qf {

inline constexpr int kF16ManBits = 10;
inline constexpr int kF16Bias = 15;
inline constexpr uint16_t kF16Inf = 0x7C00;  // exponent field all ones, mantissa 0
inline constexpr uint16_t kF16CanonicalNaN = 0x7FFF;

QF_HOST_DEVICE constexpr float f16_decode(uint16_t code) {
  const bool negative = (code & 0x8000u) != 0;
  const uint32_t magnitude = code & 0x7FFFu;
  // inf or NaN: all-ones exponent, mantissa (payload) carried over; a NaN is made quiet (F32
  // bit 22 set), as IEEE 754 conversions and F16C do.
  const uint32_t payload = (magnitude & 0x3FFu) << 13;
  const uint32_t special = 0x7F800000u | payload | (mask_if(payload != 0) & 0x400000u);
  const uint32_t finite = f32_bits(minifloat_magnitude(magnitude, kF16ManBits, kF16Bias));
  const uint32_t is_special = mask_if(magnitude >= kF16Inf);
  return with_sign(f32_from_bits((special & is_special) | (finite & ~is_special)), negative);
}

QF_HOST_DEVICE constexpr uint16_t f16_encode(float x) {
  const uint32_t bits = f32_bits(x);
  if (f32_is_nan(bits)) return kF16CanonicalNaN;
  uint32_t magnitude = round_to_minifloat(bits & 0x7FFFFFFFu, kF16ManBits, kF16Bias);
  if (magnitude > kF16Inf) magnitude = kF16Inf;
  return uint16_t(((bits >> 16) & 0x8000u) | magnitude);
}

}  // namespace qf
