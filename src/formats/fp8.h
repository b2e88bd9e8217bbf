// FP8: the two 8-bit floats of the OCP FP8 spec, as Hopper's tensor cores and CUDA's cuda_fp8.h
// define them.
//
// E4M3 ("e4m3fn": finite, no infinities)        E5M2 (IEEE-like)
//   bit 7   6 .. 3   2 .. 0                        bit 7   6 ... 2   1 0
//      sign  exp(4)   man(3)     bias 7               sign  exp(5)    man(2)   bias 15
//   normal    (1+m/8) * 2^(e-7),  e = 1..15          normal    (1+m/4) * 2^(e-15), e = 1..30
//   subnormal m/8 * 2^-6  (min 2^-9 = 0x01)          subnormal m/4 * 2^-14 (min 2^-16 = 0x01)
//   max       S.1111.110 = 448 (0x7E)                max       S.11110.11 = 57344 (0x7B)
//   min normal 2^-6 (0x08)                           min normal 2^-14 (0x04)
//   NaN       S.1111.111 (0x7F, 0xFF); no inf        inf S.11111.00 (0x7C); NaN S.11111.{01,10,11}
//
// Encode rounds to nearest, ties to even (minifloat.h), then handles overflow as CUDA's
// __nv_cvt_float_to_fp8 does, in one of its two modes:
//   satfinite (__NV_SATFINITE): a magnitude past the largest finite value, including +-inf,
//             becomes +-max (448 / 57344). This is the mode of cvt.rn.satfinite, the only FP8
//             conversion PTX has, so it is what every GPU kernel does; it is the default.
//   nosat     (__NV_NOSAT): overflow becomes NaN (E4M3, which has no inf) or +-inf (E5M2).
// Overflow means |x| rounds past the largest finite code: for E4M3 |x| > 464, since 464 lies
// halfway between 448 (mantissa 110, even) and the missing 480 and ties go to even, so 464 -> 448;
// for E5M2 |x| >= 61440, halfway between 57344 (mantissa 11, odd) and 65536 (inf code).
// NaN inputs (both modes, both formats) -> 0x7F, a positive NaN (E4M3 0.1111.111, E5M2
// 0.11111.11): cuda_fp8.hpp's host conversion first replaces every F32 NaN by 0x7FFFFFFF. (The
// device instruction is expected to write the same canonical NaN; GPU tests must confirm it.)
// Zeros and underflow keep the sign (-1e-30 -> 0x80).
//
// Decode is exact. E5M2 is the top byte of an F16, so it decodes through f16_decode (inf and NaN
// included). E4M3's NaN codes decode to a quiet F32 NaN with the code's sign.
#pragma once

#include <cstdint>

#include "formats/fp16.h"
#include "formats/host_device.h"
#include "formats/minifloat.h"

namespace qf {

// CUDA's __nv_saturation_t, by the same names.
enum class Fp8Saturation : uint8_t { satfinite, nosat };

inline constexpr int kE4M3ManBits = 3;
inline constexpr int kE4M3Bias = 7;
inline constexpr uint8_t kE4M3MaxCode = 0x7E;  // 448
inline constexpr uint8_t kE4M3NaN = 0x7F;
inline constexpr uint8_t kFp8CanonicalNaN = 0x7F;  // what either encoder returns for a NaN
inline constexpr float kE4M3Max = 448.0f;      // (1 + 6/8) * 2^(15-7)

inline constexpr int kE5M2ManBits = 2;
inline constexpr int kE5M2Bias = 15;
inline constexpr uint8_t kE5M2MaxCode = 0x7B;  // 57344
inline constexpr uint8_t kE5M2Inf = 0x7C;
inline constexpr float kE5M2Max = 57344.0f;    // (1 + 3/4) * 2^(30-15)

QF_HOST_DEVICE constexpr float fp8_e4m3_decode(uint8_t code) {
  const bool negative = (code & 0x80u) != 0;
  const uint32_t magnitude = code & 0x7Fu;
  if (magnitude == kE4M3NaN) return f32_from_bits((negative ? 0x80000000u : 0u) | 0x7FC00000u);
  return with_sign(minifloat_magnitude(magnitude, kE4M3ManBits, kE4M3Bias), negative);
}

QF_HOST_DEVICE constexpr uint8_t fp8_e4m3_encode(float x, Fp8Saturation saturation = Fp8Saturation::satfinite) {
  const uint32_t bits = f32_bits(x);
  if (f32_is_nan(bits)) return kFp8CanonicalNaN;
  const uint8_t sign = uint8_t((bits >> 24) & 0x80u);
  const uint32_t magnitude = round_to_minifloat(bits & 0x7FFFFFFFu, kE4M3ManBits, kE4M3Bias);
  if (magnitude > kE4M3MaxCode)
    return uint8_t(sign | (saturation == Fp8Saturation::satfinite ? kE4M3MaxCode : kE4M3NaN));
  return uint8_t(sign | magnitude);
}

QF_HOST_DEVICE constexpr float fp8_e5m2_decode(uint8_t code) { return f16_decode(uint16_t(code) << 8); }

QF_HOST_DEVICE constexpr uint8_t fp8_e5m2_encode(float x, Fp8Saturation saturation = Fp8Saturation::satfinite) {
  const uint32_t bits = f32_bits(x);
  if (f32_is_nan(bits)) return kFp8CanonicalNaN;
  const uint8_t sign = uint8_t((bits >> 24) & 0x80u);
  const uint32_t magnitude = round_to_minifloat(bits & 0x7FFFFFFFu, kE5M2ManBits, kE5M2Bias);
  if (magnitude > kE5M2MaxCode)
    return uint8_t(sign | (saturation == Fp8Saturation::satfinite ? kE5M2MaxCode : kE5M2Inf));
  return uint8_t(sign | magnitude);
}

}  // namespace qf
