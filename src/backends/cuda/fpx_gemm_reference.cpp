// The CPU twin of fpx_gemm (fpx_gemm.h). Host only: runs and is tested without a GPU.
#include <cmath>
#include <vector>

#include "backends/cuda/fpx_gemm.h"
#include "core/error.h"
#include "core/thread_pool.h"

namespace qf::cuda {

void fpx_linear_reference(const QuantizedMatrix& w, const float* x, int64_t m, float* y, float* abs_sum) {
  const Format& f = w.format;
  QF_CHECK(f.element.kind == ElementKind::fpx && (f.granularity == Granularity::channel || f.granularity == Granularity::tensor),
           "fpx_linear_reference: weights are ", f.str(), ", not an FPx format with channel or tensor scales");
  QF_CHECK(m >= 0 && w.codes.size() == size_t(w.rows * w.cols), "fpx_linear_reference: ", w.codes.size(),
           " codes for [", w.rows, ", ", w.cols, "], M=", m);
  const int64_t n = w.rows, k = w.cols;
  // decode(code) for every code through the spec's own element_value.
  std::vector<double> value(size_t(1) << f.element.bits());
  for (size_t c = 0; c < value.size(); ++c) value[c] = element_value(f, uint32_t(c), 0);
  // x transposed to [K, m], so that the inner loop over the m rows is contiguous.
  std::vector<double> xt(size_t(k * m));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t c = 0; c < k; ++c) xt[size_t(c * m + i)] = x[i * k + c];
  parallel_for(n, 16, [&](int64_t begin, int64_t end) {
    std::vector<double> sum(static_cast<size_t>(m)), mag(static_cast<size_t>(m));
    for (int64_t row = begin; row < end; ++row) {
      std::fill(sum.begin(), sum.end(), 0.0);
      std::fill(mag.begin(), mag.end(), 0.0);
      const uint8_t* codes = &w.codes[size_t(row * k)];
      for (int64_t c = 0; c < k; ++c) {
        const double wv = value[codes[c]];
        if (wv == 0) continue;
        const double* xc = &xt[size_t(c * m)];
        for (int64_t i = 0; i < m; ++i) {
          const double p = wv * xc[i];
          sum[size_t(i)] += p;
          mag[size_t(i)] += std::fabs(p);
        }
      }
      const double s = w.scale_of(row, 0);
      for (int64_t i = 0; i < m; ++i) {
        y[i * n + row] = float(s * sum[size_t(i)]);
        if (abs_sum) abs_sum[i * n + row] = float(std::fabs(s) * mag[size_t(i)]);
      }
    }
  });
}

}  // namespace qf::cuda
