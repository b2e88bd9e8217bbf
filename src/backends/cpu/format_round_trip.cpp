#include "backends/cpu/format_round_trip.h"

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "formats/convert.h"
#include "formats/quantize.h"

namespace qf::cpu {

void check_row_format(const Format& format, int64_t cols, const std::string& what) {
  QF_CHECK(format.granularity != Granularity::tensor && !format.tensor_scale, what, " format ", format.str(),
           ": scales must be per row (token), per group of a row, or absent, not shared across rows");
  if (format.granularity == Granularity::group)
    QF_CHECK(cols % format.group_size == 0, what, " format ", format.str(), ": groups of ", format.group_size,
             " do not divide rows of ", cols, " values");
}

void round_trip_rows(const float* x, int64_t rows, int64_t cols, const Format& format, float* out) {
  const int64_t n = rows * cols;
  if (!format.scaled() && format.element.kind == ElementKind::f32) {
    if (out != x) std::copy_n(x, n, out);
    return;
  }
  if (!format.scaled() && (format.element.kind == ElementKind::f16 || format.element.kind == ElementKind::bf16)) {
    std::vector<uint16_t> bits(static_cast<size_t>(n));
    if (format.element.kind == ElementKind::f16) {
      f32_to_f16(x, bits.data(), n);
      f16_to_f32(bits.data(), out, n);
    } else {
      f32_to_bf16(x, bits.data(), n);
      bf16_to_f32(bits.data(), out, n);
    }
    return;
  }
  dequantize(quantize(x, rows, cols, format), out);
}

}  // namespace qf::cpu
