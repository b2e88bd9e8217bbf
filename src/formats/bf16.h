// BF16 (bfloat16): the top 16 bits of an IEEE binary32.
//
//   bit  15   14 ........ 7   6 ........ 0
//       sign  exponent (8)    mantissa (7)      bias 127, same exponent range as F32
//
// Decode is exact (every BF16 is an F32). Encode rounds to nearest, ties to even, on the 16
// dropped bits; a carry out of the mantissa rolls into the exponent and, from the largest
// finite value, into infinity, exactly as IEEE rounding overflows. F32 subnormals map onto BF16
// subnormals (same exponent range), +-0 and +-inf keep their sign.
// NaN: every NaN encodes to 0x7FFF (sign and payload dropped), which is what CUDA's
// __float2bfloat16_rn returns on the host and what cvt.rn.bf16.f32 calls the canonical NaN.
#pragma once

#include <cstdint>

#include "formats/host_device.h"
#include "formats/minifloat.h"

namespace qf {

inline constexpr uint16_t kBf16CanonicalNaN = 0x7FFF;

QF_HOST_DEVICE constexpr float bf16_decode(uint16_t code) { return f32_from_bits(uint32_t(code) << 16); }

QF_HOST_DEVICE constexpr uint16_t bf16_encode(float x) {
  const uint32_t bits = f32_bits(x);
  if (f32_is_nan(bits)) return kBf16CanonicalNaN;
  // Round to nearest even on the low 16 bits: adding 0x7FFF carries into bit 16 exactly when
  // the dropped part exceeds one half; adding the kept LSB as well makes an exact half carry only
  // when the kept part is odd. The sum cannot wrap: the largest non-NaN input is 0xFF800000.
  const uint32_t kept_lsb = (bits >> 16) & 1u;
  return uint16_t((bits + 0x7FFFu + kept_lsb) >> 16);
}

}  // namespace qf
