#include "quant/grid.h"

#include <algorithm>

#include "core/error.h"

namespace qf {

WeightGrid::WeightGrid(const Format& format, int64_t rows, int64_t cols)
    : q_(make_quantized_matrix(format, rows, cols)) {
  if (format.scaled()) blocks_.resize(size_t(q_.scale_rows() * q_.scale_cols()));
  else blocks_.push_back(BlockScale{0, 1.0f, 0});
}

WeightGrid::Extent WeightGrid::block_extent(int64_t scale_row, int64_t scale_col) const {
  switch (q_.format.granularity) {
    case Granularity::none:
    case Granularity::tensor: return {0, q_.rows, 0, q_.cols};
    case Granularity::channel:
    case Granularity::token: return {scale_row, scale_row + 1, 0, q_.cols};
    case Granularity::group: {
      const int64_t g = q_.format.group_size;
      return {scale_row, scale_row + 1, scale_col * g, std::min((scale_col + 1) * g, q_.cols)};  // last may be short
    }
  }
  QF_ASSERT(false);
}

void WeightGrid::set_tensor_scale_from(float max_raw_block_scale) {
  if (q_.format.tensor_scale) q_.tensor_scale = tensor_scale_for(q_.format, max_raw_block_scale);
}

void WeightGrid::set_block(int64_t scale_row, int64_t scale_col, float lo, float hi, bool saturate) {
  set_block(scale_row, scale_col, block_scale(q_.format, lo, hi, q_.tensor_scale, saturate));
}

void WeightGrid::set_block(int64_t scale_row, int64_t scale_col, const BlockScale& scale) {
  QF_CHECK(q_.format.scaled(), "weight grid ", q_.format.str(), ": an unscaled format has no block scales to set");
  set_block_scale(q_, scale_row, scale_col, scale);
  blocks_[size_t(scale_row * q_.scale_cols() + scale_col)] = scale;
}

const BlockScale& WeightGrid::block(int64_t scale_row, int64_t scale_col) const {
  if (!q_.format.scaled()) return blocks_[0];
  return blocks_[size_t(scale_row * q_.scale_cols() + scale_col)];
}

float WeightGrid::round(int64_t row, int64_t col, float x) {
  const BlockScale& b = block_of(row, col);
  const uint32_t code = quantize_element(q_.format, x, b);
  q_.codes[size_t(row * q_.cols + col)] = uint8_t(code);
  return dequantized_element(q_.format, code, b);
}

}  // namespace qf
