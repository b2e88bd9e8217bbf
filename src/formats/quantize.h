// Scaled quantization of a [rows, cols] F32 matrix into a Format (format.h), and back: the
// reference every quantized kernel's dequantization is checked against.
//
// Elements are integers (int<B>, symmetric or asymmetric) or narrow floats (fp8_e4m3, fp8_e5m2,
// fpx), with one scale per tensor, per row (channel / token) or per group of G consecutive
// elements of a row. Group g of a row covers columns [g*G, min((g+1)*G, cols)): when G does not
// divide cols the last group is shorter (the usual GPTQ convention; cols = 576, G = 128 gives
// groups of 128, 128, 128, 128 and 64), and a row has ceil(cols / G) scales. For one block of
// elements sharing a scale:
//
//   symmetric int<B>:   qmax = 2^(B-1) - 1,  s = absmax / qmax,
//                       q = clamp(rint(x / s), -2^(B-1), qmax),               x' = q * s
//     s uses qmax = 2^(B-1)-1 (7 for int4, 127 for int8), not 2^(B-1): the grid is symmetric and
//     +-absmax are both exact. The code -2^(B-1) is legal but never produced from an F32 scale.
//   asymmetric int<B>:  the range is first widened to contain 0 (lo = min(min, 0), hi = max(max, 0),
//                       as GPTQ does, so 0 is exact and z lands in range),
//                       s = (hi - lo) / (2^B - 1),  z = clamp(rint(-lo / s), 0, 2^B - 1),
//                       q = clamp(rint(x / s) + z, 0, 2^B - 1),                x' = (q - z) * s
//     z is added after rounding so that x / s + z is never rounded as a float.
//   float element:      s = absmax / max_value(element),  code = encode(x / s) (satfinite),
//                       x' = decode(code) * s
//   no granularity:     float elements only; code = encode(x), x' = decode(code).
//
// rint rounds half to even, like CUDA's __float2int_rn and cvt.rni: a GPU quantizer using them
// reproduces these codes exactly. x / s is an IEEE division (div.rn.f32 on the GPU, not a
// multiplication by 1/s, which differs in the last bit for some x).
//
// Scales are stored in format.scale_type. The stored scale is the smallest value of the scale
// type that is >= s (s rounded *up*), so |x / s'| never exceeds the element's range and nothing
// clips: the dequantization error stays <= s'/2 per element for ints. With tensor_scale, an F32
// t = max(s) / max_value(scale_type) (nudged up until max(s) / t fits) is stored too, each block
// stores s / t rounded up, and the effective scale is s' = decode(stored) * t (one F32 product).
// Without tensor_scale s' = decode(stored). Codes are always computed with s', so x' is exactly
// value(code) * s'. A block of zeros gets s' = 0, codes 0 (and z = 0) and dequantizes to zeros.
#pragma once

#include <cstdint>
#include <vector>

#include "formats/format.h"

namespace qf {

struct QuantizedMatrix {
  Format format;
  int64_t rows = 0;
  int64_t cols = 0;
  // One code per element, row-major, unpacked: the low element.bits() bits of each byte
  // (two's complement for symmetric ints, 0..2^B-1 for asymmetric ints, the float code for float
  // elements). packing.h turns these into the canonical bit stream.
  std::vector<uint8_t> codes;
  // Scales in format.scale_type, little-endian, scale_rows() x scale_cols() row-major.
  std::vector<uint8_t> scales;
  // Asymmetric only: one zero point (0..2^B-1) per scale, same layout.
  std::vector<uint8_t> zeros;
  // format.tensor_scale only.
  float tensor_scale = 1.0f;

  int64_t scale_rows() const;
  int64_t scale_cols() const;
  // The effective scale s' of element (row, col); 1 for unscaled formats.
  float scale_of(int64_t row, int64_t col) const;
  // The number a code stands for before scaling: q (symmetric int), q - z (asymmetric int),
  // decode(code) (float element).
  float code_value(int64_t row, int64_t col) const;
};

QuantizedMatrix quantize(const float* x, int64_t rows, int64_t cols, const Format& format);
// out: rows * cols floats, x' = code_value * scale_of.
void dequantize(const QuantizedMatrix& q, float* out);

// Sign-extends a B-bit two's-complement field.
constexpr int32_t sign_extend(uint32_t field, int bits) {
  const uint32_t sign = 1u << (bits - 1);
  return int32_t((field & ((sign << 1) - 1u)) ^ sign) - int32_t(sign);
}

// ---- The steps of quantize(), for algorithms that choose scales themselves ----
// RTN's clipping search shrinks a block's range before taking its scale; GPTQ takes a block's
// scale from weights it has already updated and rounds one column at a time. They build their
// QuantizedMatrix from these functions, which are the ones quantize() itself is made of, so
// what they store dequantizes (dequantize() above) to exactly element_value(code) * scale as
// they computed it.

// One block's scale as stored.
struct BlockScale {
  uint32_t code = 0;  // the stored scale in format.scale_type (0 = +0: an all-zero block)
  float scale = 0;    // s', the scale the codes use: decode(code), times the tensor scale if any
  uint8_t zero = 0;   // asymmetric ints: z
};

// An all-zero QuantizedMatrix of this shape: codes, scales and zeros allocated, tensor_scale = 1. Fill it with set_block_scale and quantize_element.
QuantizedMatrix make_quantized_matrix(const Format& format, int64_t rows, int64_t cols);
// s before storage for a block whose elements span [lo, hi] (widened here to contain 0).
float raw_block_scale(const Format& format, float lo, float hi);
// The tensor scale t quantize() stores when the largest raw block scale is max_raw_scale.
float tensor_scale_for(const Format& format, float max_raw_scale);
// The scale of a (scaled) block spanning [lo, hi], stored as quantize() stores it; tensor_scale
// is t (ignored unless format.tensor_scale). A scale past the scale type's largest value throws,
// as in quantize(), unless saturate is set: then the largest value is stored and the block's
// extreme elements clip to the grid's ends (GPTQ uses this when weights it updated outgrow the
// tensor scale it fixed up front).
BlockScale block_scale(const Format& format, float lo, float hi, float tensor_scale, bool saturate = false);
void set_block_scale(QuantizedMatrix& q, int64_t scale_row, int64_t scale_col, const BlockScale& s);
// The code of x in a block of scale s' and zero point z (s' = 1, z = 0 for unscaled formats).
uint32_t quantize_element(const Format& format, float x, float scale, uint8_t zero);
// The number a code stands for before scaling (see QuantizedMatrix::code_value).
float element_value(const Format& format, uint32_t code, uint8_t zero);

}  // namespace qf
