// The one rounding rule every narrow float format in qforge shares: F32 -> a binary float with
// `man_bits` stored mantissa bits and exponent bias `bias`, round to nearest, ties to even, with
// gradual underflow (subnormals when the exponent field is 0). The format headers (fp16.h,
// fp8.h, fpx.h) add only what differs between formats: how many exponent codes exist, and what
// overflow, infinity and NaN become.
//
// The trick that keeps this branch-light: a float format's magnitude codes
// (exponent field << man_bits | mantissa field) are ordered like the values they encode, and
// rounding up out of a mantissa simply carries into the exponent field. So the magnitude code
// of |x| is computed here as if the exponent field had no upper limit; a result past the
// format's largest finite code means "overflow", and each format decides what that becomes.
#pragma once

#include <cstdint>

#include "formats/host_device.h"

namespace qf {

// 2^k as a float, for k in [-126, 127] (normal floats only).
QF_HOST_DEVICE constexpr float pow2f(int k) { return f32_from_bits(uint32_t(k + 127) << 23); }

// Magnitude code of |x| rounded to nearest-even, exponent field unbounded above.
//   abs_bits: the F32 bits of |x| (sign cleared); must not be a NaN. +inf (exponent 255,
//             mantissa 0) behaves as 2^128 and therefore always overflows.
//   man_bits: stored mantissa bits of the target, 0..10.
//   bias:     exponent bias of the target; its smallest normal is 2^(1-bias).
// The value of |x| is sig * 2^(e - 150) with sig the 24-bit significand (implicit bit
// included for normal floats) and e its exponent field (1 for float subnormals). In the target,
// a normal number's magnitude code is (E << man_bits) + frac with E = e - 127 + bias; written as
// ((E - 1) << man_bits) + (sig >> shift) the implicit bit of sig adds the missing 1 << man_bits,
// so the same expression also serves inputs without an implicit bit. Below the target's normal
// range (E < 1) the significand is shifted right by 1 - E more places and the exponent part is 0:
// that is a subnormal, and a carry out of it lands on the smallest normal, as it should.
QF_HOST_DEVICE constexpr uint32_t round_to_minifloat(uint32_t abs_bits, int man_bits, int bias) {
  const uint32_t f32_exponent = abs_bits >> 23;
  const uint32_t significand = (abs_bits & 0x7FFFFFu) | (f32_exponent != 0 ? 0x800000u : 0u);
  const int target_exponent = int(f32_exponent != 0 ? f32_exponent : 1) - 127 + bias;
  const int subnormal_extra = target_exponent < 1 ? 1 - target_exponent : 0;
  int shift = 23 - man_bits + subnormal_extra;
  // The significand is below 2^24, so any shift of 25 or more keeps nothing and leaves a
  // remainder below half of the last kept place: the result is 0 whatever the true shift.
  if (shift > 25) shift = 25;
  const uint32_t exponent_part = target_exponent < 1 ? 0u : uint32_t(target_exponent - 1);
  const uint32_t truncated = (exponent_part << man_bits) + (significand >> shift);
  const uint32_t remainder = significand & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  // A tie goes to the even code. With man_bits >= 1 that is the even mantissa of IEEE 754; it
  // also defines ties for formats without mantissa bits (e.g. fp3_e2m0), whose codes are powers
  // of two and whose significands are all 1.
  return truncated + ((remainder > half || (remainder == half && (truncated & 1u))) ? 1u : 0u);
}

// All-ones if `condition`, else 0: for choosing between values computed by float arithmetic
// without a branch. GCC (with the default -ftrapping-math) turns a ?: between such values into a
// branch, and a branch stops the decoding loops (convert.cpp) from vectorising.
QF_HOST_DEVICE constexpr uint32_t mask_if(bool condition) { return 0u - uint32_t(condition); }

// |value| of a finite magnitude code (the inverse of round_to_minifloat on its range), for
// bias <= 127 (every format here). A subnormal f/2^m * 2^(1-bias) is decoded as the normal number
// with the same mantissa field and exponent field 1, (1 + f/2^m) * 2^(1-bias), minus 2^(1-bias):
// an exact subtraction (Sterbenz). Normal numbers subtract +0, which leaves them unchanged.
QF_HOST_DEVICE constexpr float minifloat_magnitude(uint32_t magnitude_code, int man_bits, int bias) {
  const uint32_t exponent_field = magnitude_code >> man_bits;
  const uint32_t mantissa_field = magnitude_code & ((1u << man_bits) - 1u);
  const uint32_t subnormal = mask_if(exponent_field == 0);
  const uint32_t biased_exponent = (exponent_field | (subnormal & 1u)) - uint32_t(bias) + 127u;
  const float with_implicit_one = f32_from_bits((biased_exponent << 23) | (mantissa_field << (23 - man_bits)));
  return with_implicit_one - f32_from_bits(f32_bits(pow2f(1 - bias)) & subnormal);
}

// x with the sign bit of `negative` applied (for +-0 too).
QF_HOST_DEVICE constexpr float with_sign(float magnitude, bool negative) {
  return f32_from_bits(f32_bits(magnitude) | (negative ? 0x80000000u : 0u));
}

QF_HOST_DEVICE constexpr bool f32_is_nan(uint32_t bits) { return (bits & 0x7FFFFFFFu) > 0x7F800000u; }

}  // namespace qf
