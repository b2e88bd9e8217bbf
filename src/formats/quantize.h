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
//
// lut (FireQ, arXiv 2505.20839; symmetric int<B>, scale= fp8_e4m3 or fp8_e5m2, format.h): the
// kernel turns a block's codes into FP8 through a 2^B-entry table LUT[q] = round(q * sigma),
// sigma = decode(stored), and multiplies by t (and the activation's scale) in its epilogue. So
//                       x' = round_scale_type(q * sigma) * t        (t = 1 without tensor_scale)
//   with round_scale_type = encode_float_element (nearest, ties to even, satfinite) then decode;
//   q * sigma is exact in F32 (a B-bit integer times a 3- or 2-bit-mantissa float), and the last
//   product is one F32 multiplication. s = absmax / qmax as for symmetric ints, and sigma is s / t
//   rounded up as above, but the largest usable stored scale is max(scale_type) / 2^(B-1)
//   (max_stored_scale: 56 for e4m3 with int4, 7168 for e5m2), so every table entry, q * sigma for q
//   in [-2^(B-1), qmax], is finite and unsaturated. tensor_scale_for maps max(s) onto that bound;
//   without tensor_scale a block whose s exceeds it throws (block_scale's saturate clamps instead).
//   The code of x is the q in [-2^(B-1), qmax] whose x' is nearest to x: the search starts at
//   clamp(rint(x / s'), -2^(B-1), qmax) and walks towards x while x' improves (x' is monotone in q,
//   and the FP8 rounding can make a neighbour closer); ties keep the code nearer the start (the
//   rint one). An all-zero block: sigma = 0, all codes 0, x' = 0.
// dequantized_element below is the one place x' is computed from a code, for every format.
#pragma once

#include <cstdint>
#include <vector>

#include "formats/format.h"

namespace qf {

// One block's scale as stored (the steps of quantize(), below, make and use it).
struct BlockScale {
  uint32_t code = 0;  // the stored scale in format.scale_type (0 = +0: an all-zero block)
  float scale = 0;    // s', the scale the codes use: decode(code), times the tensor scale if any
  uint8_t zero = 0;   // asymmetric ints: z
  float sigma = 0;    // decode(code), the stored scale as a number (lut formats build their table from it)
  float tensor_scale = 1.0f;  // t (1 without format.tensor_scale)
};

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
  // The effective scale s' of element (row, col); 1 for unscaled formats. For lut formats this
  // is sigma * t, whose product with code_value is not x' (use value()).
  float scale_of(int64_t row, int64_t col) const;
  // The number a code stands for before scaling: q (symmetric int), q - z (asymmetric int),
  // decode(code) (float element).
  float code_value(int64_t row, int64_t col) const;
  // The scale of element (row, col)'s block as set_block_scale stored it (with sigma and t
  // decoded); {code 0, scale 1} for unscaled formats.
  BlockScale block_of(int64_t row, int64_t col) const;
  // x' of element (row, col): dequantized_element of its code in its block. dequantize() is this.
  float value(int64_t row, int64_t col) const;
};

QuantizedMatrix quantize(const float* x, int64_t rows, int64_t cols, const Format& format);
// out: rows * cols floats, x' = value(row, col) (code_value * scale_of except for lut formats).
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
// what they store dequantizes (dequantize() above) to exactly dequantized_element(code, block)
// as they computed it.

// An all-zero QuantizedMatrix of this shape: codes, scales and zeros allocated, tensor_scale = 1. Fill it with set_block_scale and quantize_element.
QuantizedMatrix make_quantized_matrix(const Format& format, int64_t rows, int64_t cols);
// s before storage for a block whose elements span [lo, hi] (widened here to contain 0).
float raw_block_scale(const Format& format, float lo, float hi);
// The largest value a block's stored scale may take: max(scale_type), or for lut formats
// max(scale_type) / 2^(B-1) so that every table entry q * sigma stays finite (see above).
float max_stored_scale(const Format& format);
// The tensor scale t quantize() stores when the largest raw block scale is max_raw_scale: the
// smallest F32 with max_raw_scale / t <= max_stored_scale(format).
float tensor_scale_for(const Format& format, float max_raw_scale);
// The scale of a (scaled) block spanning [lo, hi], stored as quantize() stores it; tensor_scale
// is t (ignored unless format.tensor_scale). A scale past the scale type's largest value throws,
// as in quantize(), unless saturate is set: then the largest value is stored and the block's
// extreme elements clip to the grid's ends (GPTQ uses this when weights it updated outgrow the
// tensor scale it fixed up front).
BlockScale block_scale(const Format& format, float lo, float hi, float tensor_scale, bool saturate = false);
void set_block_scale(QuantizedMatrix& q, int64_t scale_row, int64_t scale_col, const BlockScale& s);
// The code of x in a block (BlockScale{0, 1, 0} for unscaled formats): the nearest code, for lut
// formats by the search described above.
uint32_t quantize_element(const Format& format, float x, const BlockScale& block);
// The same from s' and z alone, for formats other than lut (a lut format throws: it needs sigma and t).
uint32_t quantize_element(const Format& format, float x, float scale, uint8_t zero);
// x', the value a code stands for in a block: element_value(code, zero) * scale, or for lut
// formats decode(lut_entry(code, sigma)) * t. Everything that needs a quantized value calls this.
float dequantized_element(const Format& format, uint32_t code, const BlockScale& block);
// lut formats: the table entry of a code in a block of stored scale sigma, as a scale_type code
// (the FP8 byte the kernel feeds the tensor cores): encode(q * sigma), q = sign_extend(code).
uint32_t lut_entry(const Format& format, uint32_t code, float sigma);
// The number a code stands for before scaling (see QuantizedMatrix::code_value).
float element_value(const Format& format, uint32_t code, uint8_t zero);

}  // namespace qf
