#include "backends/cuda/weight_prepack.h"

#include <cmath>
#include <cstring>

#include "backends/cuda/lowbit_dequant.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "formats/packing.h"

namespace qf::cuda {

// ---- FPx -------------------------------------------------------------------------------------

int64_t FpxPackedLayout::row_tiles() const { return (n + kFpxTileRows - 1) / kFpxTileRows; }
int64_t FpxPackedLayout::k_tiles() const { return (k + kFpxTileK - 1) / kFpxTileK; }
int64_t FpxPackedLayout::tile_bytes() const { return fpx_tile_bytes(bits()); }
size_t FpxPackedLayout::code_bytes() const { return size_t(row_tiles()) * size_t(k_tiles()) * size_t(tile_bytes()); }
size_t FpxPackedLayout::scale_offset() const { return code_bytes(); }
size_t FpxPackedLayout::scale_count() const { return size_t(row_tiles()) * kFpxTileRows; }
size_t FpxPackedLayout::total_bytes() const { return scale_offset() + scale_count() * sizeof(float); }

bool fpx_prepack_supports(FpxType type) {
  return FpxType::valid(type.exp_bits, type.man_bits) && (type.bits() == 5 || type.bits() == 6);
}

FpxPackedLayout fpx_packed_layout(FpxType type, int64_t n, int64_t k) {
  QF_CHECK(fpx_prepack_supports(type), "FPx pre-packing: fp", type.bits(), "_e", type.exp_bits, "m", type.man_bits,
           " is not a 5- or 6-bit FPx type (the split layout stores 4 + 1 or 4 + 2 bits per code)");
  QF_CHECK(n >= 1 && k >= 1, "FPx pre-packing: bad weight shape [", n, ", ", k, "]");
  return FpxPackedLayout{type, n, k};
}

namespace {

// Where the parts of the codes of one tile go. code_at(row, col) gives the code (0 outside the
// matrix); the same walk, reversed, unpacks.
struct FpxTileWalk {
  const FpxPackedLayout& layout;

  // Calls fn(nibble_byte_offset, nibble_shift, hi_byte_offset, hi_shift, row, col) for every code
  // of tile (nt, kt): its low 4 bits live at bits nibble_shift.. of the nibble byte, its top r
  // bits at bits hi_shift.. of the high-part byte (offsets within the tile).
  template <typename Fn>
  void for_each_code(int64_t nt, int64_t kt, Fn&& fn) const {
    const int r = layout.hi_bits();
    const int per_word = 8 / r;
    for (int lane = 0; lane < 32; ++lane) {
      const int g = lane / 4, t = lane % 4;
      for (int j = 0; j < 4; ++j)
        for (int i = 0; i < 4; ++i) {
          const int64_t col = kt * kFpxTileK + fpx_tile_k(t, j, i);
          const int nibble_byte = fpx_lane_nibble_offset(lane) + 4 * j + i;
          for (int h = 0; h < 2; ++h) {  // h = 0: row g (high nibble), 1: row g+8 (low nibble)
            const int64_t row = nt * kFpxTileRows + g + 8 * h;
            const int f = 2 * j + h;  // byte-form word
            const int hi_byte = fpx_lane_hi_offset(lane, r) + 4 * (f / per_word) + i;
            const int hi_shift = 8 - r - r * (f % per_word);
            fn(nibble_byte, h == 0 ? 4 : 0, hi_byte, hi_shift, row, col);
          }
        }
    }
  }
};

std::vector<uint8_t> prepack_fpx_codes(const FpxPackedLayout& layout, const uint8_t* codes_one_per_byte,
                                       const float* row_scales) {
  std::vector<uint8_t> blob(layout.total_bytes(), 0);
  const int bits = layout.bits();
  const int64_t k_tiles = layout.k_tiles();
  const FpxTileWalk walk{layout};
  parallel_for(layout.row_tiles(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t nt = begin; nt < end; ++nt)
      for (int64_t kt = 0; kt < k_tiles; ++kt) {
        uint8_t* tile = blob.data() + size_t(nt * k_tiles + kt) * size_t(layout.tile_bytes());
        walk.for_each_code(nt, kt, [&](int nib_byte, int nib_shift, int hi_byte, int hi_shift, int64_t row, int64_t col) {
          if (row >= layout.n || col >= layout.k) return;  // padding stays code 0
          const uint32_t code = codes_one_per_byte[size_t(row * layout.k + col)];
          QF_CHECK((code >> bits) == 0, "FPx pre-packing: code ", code, " at (", row, ", ", col, ") does not fit in ",
                   bits, " bits");
          tile[nib_byte] = uint8_t(tile[nib_byte] | (code & 0xFu) << nib_shift);
          tile[hi_byte] = uint8_t(tile[hi_byte] | (code >> 4) << hi_shift);
        });
      }
  });
  std::memcpy(blob.data() + layout.scale_offset(), row_scales, size_t(layout.n) * sizeof(float));
  return blob;
}

}  // namespace

std::vector<uint8_t> prepack_fpx_weights(FpxType type, int64_t n, int64_t k, const uint8_t* canonical,
                                         const float* row_scales) {
  const FpxPackedLayout layout = fpx_packed_layout(type, n, k);
  std::vector<uint8_t> codes(size_t(n * k));
  unpack_bits(canonical, n * k, layout.bits(), codes.data());
  return prepack_fpx_codes(layout, codes.data(), row_scales);
}

std::vector<uint8_t> prepack_fpx_weights(const std::vector<const QuantizedMatrix*>& parts) {
  QF_CHECK(!parts.empty(), "FPx pre-packing: no matrices");
  const Format& f = parts.front()->format;
  const int64_t cols = parts.front()->cols;
  int64_t rows = 0;
  for (const QuantizedMatrix* q : parts) {
    const Format& g = q->format;
    QF_CHECK(g.element.kind == ElementKind::fpx && fpx_prepack_supports(g.element.fpx_type()) &&
                 (g.granularity == Granularity::channel || g.granularity == Granularity::tensor),
             "FPx pre-packing: weight format ", g.str(),
             " is not a 5- or 6-bit FPx with one scale per output channel or per tensor (e.g. fp6_e3m2:channel)");
    QF_CHECK(g.element == f.element, "FPx pre-packing: stacked matrices of different types (", g.str(), ", ", f.str(), ")");
    QF_CHECK(q->cols == cols, "FPx pre-packing: stacked matrices of different widths (", q->cols, " and ", cols, ")");
    QF_CHECK(q->codes.size() == size_t(q->rows * q->cols), "FPx pre-packing: ", q->codes.size(), " codes for a [",
             q->rows, ", ", q->cols, "] matrix");
    rows += q->rows;
  }
  const FpxPackedLayout layout = fpx_packed_layout(f.element.fpx_type(), rows, cols);
  if (parts.size() == 1) {
    const QuantizedMatrix& q = *parts.front();
    std::vector<float> scales(size_t(q.rows));
    for (int64_t r = 0; r < q.rows; ++r) scales[size_t(r)] = q.scale_of(r, 0);
    return prepack_fpx_codes(layout, q.codes.data(), scales.data());
  }
  // Stacked (the engine's fused q/k/v and gate/up): the rows in order, each with its own
  // effective scale.
  std::vector<uint8_t> codes;
  std::vector<float> scales;
  codes.reserve(size_t(rows * cols));
  scales.reserve(size_t(rows));
  for (const QuantizedMatrix* q : parts) {
    codes.insert(codes.end(), q->codes.begin(), q->codes.end());
    for (int64_t r = 0; r < q->rows; ++r) scales.push_back(q->scale_of(r, 0));
  }
  return prepack_fpx_codes(layout, codes.data(), scales.data());
}

std::vector<uint8_t> prepack_fpx_weights(const QuantizedMatrix& q) { return prepack_fpx_weights({&q}); }

void unpack_fpx_weights(const FpxPackedLayout& layout, const uint8_t* blob, uint8_t* canonical, float* row_scales) {
  const int r = layout.hi_bits();
  const int64_t k_tiles = layout.k_tiles();
  std::vector<uint8_t> codes(size_t(layout.n * layout.k));
  const FpxTileWalk walk{layout};
  for (int64_t nt = 0; nt < layout.row_tiles(); ++nt)
    for (int64_t kt = 0; kt < k_tiles; ++kt) {
      const uint8_t* tile = blob + size_t(nt * k_tiles + kt) * size_t(layout.tile_bytes());
      walk.for_each_code(nt, kt, [&](int nib_byte, int nib_shift, int hi_byte, int hi_shift, int64_t row, int64_t col) {
        const uint32_t code = ((tile[nib_byte] >> nib_shift) & 0xFu) | ((uint32_t(tile[hi_byte]) >> hi_shift) & ((1u << r) - 1u)) << 4;
        if (row >= layout.n || col >= layout.k) {
          QF_CHECK(code == 0, "FPx unpacking: padding code (", row, ", ", col, ") of tile (", nt, ", ", kt, ") is ", code,
                   ", not 0: not a blob made by prepack_fpx_weights for [", layout.n, ", ", layout.k, "]");
          return;
        }
        codes[size_t(row * layout.k + col)] = uint8_t(code);
      });
    }
  pack_bits(codes.data(), layout.n * layout.k, layout.bits(), canonical);
  std::memcpy(row_scales, blob + layout.scale_offset(), size_t(layout.n) * sizeof(float));
  for (size_t i = size_t(layout.n); i < layout.scale_count(); ++i) {
    float pad;
    std::memcpy(&pad, blob + layout.scale_offset() + i * sizeof(float), sizeof pad);
    QF_CHECK(pad == 0.0f, "FPx unpacking: padding scale ", i, " is ", pad, ", not 0");
  }
}

// ---- w4a8 ------------------------------------------------------------------------------------

namespace {
constexpr size_t align128(size_t x) { return (x + 127) / 128 * 128; }
}  // namespace

size_t W4a8PackedLayout::scale_offset() const { return align128(code_bytes()); }
size_t W4a8PackedLayout::row_scale_offset() const { return align128(scale_offset() + size_t(n) * size_t(scale_stride())); }
size_t W4a8PackedLayout::total_bytes() const { return align128(row_scale_offset() + size_t(n) * sizeof(float)); }

W4a8PackedLayout w4a8_packed_layout(int64_t n, int64_t k) {
  QF_CHECK(n >= 1 && k >= 32 && k % 32 == 0, "w4a8 pre-packing: weight shape [", n, ", ", k,
           "] unsupported (K must be a positive multiple of 32: each kernel lane reads 32 codes per row)");
  return W4a8PackedLayout{n, k};
}

std::vector<uint8_t> prepack_w4a8_weights(const std::vector<const QuantizedMatrix*>& parts) {
  QF_CHECK(!parts.empty(), "w4a8 pre-packing: no matrices");
  int64_t rows = 0;
  const int64_t cols = parts.front()->cols;
  const ElementType e4m3 = ElementType::of(ElementKind::fp8_e4m3);
  for (const QuantizedMatrix* q : parts) {
    const Format& f = q->format;
    QF_CHECK(is_w4a8_weight_format(f), "w4a8 pre-packing: format ", f.str(),
             " is not int4:g128:scale=fp8_e4m3:lut (optionally :tensor_scale)");
    QF_CHECK(q->cols == cols, "w4a8 pre-packing: stacked matrices of different widths (", q->cols, " and ", cols, ")");
    QF_CHECK(q->scales.size() == size_t(q->rows * q->scale_cols()), "w4a8 pre-packing: the matrix has ",
             q->scales.size(), " scale bytes, expected ", q->rows * q->scale_cols());
    // The lut format keeps every |q sigma| <= 448 (no saturation) by this bound; the kernels'
    // tables rely on it.
    for (uint8_t code : q->scales) {
      const float sigma = decode_float_element(e4m3, code);
      QF_CHECK(std::isfinite(sigma) && sigma >= 0 && sigma <= e4m3.max_value() / 8, "w4a8 pre-packing: group scale ",
               sigma, " outside [0, ", e4m3.max_value() / 8, "]: not an int4 lut matrix formats/quantize.h made");
    }
    rows += q->rows;
  }
  const W4a8PackedLayout layout = w4a8_packed_layout(rows, cols);
  std::vector<uint8_t> blob(layout.total_bytes(), 0);
  const int64_t sc = layout.scale_cols(), stride = layout.scale_stride();
  int64_t row0 = 0;
  for (const QuantizedMatrix* q : parts) {
    parallel_for(q->rows, 64, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r)
        for (int64_t c = 0; c < cols; c += 2) {
          // two's complement -> offset binary (q + 8)
          const uint32_t lo = (q->codes[size_t(r * cols + c)] & 0xFu) ^ 0x8u;
          const uint32_t hi = (q->codes[size_t(r * cols + c + 1)] & 0xFu) ^ 0x8u;
          blob[size_t((row0 + r) * cols + c) / 2] = uint8_t(lo | (hi << 4));
        }
    });
    const float t = q->format.tensor_scale ? q->tensor_scale : 1.0f;
    for (int64_t r = 0; r < q->rows; ++r) {
      std::memcpy(&blob[layout.scale_offset() + size_t((row0 + r) * stride)], &q->scales[size_t(r * sc)], size_t(sc));
      std::memcpy(&blob[layout.row_scale_offset() + size_t(row0 + r) * 4], &t, 4);
    }
    row0 += q->rows;
  }
  return blob;
}

std::vector<uint8_t> prepack_w4a8_weights(const QuantizedMatrix& q) { return prepack_w4a8_weights({&q}); }

void unpack_w4a8_weights(const W4a8PackedLayout& layout, const uint8_t* blob, uint8_t* codes, uint8_t* scales,
                         float* row_scales) {
  for (int64_t i = 0; i < layout.n * layout.k; i += 2) {
    const uint8_t b = blob[size_t(i / 2)];
    codes[size_t(i)] = uint8_t((b & 0xFu) ^ 0x8u);
    codes[size_t(i + 1)] = uint8_t((b >> 4) ^ 0x8u);
  }
  for (int64_t r = 0; r < layout.n; ++r)
    std::memcpy(scales + r * layout.scale_cols(), blob + layout.scale_offset() + r * layout.scale_stride(),
                size_t(layout.scale_cols()));
  std::memcpy(row_scales, blob + layout.row_scale_offset(), size_t(layout.n) * sizeof(float));
}

}  // namespace qf::cuda
