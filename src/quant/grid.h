// The grid a weight matrix is rounded onto, for the weight algorithms (RTN, GPTQ): a Format
// (formats/format.h) plus, once an algorithm has chosen them, the scales of its blocks.
//
// An algorithm decides each block's range (its min/max, a clipped range, or the range of weights
// it has already updated), then rounds elements one at a time; WeightGrid stores each choice
// into the QuantizedMatrix it builds through the functions formats/quantize.h is made of
// (block_scale, quantize_element, dequantized_element). So the matrix it hands back dequantizes, with
// qf::dequantize, to exactly the values round() returned: the algorithm's idea of the quantized
// weight and the stored one cannot drift apart.
//
// Blocks are the elements sharing one scale, indexed like QuantizedMatrix's scales: scale row
// sr = row (channel, token) or 0 (tensor); scale column sc = col / G (group) or 0.
#pragma once

#include <cstdint>
#include <vector>

#include "formats/quantize.h"

namespace qf {

// A quantized weight as the algorithms return it: the storage (codes, scales, zeros) and the
// values it dequantizes to, row-major [rows, cols], equal to dequantize(q) element for element.
struct QuantizedWeight {
  QuantizedMatrix q;
  std::vector<float> dequantized;
};

class WeightGrid {
 public:
  // Throws qf::Error (from make_quantized_matrix) for a format that cannot hold the matrix (a
  // plain f32/f16/bf16 element). A group size that does not divide cols leaves a shorter last
  // group (formats/quantize.h).
  WeightGrid(const Format& format, int64_t rows, int64_t cols);

  const Format& format() const { return q_.format; }
  int64_t rows() const { return q_.rows; }
  int64_t cols() const { return q_.cols; }
  int64_t scale_rows() const { return q_.scale_rows(); }  // 0 for unscaled formats
  int64_t scale_cols() const { return q_.scale_cols(); }
  int64_t scale_row_of(int64_t row) const { return q_.format.granularity == Granularity::tensor ? 0 : row; }
  int64_t scale_col_of(int64_t col) const {
    return q_.format.granularity == Granularity::group ? col / q_.format.group_size : 0;
  }
  // The elements block (sr, sc) covers: rows [row_begin, row_end) x cols [col_begin, col_end).
  struct Extent {
    int64_t row_begin, row_end, col_begin, col_end;
  };
  Extent block_extent(int64_t scale_row, int64_t scale_col) const;

  // tensor_scale formats: fixes t from the largest raw block scale (formats' tensor_scale_for);
  // call before setting any block. Other formats ignore it.
  void set_tensor_scale_from(float max_raw_block_scale);
  float tensor_scale() const { return q_.tensor_scale; }

  // Sets block (sr, sc)'s scale from the range [lo, hi] (widened to contain 0), as formats'
  // block_scale does (saturate: see there). Thread-safe for distinct blocks.
  void set_block(int64_t scale_row, int64_t scale_col, float lo, float hi, bool saturate = false);
  void set_block(int64_t scale_row, int64_t scale_col, const BlockScale& scale);
  // The block's scale as set (unscaled formats: scale 1, zero 0).
  const BlockScale& block(int64_t scale_row, int64_t scale_col) const;
  const BlockScale& block_of(int64_t row, int64_t col) const { return block(scale_row_of(row), scale_col_of(col)); }

  // Rounds x, the weight at (row, col), onto the grid of its block: stores its code and returns
  // the value the code dequantizes to. Thread-safe for distinct elements.
  float round(int64_t row, int64_t col, float x);

  // The quantized matrix built so far (its codes are those of the elements rounded so far).
  const QuantizedMatrix& quantized() const { return q_; }
  QuantizedMatrix release() && { return std::move(q_); }

 private:
  QuantizedMatrix q_;
  std::vector<BlockScale> blocks_;  // scale_rows x scale_cols, or one {scale 1} for unscaled formats
};

// The value x rounds to in a block of scale `scale`: dequantized_element(quantize_element(x)).
inline float round_to_block(const Format& format, const BlockScale& scale, float x) {
  return dequantized_element(format, quantize_element(format, x, scale), scale);
}

}  // namespace qf
