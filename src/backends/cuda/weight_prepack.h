// Ahead-of-time weight pre-packing for the FPx GEMM kernel (fpx_gemm.h): done once, on the host,
// when a quantized layer is loaded or written, from the canonical storage (formats/packing.h bit stream of
// codes + formats/quantize.h scales) into the byte blob the kernel reads, and back (the inverse is
// what the tests use to prove nothing is lost). The blob is what LinearArgs::w points at.
//
// fpx_gemm (FPx x BF16, weight Format fpx:channel or fpx:tensor, 5- or 6-bit FPx):
//   [tiles][scales]
//   tiles:  ceil(N/16) x ceil(K/64) tiles of 16 rows x 64 k in row-tile-major order (tile (nt, kt)
//           at (nt * k_tiles + kt) * tile_bytes), each 128 * bits bytes: a 512-byte nibble segment
//           and a 128 r byte high-part segment, laid out so that lane l of a warp reads its 16 + 4r
//           bytes with one 16-byte and one 4r-byte load that map straight onto mma.m16n8k16's A
//           fragments (lowbit_dequant.h gives the byte-level map). Rows past N and k past K are
//           code 0 (+0).
//   scales: ceil(N/16) * 16 FP32, the effective scale of each output row (decode(stored) times the
//           tensor scale where the format has one, exactly formats' scale_of); 0 past N.
//   Every offset is a multiple of 128 bytes, so 16-byte loads stay aligned.
//
// w4a8 (FireQ INT4 x FP8, w4a8_gemm.h; weight Format int4:g128:scale=fp8_e4m3[:tensor_scale]:lut):
//   [codes][group scales][row scales], each part starting on a 128-byte boundary
//   codes:  N rows of K/2 bytes (K % 32 == 0, so every row starts 16-byte aligned), two k per
//           byte, the lower k in the low nibble, as offset-binary nibbles (q + 8, so 0..15): the
//           index into the kernels' per-group lookup table (w4a8_gemm.cu).
//   group scales: N rows of scale_stride() bytes: the ceil(K/128) stored FP8 E4M3 codes of sigma,
//                 then zeros up to a multiple of 4 (the GEMV copies them 4 at a time).
//   row scales:   N F32, the tensor scale t (1 without :tensor_scale) for every row: the form
//                 cuBLASLt's per-row (outer vector) epilogue scale takes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "formats/fpx.h"
#include "formats/quantize.h"

namespace qf::cuda {

// ---- FPx -------------------------------------------------------------------------------------

struct FpxPackedLayout {
  FpxType type;
  int64_t n = 0, k = 0;

  int bits() const { return type.bits(); }
  int hi_bits() const { return type.bits() - 4; }
  int64_t row_tiles() const;
  int64_t k_tiles() const;
  int64_t tile_bytes() const;
  size_t code_bytes() const;    // all tiles
  size_t scale_offset() const;  // == code_bytes()
  size_t scale_count() const;   // row_tiles() * 16
  size_t total_bytes() const;
};

// True for the FPx types the split layout holds: 1 + E + M = 5 or 6.
bool fpx_prepack_supports(FpxType type);
// The layout of an [n, k] weight; throws qf::Error for an unsupported type or a bad shape.
FpxPackedLayout fpx_packed_layout(FpxType type, int64_t n, int64_t k);

// canonical: packed_bytes(n * k, bits) bytes, the row-major codes in formats/packing.h's stream;
// row_scales: n FP32 effective scales.
std::vector<uint8_t> prepack_fpx_weights(FpxType type, int64_t n, int64_t k, const uint8_t* canonical,
                                         const float* row_scales);
// From a quantized matrix whose format is fpx:channel or fpx:tensor (any scale type, with or without
// a tensor scale). Throws qf::Error naming the format otherwise.
std::vector<uint8_t> prepack_fpx_weights(const QuantizedMatrix& q);
// Several matrices of the same type and width stacked along N into one blob (the engine's fused
// q/k/v and gate/up), each row with its own effective scale.
std::vector<uint8_t> prepack_fpx_weights(const std::vector<const QuantizedMatrix*>& parts);
// The inverse (the tests prove with it that nothing is lost): canonical codes (packed_bytes(n * k, bits) bytes) and the n row scales. Throws if a
// padding code (a row past N or a k past K) is not 0: the blob is not one prepack_fpx_weights made.
void unpack_fpx_weights(const FpxPackedLayout& layout, const uint8_t* blob, uint8_t* canonical, float* row_scales);

// ---- w4a8 (INT4 lut x FP8) ------------------------------------------------------------------

inline constexpr int kW4a8GroupSize = 128;

struct W4a8PackedLayout {
  int64_t n = 0, k = 0;

  int64_t scale_cols() const { return (k + kW4a8GroupSize - 1) / kW4a8GroupSize; }
  int64_t scale_stride() const { return (scale_cols() + 3) / 4 * 4; }
  size_t code_bytes() const { return size_t(n) * size_t(k) / 2; }
  size_t scale_offset() const;
  size_t row_scale_offset() const;
  size_t total_bytes() const;
};

// int4:g128:scale=fp8_e4m3:lut, with or without :tensor_scale: the weight formats w4a8 runs.
// Inline (this header needs no CUDA): the runtime asks it in builds without CUDA too.
inline bool is_w4a8_weight_format(const Format& f) {
  return f.element == ElementType::integer(4) && !f.asymmetric && f.granularity == Granularity::group &&
         f.group_size == kW4a8GroupSize && f.scale_type == ElementType::of(ElementKind::fp8_e4m3) && f.lut;
}

// Throws qf::Error unless n >= 1 and k is a positive multiple of 32.
W4a8PackedLayout w4a8_packed_layout(int64_t n, int64_t k);

// From a quantized matrix of format int4:g128:scale=fp8_e4m3:lut (with or without tensor_scale);
// throws qf::Error naming the format otherwise, or for a K that is not a multiple of 32.
std::vector<uint8_t> prepack_w4a8_weights(const QuantizedMatrix& q);
// Several matrices of the same width stacked along N into one blob (the engine's fused q/k/v and
// gate/up): their rows in order, each row keeping its own group scales and tensor scale (which is
// why the blob has a scale per row).
std::vector<uint8_t> prepack_w4a8_weights(const std::vector<const QuantizedMatrix*>& parts);
// The inverse, for the tests: the codes (one two's-complement nibble per byte, row-major, as
// QuantizedMatrix::codes), the stored scale bytes (QuantizedMatrix::scales: scale_cols() per row,
// no padding) and the row scales.
void unpack_w4a8_weights(const W4a8PackedLayout& layout, const uint8_t* blob, uint8_t* codes, uint8_t* scales,
                         float* row_scales);

}  // namespace qf::cuda
