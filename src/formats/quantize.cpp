#include "formats/quantize.h"

#include <algorithm>
#include <cfloat>
#include <cmath>

#include "core/error.h"
#include "core/thread_pool.h"

namespace qf {
namespace {

int64_t scale_rows_of(const Format& f, int64_t rows) {
  switch (f.granularity) {
    case Granularity::none: return 0;
    case Granularity::tensor: return 1;
    default: return rows;
  }
}

int64_t scale_cols_of(const Format& f, int64_t cols) {
  switch (f.granularity) {
    case Granularity::none: return 0;
    case Granularity::group: return (cols + f.group_size - 1) / f.group_size;  // the last group may be short
    default: return 1;
  }
}

// The elements one scale covers: rows [r0, r1) x cols [c0, c1).
struct Block {
  int64_t r0, r1, c0, c1;
};

Block block_of(const Format& f, int64_t rows, int64_t cols, int64_t scale_row, int64_t scale_col) {
  switch (f.granularity) {
    case Granularity::none: case Granularity::tensor: return {0, rows, 0, cols};
    case Granularity::channel: case Granularity::token: return {scale_row, scale_row + 1, 0, cols};
    case Granularity::group:
      return {scale_row, scale_row + 1, scale_col * f.group_size, std::min((scale_col + 1) * f.group_size, cols)};
  }
  return {};
}

int scale_bytes(const Format& f) { return f.scale_type.bits() / 8; }

void store_le(uint8_t* dst, uint32_t code, int bytes) {
  for (int i = 0; i < bytes; ++i) dst[i] = uint8_t(code >> (8 * i));
}

uint32_t load_le(const uint8_t* src, int bytes) {
  uint32_t code = 0;
  for (int i = 0; i < bytes; ++i) code |= uint32_t(src[i]) << (8 * i);
  return code;
}

// The code of the smallest value of `type` that is >= s (s > 0, finite). Codes of positive
// values are ordered like the values, so if round-to-nearest landed below s the next code up
// is the answer.
uint32_t encode_scale_rounding_up(const Format& f, float s) {
  // max_stored_scale is a power-of-two fraction of the type's largest value, so representable:
  // a scale at most that large never rounds up past it.
  QF_CHECK(!f.lut || s <= max_stored_scale(f), "quantize ", f.str(), ": scale ", s, " exceeds ", max_stored_scale(f),
           ", the largest ", f.scale_type.str(), " scale whose lookup table (q * scale for q = ",
           -(1 << (f.element.int_bits - 1)), "..", (1 << (f.element.int_bits - 1)) - 1, ") stays in ", f.scale_type.str(),
           "'s range; add :tensor_scale");
  uint32_t code = encode_float_element(f.scale_type, s);
  if (decode_float_element(f.scale_type, code) < s) ++code;
  const float stored = decode_float_element(f.scale_type, code);
  QF_CHECK(std::isfinite(stored) && stored >= s, "quantize ", f.str(), ": scale ", s, " exceeds the largest ",
           f.scale_type.str(), " (", f.scale_type.max_value(), "); add :tensor_scale or use a wider scale= type");
  return code;
}

// lut formats: x' of code q in a block of stored scale sigma and tensor scale t.
float lut_value(const Format& f, int32_t q, float sigma, float t) {
  const float entry = decode_float_element(f.scale_type, encode_float_element(f.scale_type, float(q) * sigma));
  return f.tensor_scale ? entry * t : entry;
}

// lut formats: the q in [qmin, qmax] whose x' is nearest to x (quantize.h). x' is monotone
// non-decreasing in q (rounding and the product with t > 0 are), so from the rint code the search
// only walks towards x and stops at the first code past it.
uint32_t quantize_lut_element(const Format& f, float x, const BlockScale& b) {
  const int bits = f.element.int_bits;
  const int32_t qmin = -(1 << (bits - 1)), qmax = (1 << (bits - 1)) - 1;
  const uint32_t mask = (1u << bits) - 1u;
  if (b.sigma == 0) return 0;
  int32_t best = int32_t(std::clamp(std::rint(x / b.scale), float(qmin), float(qmax)));
  const float start = lut_value(f, best, b.sigma, b.tensor_scale);
  // Differences in double: exact for any two floats a few binades apart, so ties are real ties.
  double best_err = std::fabs(double(x) - double(start));
  const int32_t step = start < x ? 1 : start > x ? -1 : 0;
  if (step != 0)
    for (int32_t q = best + step; q >= qmin && q <= qmax; q += step) {
      const float v = lut_value(f, q, b.sigma, b.tensor_scale);
      const double err = std::fabs(double(x) - double(v));
      if (err < best_err) {  // strictly: a tie keeps the code nearer the rint one
        best_err = err;
        best = q;
      }
      if (step > 0 ? v >= x : v <= x) break;  // past x: every further code is farther
    }
  return uint32_t(best) & mask;
}

// Range statistics of one block.
struct BlockStats {
  float lo = 0, hi = 0;  // min and max, both widened to include 0
};

BlockStats block_stats(const float* x, int64_t cols, Block b, const Format& f) {
  BlockStats st;
  for (int64_t r = b.r0; r < b.r1; ++r)
    for (int64_t c = b.c0; c < b.c1; ++c) {
      const float v = x[r * cols + c];
      QF_CHECK(std::isfinite(v), "quantize ", f.str(), ": element (", r, ", ", c, ") is ", v, "; only finite values can be quantized");
      st.lo = std::min(st.lo, v);
      st.hi = std::max(st.hi, v);
    }
  return st;
}

// s before storage, from the block's range (see quantize.h).
float raw_scale(const Format& f, BlockStats st) {
  const ElementType& e = f.element;
  if (e.is_int()) {
    if (f.asymmetric) return (st.hi - st.lo) / float((1 << e.int_bits) - 1);
    return std::max(-st.lo, st.hi) / float((1 << (e.int_bits - 1)) - 1);
  }
  return std::max(-st.lo, st.hi) / e.max_value();
}

}  // namespace

int64_t QuantizedMatrix::scale_rows() const { return scale_rows_of(format, rows); }
int64_t QuantizedMatrix::scale_cols() const { return scale_cols_of(format, cols); }

BlockScale QuantizedMatrix::block_of(int64_t row, int64_t col) const {
  if (!format.scaled()) return BlockScale{0, 1.0f, 0};
  const int64_t sr = format.granularity == Granularity::tensor ? 0 : row;
  const int64_t sc = format.granularity == Granularity::group ? col / format.group_size : 0;
  const int64_t i = sr * scale_cols() + sc;
  const int bytes = scale_bytes(format);
  BlockScale b;
  b.code = load_le(&scales[size_t(i * bytes)], bytes);
  b.sigma = decode_float_element(format.scale_type, b.code);
  b.tensor_scale = format.tensor_scale ? tensor_scale : 1.0f;
  b.scale = format.tensor_scale ? b.sigma * tensor_scale : b.sigma;
  if (format.asymmetric) b.zero = zeros[size_t(i)];
  return b;
}

float QuantizedMatrix::scale_of(int64_t row, int64_t col) const { return block_of(row, col).scale; }

float QuantizedMatrix::value(int64_t row, int64_t col) const {
  return dequantized_element(format, codes[size_t(row * cols + col)], block_of(row, col));
}

float QuantizedMatrix::code_value(int64_t row, int64_t col) const {
  const uint8_t code = codes[size_t(row * cols + col)];
  if (!format.asymmetric) return element_value(format, code, 0);
  const int64_t sr = format.granularity == Granularity::tensor ? 0 : row;
  const int64_t sc = format.granularity == Granularity::group ? col / format.group_size : 0;
  return element_value(format, code, zeros[size_t(sr * scale_cols() + sc)]);
}

QuantizedMatrix make_quantized_matrix(const Format& format, int64_t rows, int64_t cols) {
  format.validate();
  const std::string name = format.str();
  const ElementType& e = format.element;
  QF_CHECK(e.is_int() || e.bits() <= 8, "quantize ", name, ": ", e.str(), " is stored as is; use formats/convert.h");
  QF_CHECK(rows >= 0 && cols >= 0, "quantize ", name, ": negative shape [", rows, ", ", cols, "]");
  QuantizedMatrix q;
  q.format = format;
  q.rows = rows;
  q.cols = cols;
  q.codes.resize(size_t(rows * cols));
  const int64_t nscales = q.scale_rows() * q.scale_cols();
  q.scales.resize(size_t(nscales * scale_bytes(format)));
  if (format.asymmetric) q.zeros.resize(size_t(nscales));
  return q;
}

float raw_block_scale(const Format& format, float lo, float hi) {
  return raw_scale(format, BlockStats{std::min(lo, 0.0f), std::max(hi, 0.0f)});
}

float max_stored_scale(const Format& format) {
  const float type_max = format.scale_type.max_value();
  // 2^(B-1) = |qmin|, the largest |q| in the table: |q * sigma| <= type_max exactly.
  return format.lut ? std::ldexp(type_max, -(format.element.int_bits - 1)) : type_max;
}

float tensor_scale_for(const Format& format, float max_raw_scale) {
  const float type_max = max_stored_scale(format);
  float t = max_raw_scale > 0 ? std::max(max_raw_scale / type_max, FLT_MIN) : 1.0f;
  while (max_raw_scale / t > type_max) t = std::nextafter(t, FLT_MAX);
  return t;
}

BlockScale block_scale(const Format& format, float lo, float hi, float tensor_scale, bool saturate) {
  QF_CHECK(format.scaled(), "block_scale: format ", format.str(), " has no scales");
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  BlockScale b;
  const float s = raw_scale(format, BlockStats{lo, hi});
  if (s == 0) return b;  // an all-zero block (code 0 of every scale type is +0)
  float target = format.tensor_scale ? s / tensor_scale : s;
  if (saturate) target = std::min(target, max_stored_scale(format));
  b.code = encode_scale_rounding_up(format, target);
  const float stored = decode_float_element(format.scale_type, b.code);
  b.sigma = stored;
  if (format.tensor_scale) b.tensor_scale = tensor_scale;
  b.scale = format.tensor_scale ? stored * tensor_scale : stored;
  if (format.asymmetric) {
    const float zmax = float((1 << format.element.int_bits) - 1);
    b.zero = uint8_t(std::clamp(std::rint(-lo / b.scale), 0.0f, zmax));
  }
  return b;
}

void set_block_scale(QuantizedMatrix& q, int64_t scale_row, int64_t scale_col, const BlockScale& s) {
  QF_ASSERT(scale_row >= 0 && scale_row < q.scale_rows() && scale_col >= 0 && scale_col < q.scale_cols());
  const int64_t i = scale_row * q.scale_cols() + scale_col;
  const int bytes = scale_bytes(q.format);
  store_le(&q.scales[size_t(i * bytes)], s.code, bytes);
  if (q.format.asymmetric) q.zeros[size_t(i)] = s.zero;
}

uint32_t quantize_element(const Format& format, float x, const BlockScale& block) {
  if (format.lut) return quantize_lut_element(format, x, block);
  return quantize_element(format, x, block.scale, block.zero);
}

uint32_t quantize_element(const Format& format, float x, float scale, uint8_t zero) {
  QF_CHECK(!format.lut, "quantize_element: ", format.str(), " is a lut format; pass the block's BlockScale (sigma and t)");
  const ElementType& e = format.element;
  if (!e.is_int()) return encode_float_element(e, scale != 0 ? x / scale : 0.0f);
  if (scale == 0) return 0;
  const float rounded = std::rint(x / scale);
  if (format.asymmetric) return uint32_t(std::clamp(rounded + float(zero), 0.0f, float((1 << e.int_bits) - 1)));
  const float qmin = -float(1 << (e.int_bits - 1)), qmax = float((1 << (e.int_bits - 1)) - 1);
  return uint32_t(int32_t(std::clamp(rounded, qmin, qmax))) & ((1u << e.int_bits) - 1u);
}

float dequantized_element(const Format& format, uint32_t code, const BlockScale& block) {
  if (format.lut) return lut_value(format, sign_extend(code, format.element.int_bits), block.sigma, block.tensor_scale);
  return element_value(format, code, block.zero) * block.scale;
}

uint32_t lut_entry(const Format& format, uint32_t code, float sigma) {
  QF_CHECK(format.lut, "lut_entry: ", format.str(), " is not a lut format");
  return encode_float_element(format.scale_type, float(sign_extend(code, format.element.int_bits)) * sigma);
}

float element_value(const Format& format, uint32_t code, uint8_t zero) {
  const ElementType& e = format.element;
  if (!e.is_int()) return decode_float_element(e, code);
  if (!format.asymmetric) return float(sign_extend(code, e.int_bits));
  return float(int(code) - int(zero));
}

QuantizedMatrix quantize(const float* x, int64_t rows, int64_t cols, const Format& format) {
  QuantizedMatrix q = make_quantized_matrix(format, rows, cols);
  const int64_t srows = q.scale_rows(), scols = q.scale_cols(), nscales = srows * scols;

  // Pass 1: each block's range and raw scale.
  std::vector<BlockStats> stats(size_t(std::max<int64_t>(nscales, 1)));
  std::vector<float> raw(stats.size(), 1.0f);
  parallel_for(std::max<int64_t>(srows, 1), 1, [&](int64_t begin, int64_t end) {
    for (int64_t sr = begin; sr < end; ++sr)
      for (int64_t sc = 0; sc < std::max<int64_t>(scols, 1); ++sc) {
        const size_t i = size_t(sr * scols + sc);
        stats[i] = block_stats(x, cols, block_of(format, rows, cols, sr, sc), format);
        if (format.scaled()) raw[i] = raw_scale(format, stats[i]);
      }
  });

  // The per-tensor scale t: the largest raw scale maps onto the scale type's largest value.
  if (format.tensor_scale) q.tensor_scale = tensor_scale_for(format, *std::max_element(raw.begin(), raw.end()));

  // Store each scale rounded up, and the zero points.
  std::vector<BlockScale> blocks(static_cast<size_t>(nscales));
  for (int64_t i = 0; i < nscales; ++i) {
    blocks[size_t(i)] = block_scale(format, stats[size_t(i)].lo, stats[size_t(i)].hi, q.tensor_scale);
    set_block_scale(q, i / scols, i % scols, blocks[size_t(i)]);
  }

  // Pass 2: codes, one row at a time.
  parallel_for(rows, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t sr = format.granularity == Granularity::tensor ? 0 : r;
        const int64_t sc = format.granularity == Granularity::group ? c / format.group_size : 0;
        const BlockScale b = format.scaled() ? blocks[size_t(sr * scols + sc)] : BlockScale{0, 1.0f, 0};
        q.codes[size_t(r * cols + c)] = uint8_t(quantize_element(format, x[r * cols + c], b));
      }
  });
  return q;
}

void dequantize(const QuantizedMatrix& q, float* out) {
  parallel_for(q.rows, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      for (int64_t c = 0; c < q.cols; ++c) out[r * q.cols + c] = q.value(r, c);
  });
}

}  // namespace qf
