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
// The inverse (the tests prove with it that nothing is lost): canonical codes (packed_bytes(n * k, bits) bytes) and the n row scales. Throws if a
// padding code (a row past N or a k past K) is not 0: the blob is not one prepack_fpx_weights made.
void unpack_fpx_weights(const FpxPackedLayout& layout, const uint8_t* blob, uint8_t* canonical, float* row_scales);

}  // namespace qf::cuda
