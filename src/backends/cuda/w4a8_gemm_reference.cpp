// The CPU twin of the w4a8 kernels (w4a8_gemm.h): host code only, so that it builds and is
// testable without the GPU.
#include <cmath>
#include <vector>

#include "backends/cuda/w4a8_gemm.h"
#include "backends/cuda/weight_prepack.h"
#include "core/error.h"
#include "formats/format.h"

namespace qf::cuda {

void w4a8_linear_reference(const QuantizedMatrix& w, const uint8_t* x_codes, const float* x_scale, int64_t m, float* y,
                           float* abs_sum) {
  const Format& f = w.format;
  QF_CHECK(is_w4a8_weight_format(f), "w4a8_linear_reference: format ", f.str(), " is not int4:g128:scale=fp8_e4m3:lut");
  const ElementType e4m3 = ElementType::of(ElementKind::fp8_e4m3);
  const int64_t n = w.rows, k = w.cols, sc = w.scale_cols();
  const double t = f.tensor_scale ? double(w.tensor_scale) : 1.0;
  // The FP8 weight values, from the codec (independent of the kernel's half2 arithmetic).
  std::vector<float> lut(size_t(n * k));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) {
      const float sigma = decode_float_element(e4m3, w.scales[size_t(r * sc + c / kW4a8GroupSize)]);
      const float q = float(sign_extend(w.codes[size_t(r * k + c)], 4));
      lut[size_t(r * k + c)] = decode_float_element(e4m3, encode_float_element(e4m3, q * sigma));
    }
  std::vector<float> xv(static_cast<size_t>(k));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t c = 0; c < k; ++c) xv[size_t(c)] = decode_float_element(e4m3, x_codes[size_t(i * k + c)]);
    for (int64_t r = 0; r < n; ++r) {
      double acc = 0, mag = 0;
      for (int64_t c = 0; c < k; ++c) {
        const double p = double(xv[size_t(c)]) * double(lut[size_t(r * k + c)]);
        acc += p;
        mag += std::fabs(p);
      }
      const double scale = double(x_scale[i]) * t;
      y[size_t(i * n + r)] = float(acc * scale);
      if (abs_sum) abs_sum[size_t(i * n + r)] = float(mag * std::fabs(scale));
    }
  }
}

}  // namespace qf::cuda
